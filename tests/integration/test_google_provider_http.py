"""The Google provider over real HTTP against a fake Gemini API on loopback, through the API handler."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.request
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image as PILImage

from functions.api import app
from imagegen.deadline import Deadline
from imagegen.errors import ContentPolicyError
from imagegen.options import ImageGenerationRequest
from imagegen.planning import plan
from imagegen.providers.google import GoogleProvider
from imagegen.specs import catalog
from tests.conftest import load_event
from tests.fakes.google_server import KEY, FakeGoogle

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake_google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        yield server


@pytest.fixture
def google_env(local_s3, fake_google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> FakeGoogle:
    """Google's models served from the fake Gemini API (with its key), its request log emptied."""
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    monkeypatch.setenv("GOOGLE_BASE_URL", fake_google.base_url)
    fake_google.requests.clear()
    return fake_google


def invoke(lambda_context, **body):
    event = load_event("api_generate_b64.json", **body)
    response = app.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"]), response, event["requestContext"]["requestId"]


def stored_keys(s3, bucket: str, request_id: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents", [])
    return [item["Key"] for item in listed if request_id in item["Key"]]


def test_gemini_success_sends_the_key_and_the_ratio_and_answers_googles_png(google_env, local_s3, s3, lambda_context) -> None:
    status, body, _, request_id = invoke(lambda_context, prompt="a fox", model="gemini-2.5-flash-image", size="1344x768")
    assert status == 200, body
    (item,) = body["data"]
    data = base64.b64decode(item["b64_json"])
    assert data.startswith(b"\x89PNG") and PILImage.open(io.BytesIO(data)).size == (1344, 768)
    assert body["usage"] == {"input_tokens": 7, "output_tokens": 1290, "total_tokens": 1297}
    (sent,) = google_env.requests
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert sent["headers"]["x-goog-api-key"] == KEY
    assert sent["json"] == {
        "contents": [{"parts": [{"text": "a fox"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}},
    }
    (key,) = stored_keys(s3, local_s3.bucket, request_id)
    assert key.endswith(".png")


def test_gemini_3_draws_n_images_in_n_calls_skipping_thoughts_and_stores_jpeg(google_env, lambda_context) -> None:
    status, body, _, _ = invoke(lambda_context, prompt="a fox", model="gemini-3.1-flash-image", size="848x1264", n=2, response_format="url")
    assert status == 200, body
    assert len(body["data"]) == 2 and len(google_env.requests) == 2
    for item in body["data"]:
        with urllib.request.urlopen(item["url"]) as fetched:
            assert fetched.headers["Content-Type"] == "image/jpeg"
            # The answer's image, not the 64x64 thought image that came first.
            assert PILImage.open(io.BytesIO(fetched.read())).size == (848, 1264)
    assert {request["json"]["generationConfig"]["imageConfig"]["aspectRatio"] for request in google_env.requests} == {"2:3"}
    assert body["usage"]["output_tokens"] == 2 * 1290


def test_a_2k_size_asks_gemini_3_for_image_size_2k(google_env, lambda_context) -> None:
    status, body, _, _ = invoke(lambda_context, prompt="a fox", model="gemini-3-pro-image", size="2752x1536", response_format="url")
    assert status == 200, body
    (sent,) = google_env.requests
    assert sent["path"].endswith("/gemini-3-pro-image:generateContent")
    assert sent["json"]["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    with urllib.request.urlopen(body["data"][0]["url"]) as fetched:
        assert PILImage.open(io.BytesIO(fetched.read())).size == (2752, 1536)


def test_imagen_is_retired_on_the_gemini_api_and_never_called(google_env, lambda_context) -> None:
    status, body, _, _ = invoke(lambda_context, prompt="a fox", model="imagen-4.0-generate-001", size="1024x1024")
    assert status == 404, body
    assert body["error"]["code"] == "model_retired" and "2026-08-21" in body["error"]["message"]
    assert "'gemini-2.5-flash-image'" in body["error"]["message"]
    assert google_env.requests == []


@pytest.mark.parametrize(
    ("prompt", "status", "code"),
    [
        ("fail:400", 400, "invalid_value"),
        ("fail:precondition", 502, "provider_auth_failed"),
        ("fail:403", 502, "provider_auth_failed"),
        ("fail:404", 502, "provider_model_unavailable"),
        ("fail:429", 429, "rate_limit_exceeded"),
        ("fail:500", 502, "provider_error"),
        ("fail:503", 502, "provider_error"),
        ("fail:504", 502, "provider_error"),
        ("fail:blocked", 400, "content_policy_violation"),
        ("fail:filtered", 400, "content_policy_violation"),
        ("fail:text", 502, "provider_bad_response"),
        ("fail:wrong-format", 502, "provider_bad_response"),
        ("fail:malformed", 502, "provider_bad_response"),
    ],
)
def test_googles_answers_map_to_our_status_table(google_env, local_s3, s3, lambda_context, prompt, status, code) -> None:
    lambda_context.remaining_millis = 3500  # no room to retry: one answer per request, and quick
    got, body, response, request_id = invoke(lambda_context, prompt=prompt, model="gemini-2.5-flash-image", size="1024x1024")
    assert got == status, body
    assert body["error"]["code"] == code
    assert KEY not in json.dumps(body) and "AIza" not in json.dumps(body)
    if status == 429:
        assert response["multiValueHeaders"]["Retry-After"] == ["1"]  # from Google's RetryInfo: it sends no header
    if code == "content_policy_violation":
        assert body["error"]["param"] == "prompt"
    no_retry = code in ("provider_auth_failed", "provider_model_unavailable")
    assert (response["multiValueHeaders"].get("x-should-retry") == ["false"]) is no_retry
    assert stored_keys(s3, local_s3.bucket, request_id) == []


def test_a_wrong_key_is_provider_auth_failed(google_env, monkeypatch, lambda_context) -> None:
    """Google answers a wrong key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID): the operator's problem, not the
    caller's, so never a 400."""
    monkeypatch.setenv("GOOGLE_API_KEY", "AIzaSyWRONG-key-0000000000000000000000")
    status, body, response, _ = invoke(lambda_context, prompt="a fox", model="gemini-2.5-flash-image", size="1024x1024")
    assert (status, body["error"]["code"]) == (502, "provider_auth_failed")
    assert "AIza" not in json.dumps(body)
    assert google_env.requests[0]["headers"]["x-goog-api-key"].startswith("AIzaSyWRONG")


def test_a_429_is_retried_after_googles_retry_delay_then_succeeds(google_env, lambda_context) -> None:
    prompt = f"flaky429:1:{time.time_ns()}"
    started = time.monotonic()
    status, body, _, _ = invoke(lambda_context, prompt=prompt, model="gemini-2.5-flash-image", size="1024x1024")
    assert status == 200, body
    assert google_env.requests_with(prompt) == 2
    assert time.monotonic() - started >= 1.0  # RetryInfo's 1 s was waited


def test_a_429_without_time_to_wait_is_answered_at_once_with_retry_after(google_env, lambda_context) -> None:
    lambda_context.remaining_millis = 3500  # 1 s left after the margin: no room for 1 s + an attempt
    started = time.monotonic()
    status, _, response, _ = invoke(lambda_context, prompt="fail:429", model="gemini-2.5-flash-image", size="1024x1024")
    assert (status, response["multiValueHeaders"]["Retry-After"]) == (429, ["1"])
    assert google_env.requests_with("fail:429") == 1 and time.monotonic() - started < 1.0


def test_a_5xx_is_retried_within_the_deadline(google_env, lambda_context) -> None:
    prompt = f"flaky:1:{time.time_ns()}"
    status, body, _, _ = invoke(lambda_context, prompt=prompt, model="gemini-3.1-flash-image", size="1024x1024")
    assert status == 200, body
    assert google_env.requests_with(prompt) == 2


@pytest.mark.parametrize("prompt", ["fail:400", "fail:403", "fail:404", "fail:blocked", "fail:malformed"])
def test_permanent_failures_are_not_retried(google_env, lambda_context, prompt) -> None:
    invoke(lambda_context, prompt=prompt, model="gemini-2.5-flash-image", size="1024x1024")
    assert google_env.requests_with(prompt) == 1


def test_a_slow_google_is_a_504_within_the_deadline(google_env, lambda_context) -> None:
    lambda_context.remaining_millis = 4000  # minus the 2.5 s margin: 1.5 s for the provider
    started = time.monotonic()
    status, body, _, _ = invoke(
        lambda_context, prompt="fail:slow", model="gemini-2.5-flash-image", size="1024x1024", n=2, response_format="url"
    )
    assert (status, body["error"]["code"]) == (504, "provider_timeout")
    assert time.monotonic() - started < 3.0


def imagen_plan(prompt: str, **fields):
    """Imagen is retired in the catalog, so the handler refuses it: its wire is driven through the provider itself."""
    spec = catalog()["imagen-4.0-generate-001"]
    return plan(spec, ImageGenerationRequest.model_validate({"prompt": prompt, "model": spec.id, **fields}))


def imagen_provider(fake: FakeGoogle):
    return GoogleProvider(httpx.Client(), base_url=fake.base_url, api_key=lambda: KEY, sleep=lambda _: None)


def test_imagen_predict_over_http_answers_n_images_in_the_format_asked(google_env) -> None:
    result = imagen_provider(google_env).generate(imagen_plan("a fox", n=3, size="1408x768", output_format="jpeg"), Deadline.after(10))
    assert len(result.images) == 3
    assert all(PILImage.open(io.BytesIO(image.data)).format == "JPEG" for image in result.images)
    assert PILImage.open(io.BytesIO(result.images[0].data)).size == (1408, 768)
    (sent,) = google_env.requests
    assert sent["path"] == "/v1beta/models/imagen-4.0-generate-001:predict"
    assert sent["json"]["parameters"] == {
        "sampleCount": 3,
        "aspectRatio": "16:9",
        "includeRaiReason": True,
        "outputOptions": {"mimeType": "image/jpeg"},
    }


@pytest.mark.parametrize("prompt", ["fail:filtered", "fail:all-filtered"])
def test_imagen_filtered_images_over_http_are_a_refusal(google_env, prompt) -> None:
    with pytest.raises(ContentPolicyError):
        imagen_provider(google_env).generate(imagen_plan(prompt, n=2), Deadline.after(10))
