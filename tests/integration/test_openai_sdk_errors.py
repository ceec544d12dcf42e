"""The official openai SDK against this API (the local API Gateway front on loopback, the handler in-process, the
fake OpenAI behind it): which exception the SDK raises for our answers, and whether it retries them. The SDK's
``_should_retry`` obeys ``x-should-retry`` before it looks at the status, so a failure no retry can fix must say
``false``, and one that a retry may cure must not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from devtools.front import ApiGatewayFront
from devtools.rie import Invocation
from functions.api import app

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, client: openai.OpenAI) -> None:
        self.client = client
        self.invocations = 0


@pytest.fixture
def api(openai_env, lambda_context, monkeypatch) -> Iterator[Api]:
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")  # count the SDK's retries, not ours

    def invoke(event: bytes, timeout: float) -> Invocation:
        api.invocations += 1
        return Invocation(200, json.dumps(app.lambda_handler(json.loads(event), lambda_context)).encode())

    with ApiGatewayFront(invoke, port=0) as front:
        api = Api(openai.OpenAI(base_url=f"{front.base_url}/v1", api_key="sk-client-key", max_retries=2))
        yield api


def generate(api: Api, **options: Any):
    return api.client.images.generate(**{"model": "gpt-image-1-mini", "size": "1024x1024", **options})


@pytest.mark.parametrize("prompt", ["fail:policy", "fail:moderation"])
def test_a_safety_refusal_is_a_bad_request_error(api: Api, openai_env, prompt: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        generate(api, prompt=prompt)
    assert caught.value.status_code == 400 and caught.value.param == "prompt"
    assert api.invocations == 1 and len(openai_env.requests) == 1


@pytest.mark.parametrize("prompt", ["fail:401", "fail:403", "fail:404", "fail:quota"])
def test_what_no_retry_can_fix_is_not_retried_by_the_sdk(api: Api, openai_env, prompt: str) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        generate(api, prompt=prompt)
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert api.invocations == 1 and len(openai_env.requests) == 1


def test_a_transient_failure_is_still_retried_by_the_sdk(api: Api, openai_env) -> None:
    with pytest.raises(openai.InternalServerError):
        generate(api, prompt="fail:500")
    assert api.invocations == 3 and len(openai_env.requests) == 3  # max_retries=2


def test_a_b64_answer_that_could_not_fit_is_refused_before_the_provider_bills(api: Api, openai_env) -> None:
    """What SDK users of GPT image models send by default: b64_json. 1536x1024 PNG could reach 8 MB in base64."""
    with pytest.raises(openai.APIStatusError) as caught:
        api.client.images.generate(model="gpt-image-1.5", prompt="a fox", size="1536x1024")
    assert caught.value.status_code == 413
    assert "'url'" in caught.value.message
    assert api.invocations == 1 and openai_env.requests == []
    answer = api.client.images.generate(model="gpt-image-1.5", prompt="a fox", size="1536x1024", response_format="url")
    assert answer.data is not None and answer.data[0].url and answer.data[0].b64_json is None
    assert len(openai_env.requests) == 1
