"""Idempotency-Key against DynamoDB (moto server), S3 (SeaweedFS) and the fake OpenAI server: a retry is answered
with the first request's images, never generated (or billed) twice."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest

from functions.api import app
from imagegen.http import SERVED_BY_HEADER
from tests.conftest import load_event

pytestmark = pytest.mark.integration


@pytest.fixture
def env(job_resources, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-idempotency")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    return fake_openai


def call(lambda_context, key: str | None, authorization: str | None = None, user_arn: str | None = None, **body):
    event = load_event("api_generate_url.json", **{"model": "gpt-image-1-mini", "size": "1024x1024", "n": 1, "user": None, **body})
    for name, value in (("Idempotency-Key", key), ("Authorization", authorization)):
        if value is not None:
            event["headers"][name] = value
            event["multiValueHeaders"][name] = [value]
    # AuthMode IAM: API Gateway names the principal it verified the signature of
    event["requestContext"]["identity"]["userArn"] = user_arn
    response = app.lambda_handler(event, lambda_context)
    headers = {name: values[0] for name, values in response.get("multiValueHeaders", {}).items()}
    return response["statusCode"], json.loads(response["body"]), headers


def provider_calls(fake, prompt: str) -> int:
    return sum(1 for request in fake.requests if request["json"]["prompt"] == prompt)


def object_path(url: str) -> str:
    return httpx.URL(url).path


def test_a_retry_gets_the_same_images_without_a_second_generation(env, lambda_context) -> None:
    key, prompt = str(uuid.uuid4()), f"idem {uuid.uuid4()}"
    first = call(lambda_context, key, prompt=prompt, n=2)
    again = call(lambda_context, key, prompt=prompt, n=2)
    assert first[0] == again[0] == 200
    assert (first[2]["Idempotent-Replayed"], again[2]["Idempotent-Replayed"]) == ("false", "true")
    assert [object_path(i["url"]) for i in first[1]["data"]] == [object_path(i["url"]) for i in again[1]["data"]]
    assert first[1]["created"] == again[1]["created"]
    assert provider_calls(env, prompt) == 1
    assert httpx.get(again[1]["data"][1]["url"], timeout=10).status_code == 200


def test_a_replay_of_a_route_names_the_member_that_made_the_images(env, lambda_context, monkeypatch) -> None:
    registry = {"models": ["local", "gpt-image-1-mini", {"id": "fast", "route": ["gpt-image-1-mini", "local"]}], "default_model": "local"}
    monkeypatch.setenv("MODEL_REGISTRY", json.dumps(registry))
    key = str(uuid.uuid4())
    # The route's first model fails (the fake OpenAI's 500), local makes the images; the retry is answered from the
    # record, naming local all the same
    answers = [call(lambda_context, key, prompt="fail:500", model="fast") for _ in range(2)]
    assert [(status, headers["Idempotent-Replayed"]) for status, _, headers in answers] == [(200, "false"), (200, "true")]
    assert [headers.get(SERVED_BY_HEADER) for _, _, headers in answers] == ["local", "local"]
    assert provider_calls(env, "fail:500") == 1


def test_both_spellings_of_the_same_body_are_the_same_request(env, lambda_context) -> None:
    key, prompt = str(uuid.uuid4()), f"idem {uuid.uuid4()}"
    assert call(lambda_context, key, prompt=prompt, responseFormat="b64_json")[0] == 200
    status, body, headers = call(lambda_context, key, prompt=prompt, response_format="b64_json", responseFormat=None)
    assert (status, headers["Idempotent-Replayed"]) == (200, "true")
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(b"\x89PNG")
    assert provider_calls(env, prompt) == 1


def test_the_same_key_with_another_body_is_refused(env, lambda_context) -> None:
    key = str(uuid.uuid4())
    assert call(lambda_context, key, prompt=f"idem {uuid.uuid4()}")[0] == 200
    status, body, _ = call(lambda_context, key, prompt="something else entirely")
    assert status == 422
    assert (body["error"]["code"], body["error"]["param"]) == ("idempotency_key_reused", "Idempotency-Key")


def test_keys_are_scoped_to_the_callers_api_key(env, lambda_context) -> None:
    key, prompt = str(uuid.uuid4()), f"idem {uuid.uuid4()}"
    assert call(lambda_context, key, "Bearer client-a-0123456789abcdefghij", prompt=prompt)[0] == 200
    status, _, headers = call(lambda_context, key, "Bearer client-b-0123456789abcdefghij", prompt=prompt)
    assert (status, headers["Idempotent-Replayed"]) == (200, "false")
    assert provider_calls(env, prompt) == 2


def test_keys_are_scoped_to_the_iam_principal_whatever_its_signature(env, lambda_context) -> None:
    # Given one principal retrying, each request signed afresh (its Authorization header differs every time)
    key, prompt = str(uuid.uuid4()), f"idem {uuid.uuid4()}"
    principal = "arn:aws:sts::123456789012:assumed-role/image-client/orders-service"
    first = call(lambda_context, key, "AWS4-HMAC-SHA256 Credential=AKIA1/x, Signature=aa", principal, prompt=prompt)
    again = call(lambda_context, key, "AWS4-HMAC-SHA256 Credential=AKIA1/x, Signature=bb", principal, prompt=prompt)
    # Then the retry is a replay
    assert (first[0], again[0], again[2]["Idempotent-Replayed"]) == (200, 200, "true")
    # And another session of the same role (another person behind a shared role) gets its own generation
    other = call(lambda_context, key, None, "arn:aws:sts::123456789012:assumed-role/image-client/someone-else", prompt=prompt)
    assert (other[0], other[2]["Idempotent-Replayed"]) == (200, "false")
    assert provider_calls(env, prompt) == 2


def test_a_failed_attempt_is_not_remembered(env, lambda_context) -> None:
    key, prompt = str(uuid.uuid4()), f"flaky:1:{uuid.uuid4()}"
    assert call(lambda_context, key, prompt=prompt)[0] == 502
    status, _, headers = call(lambda_context, key, prompt=prompt)
    assert (status, headers["Idempotent-Replayed"]) == (200, "false")


def test_invalid_keys_and_unconfigured_deployments_say_so(env, lambda_context, monkeypatch) -> None:
    status, body, _ = call(lambda_context, "x" * 300, prompt="a fox")
    assert (status, body["error"]["param"]) == (400, "Idempotency-Key")
    monkeypatch.delenv("IDEMPOTENCY_TABLE")
    from tests.conftest import clear_caches

    clear_caches()
    status, body, _ = call(lambda_context, str(uuid.uuid4()), prompt="a fox")
    assert status == 400 and "not supported" in body["error"]["message"]
