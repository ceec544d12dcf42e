"""The Black Forest Labs provider over real HTTP against a fake BFL API on loopback, through the API handler."""

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
from tests.fakes.bfl_server import API_KEY, FakeBfl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake_bfl() -> Iterator[FakeBfl]:
    with FakeBfl(pending_polls=2) as server:
        yield server


@pytest.fixture
def bfl_env(local_s3: Any, fake_bfl: FakeBfl, monkeypatch: pytest.MonkeyPatch) -> FakeBfl:
    monkeypatch.setenv("BFL_API_KEY", API_KEY)
    monkeypatch.setenv("BFL_BASE_URL", fake_bfl.base_url)
    fake_bfl.reset()
    return fake_bfl


def invoke(lambda_context: Any, **body: Any) -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]:
    event = load_event("api_generate_b64.json", **body)
    response = app.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"]), response, event


def fetched(item: dict[str, Any]) -> PILImage.Image:
    with urllib.request.urlopen(item["url"]) as answer:
        return PILImage.open(io.BytesIO(answer.read()))


def stored_for(s3: Any, bucket: str, event: dict[str, Any]) -> list[str]:
    contents = s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents", [])
    return [item["Key"] for item in contents if event["requestContext"]["requestId"] in item["Key"]]


def test_n_images_are_n_tasks_polled_with_the_key_and_downloaded_without(bfl_env, local_s3, s3, lambda_context) -> None:
    status, body, _, event = invoke(lambda_context, prompt="a red fox", model="flux-pro-1.1", size="1440x1024", n=2, response_format="url")
    assert status == 200, body
    assert [fetched(item).size for item in body["data"]] == [(1440, 1024)] * 2
    assert len(stored_for(s3, local_s3.bucket, event)) == 2
    posts = [r for r in bfl_env.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/v1/flux-pro-1.1"] * 2 and bfl_env.requests[:2] == posts
    assert posts[0]["json"] == {"prompt": "a red fox", "width": 1440, "height": 1024, "output_format": "png"}
    polls = [r for r in bfl_env.requests if r["path"].startswith("/v1/get_result")]
    assert len(polls) == 6 and all(r["headers"]["x-key"] == API_KEY for r in posts + polls)  # Pending twice, then Ready
    downloads = [r for r in bfl_env.requests if r["path"].startswith("/delivery/")]
    assert len(downloads) == 2 and not any("x-key" in {name.lower() for name in r["headers"]} for r in downloads)


def test_ultra_sends_an_aspect_ratio_and_answers_jpeg(bfl_env, lambda_context) -> None:
    status, body, _, _ = invoke(
        lambda_context, prompt="a fox", model="flux-pro-1.1-ultra", size="2752x1536", output_format="jpeg", response_format="url"
    )
    assert status == 200, body
    picture = fetched(body["data"][0])
    assert (picture.format, picture.size) == ("JPEG", (2752, 1536))
    (post,) = [r for r in bfl_env.requests if r["method"] == "POST"]
    assert post["json"] == {"prompt": "a fox", "aspect_ratio": "16:9", "output_format": "jpeg"}


@pytest.mark.parametrize(
    ("prompt", "status", "code", "param"),
    [
        ("fail:402", 502, "provider_quota_exceeded", None),
        ("fail:403", 502, "provider_auth_failed", None),
        ("fail:422", 400, "invalid_value", "width"),
        ("fail:500", 502, "provider_error", None),
        ("fail:503", 502, "provider_error", None),
        ("fail:not-found", 502, "provider_error", None),
        ("fail:error", 502, "provider_error", None),
        ("fail:malformed", 502, "provider_bad_response", None),
        ("fail:evil-poll", 502, "provider_bad_response", None),
        ("fail:evil-sample", 502, "provider_bad_response", None),
    ],
)
def test_errors_are_openai_shaped(bfl_env, local_s3, s3, lambda_context, prompt, status, code, param) -> None:
    got, body, response, event = invoke(lambda_context, prompt=prompt, model="flux-pro-1.1", size="1024x1024")
    assert (got, body["error"]["code"], body["error"]["param"]) == (status, code, param), body
    assert API_KEY not in json.dumps(body) and stored_for(s3, local_s3.bucket, event) == []
    no_retry = code in ("provider_auth_failed", "provider_quota_exceeded")
    assert (response["multiValueHeaders"].get("x-should-retry") == ["false"]) is no_retry


def test_a_wrong_key_is_a_configuration_error(bfl_env, monkeypatch, lambda_context) -> None:
    monkeypatch.setenv("BFL_API_KEY", "bfl-wrong-key")
    status, body, _, _ = invoke(lambda_context, prompt="a fox", model="flux-pro-1.1", size="1024x1024")
    assert (status, body["error"]["code"]) == (502, "provider_auth_failed")
    assert bfl_env.requests[0]["headers"]["x-key"] == "bfl-wrong-key" and "bfl-wrong-key" not in json.dumps(body)


@pytest.mark.parametrize("prompt", ["fail:request-moderated", "fail:content-moderated"])
def test_moderation_is_a_content_policy_400_and_nothing_is_stored(bfl_env, local_s3, s3, lambda_context, prompt) -> None:
    status, body, _, event = invoke(lambda_context, prompt=prompt, model="flux-pro-1.1", size="1024x1024")
    assert status == 400, body
    error = body["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "content_policy_violation", "prompt")
    assert stored_for(s3, local_s3.bucket, event) == []


def test_429_is_retried_then_succeeds(bfl_env, lambda_context) -> None:
    status, body, _, _ = invoke(lambda_context, prompt="flaky429:1:a fox", model="flux-pro-1.1", size="1024x1024")
    assert status == 200, body
    assert len([r for r in bfl_env.requests if r["method"] == "POST"]) == 2


def test_429_beyond_the_deadline_keeps_retry_after(bfl_env, lambda_context) -> None:
    lambda_context.remaining_millis = 4000  # minus the 2.5 s margin: 1.5 s, no room for a 1 s wait and an attempt
    status, body, response, _ = invoke(lambda_context, prompt="fail:429", model="flux-pro-1.1", size="1024x1024")
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    assert response["multiValueHeaders"]["Retry-After"] == ["1"]
    assert len(bfl_env.requests) == 1


def test_still_pending_at_the_deadline_is_a_504_saying_to_use_async_jobs(bfl_env, local_s3, s3, lambda_context) -> None:
    lambda_context.remaining_millis = 4000  # 1.5 s for the provider
    started = time.monotonic()
    status, body, _, event = invoke(lambda_context, prompt="fail:slow", model="flux-pro-1.1", size="1024x1024")
    elapsed = time.monotonic() - started
    assert (status, body["error"]["code"]) == (504, "provider_timeout")
    assert "Prefer: respond-async" in body["error"]["message"]
    assert 1.0 < elapsed < 3.0
    assert len([r for r in bfl_env.requests if r["path"].startswith("/v1/get_result")]) >= 2
    assert stored_for(s3, local_s3.bucket, event) == []


def test_a_custom_size_answers_base64(bfl_env, lambda_context) -> None:
    status, body, _, _ = invoke(lambda_context, prompt="a fox", model="flux-2-pro", size="512x768")
    assert status == 200, body
    assert PILImage.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (512, 768)
    (post,) = [r for r in bfl_env.requests if r["method"] == "POST"]
    assert (post["path"], post["json"]["width"], post["json"]["height"]) == ("/v1/flux-2-pro", 512, 768)
