"""The OpenAI provider over real HTTP against a fake OpenAI server on loopback, through the API handler."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.request

import pytest
from PIL import Image as PILImage

from functions.api import app
from tests.conftest import load_event

pytestmark = pytest.mark.integration


def invoke(lambda_context, **body):
    response = app.lambda_handler(load_event("api_generate_b64.json", **body), lambda_context)
    return response["statusCode"], json.loads(response["body"]), response


def test_success_sends_the_key_and_only_what_is_set(openai_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="a fox", model="gpt-image-2.5-sunburst", size="1024x1024", response_format=None)
    assert status == 200, body
    (item,) = body["data"]
    assert PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (1024, 1024)
    (sent,) = openai_env.requests
    assert sent["headers"]["Authorization"] == "Bearer sk-test-integration-key"
    # GPT image models always answer base64 and refuse response_format, so it is not sent.
    assert sent["json"] == {"model": "gpt-image-2.5-sunburst", "prompt": "a fox", "n": 1, "size": "1024x1024", "output_format": "png"}


@pytest.mark.parametrize(
    ("model", "retired_on"),
    [("dall-e-2", "2026-05-12"), ("dall-e-3", "2026-05-12"), ("gpt-image-1", "2026-10-23")],
)
def test_a_retired_model_is_a_404_naming_the_date_and_successor_and_never_reaches_openai(
    openai_env, local_s3, s3, lambda_context, model, retired_on
) -> None:
    """openai-python's types/image_model.py: DALL-E 2 and 3 were retired on 2026-05-12, GPT Image 1 shut down on
    2026-10-23; OpenAI answers them no more, so they are refused here before any request (or bill) is made."""
    event = load_event("api_generate_b64.json", prompt="a fox", model=model, size="1024x1024")
    response = app.lambda_handler(event, lambda_context)
    status, body = response["statusCode"], json.loads(response["body"])
    assert status == 404, body
    error = body["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_retired")
    assert retired_on in error["message"] and "'gpt-image-2.5-sunburst'" in error["message"]
    assert openai_env.requests == []
    stored = s3.list_objects_v2(Bucket=local_s3.bucket, Prefix="images/").get("Contents", [])
    assert [item["Key"] for item in stored if event["requestContext"]["requestId"] in item["Key"]] == []


def test_gpt_image_passes_usage_through(openai_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, model="gpt-image-1.5", size="1024x1024", response_format=None, n=1)
    assert status == 200, body
    assert len(body["data"]) == 1 and body["data"][0]["b64_json"] and body["usage"]["total_tokens"] == 110
    assert "response_format" not in openai_env.requests[0]["json"]


def test_gpt_image_models_answer_urls_too(openai_env, lambda_context) -> None:
    """OpenAI refuses response_format for GPT image models; every image is in S3 here, so a URL is always served."""
    status, body, _ = invoke(lambda_context, model="gpt-image-1.5", size="1536x1024", response_format="url", n=2)
    assert status == 200, body
    assert [set(item) for item in body["data"]] == [{"url"}, {"url"}] and body["usage"]["total_tokens"] == 110
    with urllib.request.urlopen(body["data"][0]["url"]) as fetched:
        assert PILImage.open(io.BytesIO(fetched.read())).size == (1536, 1024)
    (sent,) = openai_env.requests
    assert "response_format" not in sent["json"]  # OpenAI would refuse it: the provider is asked for base64 as always


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "gpt-image-1.5", "size": "1536x1024"},  # b64_json by default: RGBA noise in PNG is 6 MB, 8 MB in base64
        {"model": "gpt-image-1.5", "size": "auto"},  # "auto" may pick 1536x1024
        {"model": "gpt-image-1.5", "size": "1024x1024", "n": 2},
        {"model": "gpt-image-2", "size": "2048x1152"},
    ],
)
def test_an_answer_that_could_not_fit_is_refused_before_the_provider_is_called(openai_env, lambda_context, fields) -> None:
    """Lambda answers at most 6 MB: a b64_json request whose worst case cannot fit is a 413 with nothing billed,
    nothing stored, and the advice to ask for URLs."""
    event = load_event("api_generate_b64.json", prompt="a fox", response_format=None, **fields)
    response = app.lambda_handler(event, lambda_context)
    status, body = response["statusCode"], json.loads(response["body"])
    assert status == 413, body
    assert (body["error"]["type"], body["error"]["param"], body["error"]["code"]) == (
        "invalid_request_error",
        "response_format",
        "response_too_large",
    )
    assert "'url'" in body["error"]["message"] and "6 MB" in body["error"]["message"]
    assert openai_env.requests == []


@pytest.mark.parametrize(
    ("prompt", "status", "code", "param"),
    [
        ("fail:400", 400, "invalid_value", "size"),
        ("fail:401", 502, "provider_auth_failed", None),
        ("fail:403", 502, "provider_auth_failed", None),
        ("fail:404", 502, "provider_model_unavailable", None),
        ("fail:quota", 502, "provider_quota_exceeded", None),
        ("fail:429", 429, "rate_limit_exceeded", None),
        ("fail:500", 502, "provider_error", None),
        # OpenAI's status for a safety refusal, so the SDKs raise BadRequestError.
        ("fail:policy", 400, "content_policy_violation", "prompt"),
        ("fail:moderation", 400, "moderation_blocked", "prompt"),
        ("fail:malformed", 502, "provider_bad_response", None),
    ],
)
def test_provider_failures_map_to_our_status_table(openai_env, lambda_context, prompt, status, code, param) -> None:
    got, body, response = invoke(lambda_context, prompt=prompt, model="gpt-image-1-mini", size="1024x1024")
    assert got == status, body
    assert (body["error"]["code"], body["error"]["param"]) == (code, param)
    assert "sk-" not in json.dumps(body)
    if status == 429:
        assert response["multiValueHeaders"]["Retry-After"] == ["1"]
    # Only what no retry can fix tells the client not to retry (the OpenAI SDKs honour x-should-retry).
    no_retry = code in ("provider_auth_failed", "provider_model_unavailable", "provider_quota_exceeded")
    assert (response["multiValueHeaders"].get("x-should-retry") == ["false"]) is no_retry


def test_timeout_is_504_within_the_deadline(openai_env, lambda_context) -> None:
    lambda_context.remaining_millis = 4000  # minus the 2.5 s margin: 1.5 s for the provider
    started = time.monotonic()
    status, body, _ = invoke(lambda_context, prompt="fail:slow", model="gpt-image-1-mini", size="1024x1024")
    elapsed = time.monotonic() - started
    assert status == 504 and body["error"]["code"] == "provider_timeout"
    assert elapsed < 3.0


def test_unreachable_provider_is_502(local_s3, monkeypatch, lambda_context) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    status, body, _ = invoke(lambda_context, model="gpt-image-1-mini", size="1024x1024")
    assert status == 502 and body["error"]["code"] == "provider_unreachable"


def requests_with(fake, prompt: str) -> int:
    return sum(1 for request in fake.requests if request["json"]["prompt"] == prompt)


def test_transient_failure_is_retried_within_the_deadline(openai_env, lambda_context) -> None:
    prompt = f"flaky:1:{time.time_ns()}"
    status, body, _ = invoke(lambda_context, prompt=prompt, model="gpt-image-1-mini", size="1024x1024")
    assert status == 200, body
    assert requests_with(openai_env, prompt) == 2


def test_persistent_5xx_gives_up_after_two_retries(openai_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="fail:500", model="gpt-image-1-mini", size="1024x1024")
    assert status == 502
    assert requests_with(openai_env, "fail:500") == 3


@pytest.mark.parametrize("prompt", ["fail:400", "fail:401", "fail:403", "fail:404", "fail:quota", "fail:policy", "fail:malformed"])
def test_permanent_failures_are_not_retried(openai_env, lambda_context, prompt) -> None:
    invoke(lambda_context, prompt=prompt, model="gpt-image-1-mini", size="1024x1024")
    assert requests_with(openai_env, prompt) == 1


def test_429_without_time_to_wait_is_answered_at_once_with_retry_after(openai_env, lambda_context) -> None:
    lambda_context.remaining_millis = 3500  # 1 s left after the margin: no room for Retry-After 1 s + an attempt
    started = time.monotonic()
    status, _, response = invoke(lambda_context, prompt="fail:429", model="gpt-image-1-mini", size="1024x1024")
    assert (status, response["multiValueHeaders"]["Retry-After"]) == (429, ["1"])
    assert requests_with(openai_env, "fail:429") == 1 and time.monotonic() - started < 1.0
