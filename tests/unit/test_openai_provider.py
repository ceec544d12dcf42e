"""The OpenAI provider's pure parts: the request body per model family and the status table."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from imagegen import errors
from imagegen.options import ImageGenerationRequest
from imagegen.providers.openai import build_request_body, parse_images, retry_delay, status_error
from imagegen.registry import build_registry

REGISTRY = build_registry(openai_enabled=True, default_model=None, azure_deployments={"dall-e-3": "dall-e-3"})


def body_for(**fields: object) -> dict[str, object]:
    return build_request_body(REGISTRY.plan(ImageGenerationRequest.model_validate({"prompt": "a cat", **fields})))


def test_dalle_asks_for_base64_and_sends_only_what_is_set() -> None:
    # OpenAI retired DALL-E 3 on 2026-05-12; Azure still serves it, and the body is built the same way.
    assert body_for(model="azure/dall-e-3", style="natural", user="u1") == {
        "model": "dall-e-3",
        "prompt": "a cat",
        "n": 1,
        "size": "1024x1024",
        "style": "natural",
        "user": "u1",
        "response_format": "b64_json",
    }


def test_gpt_image_never_sends_response_format_and_maps_seed_quality() -> None:
    body = body_for(model="gpt-image-1.5", quality="hd", output_format="jpeg", output_compression=80, n=3)
    assert "response_format" not in body
    assert body["quality"] == "high"
    assert (body["output_format"], body["output_compression"], body["n"]) == ("jpeg", 80, 3)


def response(status: int, payload: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.Response(status, content=content, headers=headers)


def error_payload(message: str, code: str | None = None, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


# Bodies as OpenAI sends them (error codes: platform.openai.com/docs/guides/error-codes).
QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
UNVERIFIED = error_payload("Your organization must be verified to use the model `gpt-image-1`.")
NO_MODEL = error_payload("The model `gpt-image-9` does not exist or you do not have access to it.", "model_not_found")


@pytest.mark.parametrize(
    ("status", "payload", "headers", "expected", "our_status"),
    [
        (400, error_payload("bad size", "invalid_value", "size"), None, errors.InvalidRequestError, 400),
        # OpenAI's own status for a safety refusal: the SDKs raise BadRequestError.
        (400, error_payload("Your request was rejected", "content_policy_violation"), None, errors.ContentPolicyError, 400),
        (400, error_payload("blocked", "moderation_blocked"), None, errors.ContentPolicyError, 400),
        (401, error_payload("Incorrect API key provided: sk-abc***"), None, errors.ProviderConfigurationError, 502),
        (403, UNVERIFIED, None, errors.ProviderConfigurationError, 502),
        (429, error_payload("slow down", "rate_limit_exceeded"), {"retry-after": "7"}, errors.RateLimitError, 429),
        (429, QUOTA, None, errors.ProviderConfigurationError, 502),
        (500, error_payload("oops"), None, errors.ProviderError, 502),
        (503, b"<html>busy</html>", None, errors.ProviderError, 502),
        (404, NO_MODEL, None, errors.ProviderConfigurationError, 502),
    ],
)
def test_status_table(status, payload, headers, expected, our_status) -> None:
    error = status_error(response(status, payload, headers))
    assert type(error) is expected
    assert error.status_code == our_status


@pytest.mark.parametrize(
    ("status", "payload", "code"),
    [
        (401, error_payload("Incorrect API key provided: sk-abc***", "invalid_api_key"), "provider_auth_failed"),
        (403, UNVERIFIED, "provider_auth_failed"),
        (404, NO_MODEL, "provider_model_unavailable"),
        (429, QUOTA, "provider_quota_exceeded"),
    ],
)
def test_failures_no_retry_can_fix_say_so_and_are_not_retried(status: int, payload: object, code: str) -> None:
    upstream = response(status, payload)
    error = status_error(upstream)
    assert (error.code, error.retryable, error.headers) == (code, False, {"x-should-retry": "false"})
    assert retry_delay(upstream, error, 0) is None


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_stay_retryable_without_the_header(status: int) -> None:
    error = status_error(response(status, error_payload("busy", "rate_limit_exceeded" if status == 429 else None)))
    assert error.retryable and "x-should-retry" not in error.headers


def test_400_passes_param_through() -> None:
    error = status_error(response(400, error_payload("bad size", "invalid_value", "size")))
    assert (error.param, error.code, error.message) == ("size", "invalid_value", "bad size")


def test_auth_failure_never_echoes_the_provider_message() -> None:
    error = status_error(response(401, error_payload("Incorrect API key provided: sk-abc123")))
    assert "sk-abc" not in error.message
    assert "server's credentials" in error.message


@pytest.mark.parametrize(("headers", "expected"), [({"retry-after": "7"}, "7"), ({"retry-after-ms": "1500"}, "2"), ({}, None)])
def test_retry_after_is_passed_on_in_seconds(headers: dict[str, str], expected: str | None) -> None:
    error = status_error(response(429, error_payload("slow down"), headers))
    assert error.headers.get("Retry-After") == expected


@pytest.mark.parametrize(
    "payload",
    [b"not json", {"data": [{"url": "https://x"}]}, {"data": [{"b64_json": "!!!notbase64"}]}, {"nodata": []}, [1, 2]],
)
def test_malformed_success_bodies_are_502(payload: object) -> None:
    with pytest.raises(errors.ProviderError) as caught:
        parse_images(response(200, payload), 1)
    assert caught.value.code == "provider_bad_response"


def test_wrong_image_count_is_502() -> None:
    payload = {"data": [{"b64_json": base64.b64encode(b"x").decode()}]}
    with pytest.raises(errors.ProviderError, match="1 images instead of 2"):
        parse_images(response(200, payload), 2)


@pytest.mark.parametrize(
    "message",
    [
        "Incorrect API key provided: sk-proj-abc123***wxyz.",
        "upstream said: Authorization Bearer sk-live-0123456789 is invalid",
        "bad key key-0123456789abcdef for this deployment",
    ],
)
def test_key_like_strings_in_provider_messages_are_redacted(message: str) -> None:
    error = status_error(response(400, error_payload(message, "invalid_value", "size")))
    assert "[redacted]" in error.message
    assert "0123456789" not in error.message and "abc123" not in error.message


def test_ordinary_messages_are_passed_on() -> None:
    error = status_error(response(400, error_payload("Invalid size: must be 1024x1024 (skip the sketch-style).", "invalid_value", "size")))
    assert error.message == "Invalid size: must be 1024x1024 (skip the sketch-style)."
