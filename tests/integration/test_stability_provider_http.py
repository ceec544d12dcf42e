"""The Stability AI provider over real HTTP against a fake Stability platform API on loopback, through the API
handler: what is sent, what is stored and answered, and each of Stability's error bodies as our OpenAI-shaped error."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image as PILImage

from functions.api import app
from tests.conftest import load_event
from tests.fakes.stability_server import API_KEY, ERRORS, FakeStability

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake_stability() -> Iterator[FakeStability]:
    with FakeStability() as fake:
        yield fake


@pytest.fixture
def stability_env(local_s3: Any, fake_stability: FakeStability, monkeypatch: pytest.MonkeyPatch) -> FakeStability:
    """Stability's models served from the fake (the registry serves them only with a key), its request log emptied;
    tests/conftest.py's autouse fixture clears the cached settings, registry and providers around each test."""
    monkeypatch.setenv("STABILITY_API_KEY", API_KEY)
    monkeypatch.setenv("STABILITY_BASE_URL", fake_stability.base_url)
    monkeypatch.delenv("STABILITY_API_KEY_SECRET_ARN", raising=False)
    fake_stability.reset()
    return fake_stability


def invoke(lambda_context: Any, **body: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
    response = app.lambda_handler(load_event("api_generate_b64.json", **body), lambda_context)
    return response["statusCode"], json.loads(response["body"]), response


def decoded(item: dict[str, Any]) -> PILImage.Image:
    return PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"])))


def stored_keys(s3: Any, bucket: str, request_id: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents", [])
    return [item["Key"] for item in listed if request_id in item["Key"]]


def test_ultra_sends_the_key_the_ratio_and_the_format_as_multipart(stability_env, lambda_context) -> None:
    status, body, response = invoke(
        lambda_context, prompt="a fox", model="stable-image-ultra", size="1280x720", response_format="b64_json", n=1
    )
    assert status == 200, body
    (item,) = body["data"]
    picture = decoded(item)
    assert (picture.format, picture.size) == ("PNG", (1344, 768))  # Stability draws 16:9 at its own ~1 MP
    (sent,) = stability_env.requests
    assert sent["path"] == "/v2beta/stable-image/generate/ultra"
    assert sent["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert sent["headers"]["accept"] == "application/json"
    assert sent["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert sent["files"] == []  # text parts only: no dummy file part
    assert sent["fields"] == {"prompt": "a fox", "aspect_ratio": "16:9", "output_format": "png"}
    assert response["multiValueHeaders"]["x-imagegen-model"] == ["stable-image-ultra"]


def test_core_answers_urls_and_its_b64_is_refused_before_any_call(stability_env, local_s3, s3, lambda_context) -> None:
    """Core draws up to ~1.5 MP (max_output_pixels): its worst-case base64 answer cannot fit Lambda's 6 MB."""
    status, body, _ = invoke(lambda_context, prompt="a fox", model="stable-image-core", size="1024x1024", response_format="b64_json")
    assert (status, body["error"]["code"]) == (413, "response_too_large")
    assert stability_env.requests == []
    event = load_event("api_generate_b64.json", prompt="a fox", model="stable-image-core", size="1344x576", response_format="url")
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert response["statusCode"] == 200, body
    with urllib.request.urlopen(body["data"][0]["url"]) as fetched:
        assert PILImage.open(io.BytesIO(fetched.read())).size == (1536, 640)
    (sent,) = stability_env.requests
    assert (sent["endpoint"], sent["fields"]["aspect_ratio"]) == ("core", "21:9")
    assert len(stored_keys(s3, local_s3.bucket, event["requestContext"]["requestId"])) == 1


def test_sd3_sends_its_model_and_n_images_are_n_calls(stability_env, lambda_context) -> None:
    status, body, _ = invoke(
        lambda_context,
        prompt="a lighthouse",
        model="sd3.5-large-turbo",
        size="576x1344",
        output_format="jpeg",
        response_format="url",
        n=3,
    )
    assert status == 200, body
    for item in body["data"]:
        with urllib.request.urlopen(item["url"]) as fetched:
            assert PILImage.open(io.BytesIO(fetched.read())).format == "JPEG"
    assert len(body["data"]) == 3
    assert len(stability_env.requests) == 3
    for sent in stability_env.requests:
        assert sent["path"] == "/v2beta/stable-image/generate/sd3"
        assert sent["fields"] == {"prompt": "a lighthouse", "aspect_ratio": "9:21", "output_format": "jpeg", "model": "sd3.5-large-turbo"}


@pytest.mark.parametrize(("model", "endpoint"), [("stable-image-ultra", "ultra"), ("sd3.5-medium", "sd3"), ("sd3.5-large", "sd3")])
def test_every_catalog_model_reaches_its_endpoint(stability_env, lambda_context, model, endpoint) -> None:
    status, body, _ = invoke(lambda_context, prompt="a cat", model=model, size="1024x1024", response_format="b64_json")
    assert status == 200, body
    (sent,) = stability_env.requests
    assert sent["endpoint"] == endpoint
    assert sent["fields"].get("model") == (model if endpoint == "sd3" else None)


def test_urls_are_served_from_the_stored_images(stability_env, local_s3, s3, lambda_context) -> None:
    event = load_event("api_generate_b64.json", prompt="a fox", model="stable-image-ultra", size="1536x1024", response_format="url", n=2)
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert response["statusCode"] == 200, body
    assert [set(item) for item in body["data"]] == [{"url"}, {"url"}]
    with urllib.request.urlopen(body["data"][0]["url"]) as fetched:
        assert PILImage.open(io.BytesIO(fetched.read())).size == (1216, 832)
    assert len(stored_keys(s3, local_s3.bucket, event["requestContext"]["requestId"])) == 2


@pytest.mark.parametrize(
    ("prompt", "status", "code", "param"),
    [
        ("fail:400", 400, "bad_request", None),
        ("fail:402", 502, "provider_quota_exceeded", None),
        # Stability's 403 "Content Moderation Flagged": a refusal, answered as OpenAI answers one.
        ("fail:403", 400, "content_policy_violation", "prompt"),
        ("fail:404", 502, "provider_model_unavailable", None),
        ("fail:413", 413, "payload_too_large", None),
        ("fail:422", 400, "invalid_language", None),
        ("fail:429", 429, "rate_limit_exceeded", None),
        ("fail:500", 502, "provider_error", None),
        ("fail:filtered", 400, "content_policy_violation", "prompt"),
        ("fail:malformed", 502, "provider_bad_response", None),
    ],
)
def test_stability_failures_map_to_our_status_table(stability_env, lambda_context, prompt, status, code, param) -> None:
    got, body, response = invoke(lambda_context, prompt=prompt, model="stable-image-ultra", size="1024x1024")
    assert got == status, body
    assert (body["error"]["code"], body["error"]["param"]) == (code, param)
    if status == 429:
        assert response["multiValueHeaders"]["Retry-After"] == ["1"]
    if prompt in ("fail:400", "fail:422"):
        assert body["error"]["message"] == "; ".join(ERRORS[prompt][1]["errors"])  # Stability's errors, joined


def test_a_wrong_key_is_the_operators_problem(stability_env, monkeypatch, lambda_context) -> None:
    monkeypatch.setenv("STABILITY_API_KEY", "sk-wrong-key-1234")
    status, body, response = invoke(lambda_context, prompt="a fox", model="stable-image-ultra", size="1024x1024")
    assert (status, body["error"]["code"]) == (502, "provider_auth_failed")
    assert response["multiValueHeaders"].get("x-should-retry") == ["false"]
    assert stability_env.requests_with("a fox") == 1  # never retried


def test_a_message_quoting_the_key_never_reaches_the_client(stability_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="fail:echo-key", model="stable-image-ultra", size="1024x1024")
    assert status == 400, body
    assert API_KEY not in json.dumps(body) and "[redacted]" in body["error"]["message"]


def test_a_refusal_stores_nothing(stability_env, local_s3, s3, lambda_context) -> None:
    for prompt in ("fail:filtered", "fail:403"):
        event = load_event("api_generate_b64.json", prompt=prompt, model="stable-image-ultra", size="1024x1024", response_format="url")
        response = app.lambda_handler(event, lambda_context)
        assert json.loads(response["body"])["error"]["code"] == "content_policy_violation"
        assert stored_keys(s3, local_s3.bucket, event["requestContext"]["requestId"]) == []
        assert stability_env.requests_with(prompt) == 1  # a refusal is not retried


def test_429_is_retried_within_the_deadline_then_succeeds(stability_env, lambda_context) -> None:
    prompt = f"flaky429:1:{time.time_ns()}"
    status, body, _ = invoke(lambda_context, prompt=prompt, model="stable-image-ultra", size="1024x1024", response_format="b64_json")
    assert status == 200, body
    assert stability_env.requests_with(prompt) == 2


def test_persistent_5xx_gives_up_after_two_retries(stability_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="fail:500", model="stable-image-ultra", size="1024x1024")
    assert (status, body["error"]["code"]) == (502, "provider_error")
    assert stability_env.requests_with("fail:500") == 3


def test_429_without_time_to_wait_is_answered_at_once_with_retry_after(stability_env, lambda_context) -> None:
    lambda_context.remaining_millis = 3500  # 1 s left after the margin: no room for Retry-After 1 s + an attempt
    started = time.monotonic()
    status, _, response = invoke(lambda_context, prompt="fail:429", model="stable-image-ultra", size="1024x1024")
    assert (status, response["multiValueHeaders"]["Retry-After"]) == (429, ["1"])
    assert stability_env.requests_with("fail:429") == 1 and time.monotonic() - started < 1.0


def test_a_slow_stability_is_a_504_within_the_deadline(stability_env, lambda_context) -> None:
    lambda_context.remaining_millis = 4000  # minus the 2.5 s margin: 1.5 s for the provider
    started = time.monotonic()
    status, body, _ = invoke(lambda_context, prompt="fail:slow", model="stable-image-ultra", size="1024x1024", n=2, response_format="url")
    assert (status, body["error"]["code"]) == (504, "provider_timeout")
    assert time.monotonic() - started < 3.0
    assert stability_env.requests_with("fail:slow") == 2  # both calls ran side by side, neither outlived the deadline
