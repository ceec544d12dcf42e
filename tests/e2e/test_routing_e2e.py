"""A route through the local stack with the official Python SDK: the registry document's route reaches the function
(MODEL_REGISTRY), the fake OpenAI server on loopback fails what the prompt asks, and the local model behind it serves;
the x-imagegen-model header names it, and GET /v1/models lists the route with its models."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from devtools.local import LocalStack
from tests.e2e.conftest import own_stack
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.e2e

REGISTRY = {"models": ["local", "gpt-image-1-mini", {"id": "fast", "route": ["gpt-image-1-mini", "local"]}], "default_model": "fast"}


@pytest.fixture(scope="module")
def route_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def route_stack(tmp_path_factory: pytest.TempPathFactory, route_openai: FakeOpenAI) -> Iterator[LocalStack]:
    stack = own_stack(
        tmp_path_factory,
        "route-stack",
        workers=1,
        extra_env={"OPENAI_BASE_URL": route_openai.base_url, "OPENAI_API_KEY": "sk-fake-route-e2e", "MODEL_REGISTRY": json.dumps(REGISTRY)},
        async_jobs=False,
        stream_api=False,
    )
    with stack:
        yield stack


@pytest.fixture(scope="module")
def client(route_stack: LocalStack) -> OpenAI:
    return OpenAI(
        base_url=f"{route_stack.base_url}/v1", api_key="unused-locally", max_retries=0, timeout=60, _strict_response_validation=True
    )


def test_a_failing_first_model_is_served_by_the_next_through_the_sdk(client, route_openai) -> None:
    route_openai.requests.clear()
    raw = client.images.with_raw_response.generate(model="fast", prompt="fail:503", size="1024x1024", response_format="b64_json")
    assert raw.headers["x-imagegen-model"] == "local"
    (image,) = raw.parse().data
    assert image.b64_json and len(route_openai.requests) >= 1


def test_the_first_model_serves_when_it_can(client, route_openai) -> None:
    route_openai.requests.clear()
    raw = client.images.with_raw_response.generate(model="fast", prompt="a red fox", size="1024x1024")
    assert raw.headers["x-imagegen-model"] == "gpt-image-1-mini"
    assert [sent["json"]["model"] for sent in route_openai.requests] == ["gpt-image-1-mini"]


def test_a_content_policy_refusal_is_the_sdks_bad_request(client, route_openai) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="fast", prompt="fail:moderation", size="1024x1024")
    assert raised.value.code == "moderation_blocked"


def test_the_route_is_listed_with_its_models(client) -> None:
    listed = {model.id: model for model in client.models.list()}
    assert listed["fast"].owned_by == "route"
    assert listed["fast"].model_extra is not None and listed["fast"].model_extra["route"] == ["gpt-image-1-mini", "local"]
