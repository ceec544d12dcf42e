"""The OpenAI provider's pure parts: the request body per model family (JSON for generations, the multipart form
for edits), and the status table."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import httpx
import openai
import pytest
from PIL import Image as PILImage

from functions.api.multipart import FormData, parse_form
from imagegen import errors, pictures
from imagegen.options import ImageEditOptions, ImageGenerationRequest, ImageVariationOptions
from imagegen.planning import InputPictures, plan_edit, plan_variation
from imagegen.providers.openai import (
    Payload,
    azure_endpoint,
    build_payload,
    build_request_body,
    openai_endpoint,
    parse_images,
    status_error,
)
from imagegen.providers.upstream import retry_delay
from imagegen.registry import build_registry
from imagegen.specs import GifRule, catalog

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


# Edits: the multipart form, as the OpenAI Python SDK sends it, parsed back with the API's own multipart parser.


def picture_bytes(width: int, height: int, image_format: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, (width, height), (seed * 50 % 256, 120, 30, 255)[: len(mode)]).save(buffer, format=image_format)
    return buffer.getvalue()


def inputs(*images: bytes, mask: bytes | None = None, markup: bytes | None = None) -> InputPictures:
    return InputPictures(
        images=tuple(pictures.inspect(data, param="image") for data in images),
        mask=pictures.inspect(mask, param="mask") if mask is not None else None,
        markup=pictures.inspect(markup, param="markup") if markup is not None else None,
    )


def edit_plan(model: str, pictures_in: InputPictures, registry=REGISTRY, **fields: object):
    return plan_edit(registry.get(model), ImageEditOptions.model_validate({"prompt": "add a hat", **fields}), pictures_in)


def encoded(payload: Payload) -> tuple[bytes, str]:
    """The body and Content-Type httpx sends for a payload."""
    request = httpx.Request("POST", "https://api.openai.com/v1/images/edits", data=payload.data, files=payload.files)
    return request.read(), request.headers["content-type"]


def parsed(payload: Payload) -> FormData:
    return parse_form(*encoded(payload))


def part_names(body: bytes) -> list[str]:
    return re.findall(rb'Content-Disposition: form-data; name="([^"]+)"', body)


def files_of(form: FormData, key: str) -> list[tuple[str, str | None, str | None, bytes]]:
    return [(part.name, part.filename, part.content_type, part.data) for part in form.files.get(key, [])]


PNG = picture_bytes(64, 64)
MASK = picture_bytes(64, 64, mode="RGBA")


def test_one_image_is_sent_as_image_with_only_what_is_set() -> None:
    form = parsed(build_payload(edit_plan("gpt-image-2.5-sunburst", inputs(PNG))))
    # GPT image models answer base64 only and refuse response_format; edits have no style or moderation.
    assert form.fields == {"prompt": "add a hat", "model": "gpt-image-2.5-sunburst", "n": "1", "output_format": "png", "size": "auto"}
    assert files_of(form, "image") == [("image", "image-0.png", "image/png", PNG)]
    assert set(form.files) == {"image"}


def test_three_images_and_a_mask_are_image_array_parts_then_the_mask() -> None:
    jpeg, webp = picture_bytes(64, 64, "JPEG", seed=1), picture_bytes(64, 64, "WEBP", seed=2)
    payload = build_payload(edit_plan("gpt-image-1.5", inputs(PNG, jpeg, webp, mask=MASK), n=2, size="1024x1024"))
    body, _ = encoded(payload)
    names = part_names(body)
    assert names[-4:] == [b"image[]", b"image[]", b"image[]", b"mask"]  # text fields first, files last, as the SDK
    form = parsed(payload)
    assert files_of(form, "image") == [
        ("image[]", "image-0.png", "image/png", PNG),
        ("image[]", "image-1.jpeg", "image/jpeg", jpeg),
        ("image[]", "image-2.webp", "image/webp", webp),
    ]
    assert files_of(form, "mask") == [("mask", "mask.png", "image/png", MASK)]
    assert (form.fields["n"], form.fields["size"]) == ("2", "1024x1024")


def test_markup_is_its_own_file_part() -> None:
    form = parsed(build_payload(edit_plan("gpt-image-2.5-flare", inputs(PNG, markup=MASK))))
    assert files_of(form, "markup") == [("markup", "markup.png", "image/png", MASK)]
    assert "mask" not in form.files


def test_every_edit_option_is_sent() -> None:
    fields = {
        "n": 3,
        "size": "1536x1024",
        "quality": "hd",
        "background": "opaque",
        "output_format": "webp",
        "output_compression": 40,
        "input_fidelity": "high",
        "safety_identifier": "user-1",
    }
    form = parsed(build_payload(edit_plan("gpt-image-1.5", inputs(PNG), **fields)))
    assert form.fields == {
        "prompt": "add a hat",
        "background": "opaque",
        "input_fidelity": "high",
        "model": "gpt-image-1.5",
        "n": "3",
        "output_compression": "40",
        "output_format": "webp",
        "quality": "high",  # the model's own name for 'hd'
        "safety_identifier": "user-1",
        "size": "1536x1024",
    }


def test_complexity_is_sent_on_models_that_take_it() -> None:
    form = parsed(build_payload(edit_plan("gpt-image-2.5-sunburst", inputs(PNG), complexity="low", quality="max")))
    assert (form.fields["complexity"], form.fields["quality"]) == ("low", "max")


# GIF and SVG output (preview features) on a model whose entry lists them, as tests/unit/test_catalog.py does.
ANIMATED = catalog()["gpt-image-2.5-sunburst"].model_copy(
    update={"output_formats": ("png", "jpeg", "webp", "gif", "svg"), "gif": GifRule()}
)


def test_svg_options_are_nested_bracket_fields() -> None:
    options = ImageEditOptions(prompt="x", output_format="svg", svg={"model": "author", "reasoning": {"effort": "high"}})
    payload = build_payload(plan_edit(ANIMATED, options, inputs(PNG)))
    assert b"svg[model]" in part_names(encoded(payload)[0]) and b"svg[reasoning][effort]" in part_names(encoded(payload)[0])
    assert parsed(payload).fields["svg"] == {"model": "author", "reasoning": {"effort": "high"}}


def test_gif_frames_are_sent() -> None:
    options = ImageEditOptions(prompt="x", output_format="gif", frame_count=4, frame_duration_ms=120)
    form = parsed(build_payload(plan_edit(ANIMATED, options, inputs(PNG))))
    assert (form.fields["output_format"], form.fields["frame_count"], form.fields["frame_duration_ms"]) == ("gif", "4", "120")


AZURE_REGISTRY = build_registry(openai_enabled=False, default_model=None, azure_deployments={"gpt-image-1.5": "my edits/1"})


def test_azure_edit_names_no_model_and_sends_user() -> None:
    plan = edit_plan("azure/gpt-image-1.5", inputs(PNG, mask=MASK), registry=AZURE_REGISTRY, safety_identifier="user-1")
    style = azure_endpoint("https://res.openai.azure.com/", "2025-04-01-preview")
    assert style.url(plan) == "https://res.openai.azure.com/openai/deployments/my%20edits%2F1/images/edits?api-version=2025-04-01-preview"
    form = parsed(build_payload(plan, send_model=style.send_model))
    # Azure's deployment implies the model; it takes the legacy user, not safety_identifier.
    assert "model" not in form.fields and "safety_identifier" not in form.fields
    assert form.fields["user"] == "user-1"
    assert files_of(form, "mask") == [("mask", "mask.png", "image/png", MASK)]


def test_openai_edit_sends_safety_identifier_not_user() -> None:
    form = parsed(build_payload(edit_plan("gpt-image-1.5", inputs(PNG), user="legacy-user")))
    assert form.fields["safety_identifier"] == "legacy-user" and "user" not in form.fields
    assert (
        openai_endpoint("https://api.openai.com/v1/").url(edit_plan("gpt-image-1.5", inputs(PNG)))
        == "https://api.openai.com/v1/images/edits"
    )


def sdk_form(**kwargs: Any) -> tuple[bytes, str]:
    """What the official Python SDK sends for ``client.images.edit(**kwargs)``, captured by a mock transport."""
    import httpx2  # the HTTP client the installed openai SDK is built on

    captured: list[Any] = []

    def handler(request: Any) -> Any:
        captured.append(request)
        return httpx2.Response(200, json={"created": 1, "data": [{"b64_json": base64.b64encode(b"x").decode()}]})

    client = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)), max_retries=0)
    client.images.edit(**kwargs)
    (request,) = captured
    return request.read(), request.headers["content-type"]


@pytest.mark.parametrize("count", [1, 2])
def test_the_form_is_the_sdks_part_for_part(count: int) -> None:
    images = [picture_bytes(64, 64, seed=index) for index in range(count)]
    fields = {"n": 2, "size": "1024x1024", "quality": "high", "background": "opaque", "output_format": "jpeg", "output_compression": 50}
    plan = plan_edit(ANIMATED, ImageEditOptions(prompt="add a hat", safety_identifier="u1", **fields), inputs(*images, mask=MASK))
    ours, our_type = encoded(build_payload(plan))
    sdk_images = [(f"image-{index}.png", data, "image/png") for index, data in enumerate(images)]
    theirs, their_type = sdk_form(
        image=sdk_images if count > 1 else sdk_images[0],
        mask=("mask.png", MASK, "image/png"),
        prompt="add a hat",
        model="gpt-image-2.5-sunburst",
        safety_identifier="u1",
        **fields,
    )
    assert part_names(ours) == part_names(theirs)
    mine, sdk = parse_form(ours, our_type), parse_form(theirs, their_type)
    assert mine.fields == sdk.fields
    assert {key: files_of(mine, key) for key in mine.files} == {key: files_of(sdk, key) for key in sdk.files}


def test_a_variation_is_an_unsupported_operation() -> None:
    local = build_registry(openai_enabled=False, default_model=None).get("local")
    plan = plan_variation(local, ImageVariationOptions(), pictures.inspect(PNG, param="image"))
    with pytest.raises(errors.ProviderError) as caught:
        build_payload(plan)
    assert caught.value.code == "unsupported_operation"
    with pytest.raises(errors.ProviderError, match="variations"):
        openai_endpoint("https://api.openai.com/v1").url(plan)
