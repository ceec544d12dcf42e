"""The Google provider's pure parts: the request bodies per family, the size mapping, reading Google's answers and
refusals, and the status table with Google's own error bodies; the provider itself over httpx.MockTransport."""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from imagegen import errors
from imagegen.deadline import Deadline
from imagegen.options import ImageGenerationRequest
from imagegen.planning import GenerationPlan, plan
from imagegen.providers.google import (
    GEMINI_ASPECT_RATIOS,
    IMAGEN_ASPECT_RATIOS,
    GoogleProvider,
    aspect_ratio,
    gemini_body,
    google_error,
    image_size,
    imagen_body,
    parse_gemini,
    parse_imagen,
)
from imagegen.specs import catalog

GOOGLE = catalog().of("google")


def plan_for(model: str, **fields: Any) -> GenerationPlan:
    return plan(catalog()[model], ImageGenerationRequest.model_validate({"prompt": "a cat", "model": model, **fields}))


def image(fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (10, 20, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ratio_value(ratio: str) -> float:
    across, down = (int(side) for side in ratio.split(":"))
    return across / down


# -- sizes ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", GOOGLE, ids=lambda spec: spec.id)
def test_every_catalog_size_is_near_its_ratio_and_no_two_sizes_ask_the_same(spec) -> None:
    ratios = IMAGEN_ASPECT_RATIOS if spec.family == "imagen" else GEMINI_ASPECT_RATIOS
    asked = {}
    for size in spec.sizes:
        width, height = (int(side) for side in size.split("x"))
        ratio = aspect_ratio(width, height, ratios)
        # Google's sizes are near their ratio, not at it (Imagen's 3:4 is 896x1280, 2.5 Flash's 4:5 896x1152), but nearest to it.
        distances = sorted(abs(math.log(width / height) - math.log(ratio_value(other))) for other in ratios)
        assert abs(math.log(width / height) - math.log(ratio_value(ratio))) == distances[0] < distances[1], size
        key = (ratio, image_size(width, height))
        assert key not in asked, f"{size} and {asked.get(key)} would both ask for {key}"
        asked[key] = size
    assert {ratio for ratio, _ in asked} == set(ratios)  # every ratio Google offers has a size


def test_only_gemini_3_lists_sizes_above_1k() -> None:
    for spec in GOOGLE:
        tiers = {image_size(*(int(side) for side in size.split("x"))) for size in spec.sizes}
        assert tiers == ({"1K", "2K", "4K"} if spec.id.startswith("gemini-3") else {"1K"}), spec.id


@pytest.mark.parametrize(("size", "tier"), [((1024, 1024), "1K"), ((1584, 672), "1K"), ((2048, 2048), "2K"), ((6336, 2688), "4K")])
def test_image_size_tiers(size, tier) -> None:
    assert image_size(*size) == tier


def test_aspect_ratio_picks_the_nearest() -> None:
    assert aspect_ratio(848, 1264) == "2:3"
    assert aspect_ratio(928, 1152) == "4:5"
    assert aspect_ratio(1536, 672) == "21:9"
    assert aspect_ratio(1408, 768, IMAGEN_ASPECT_RATIOS) == "16:9"


# -- request bodies ---------------------------------------------------------------------------------------------------


def test_gemini_body_asks_for_an_image_at_the_ratio_and_omits_1k() -> None:
    assert gemini_body(plan_for("gemini-2.5-flash-image", size="1248x832")) == {
        "contents": [{"parts": [{"text": "a cat"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "3:2"}},
    }
    body = gemini_body(plan_for("gemini-3-pro-image", size="3072x5504"))
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "9:16", "imageSize": "4K"}


def test_gemini_models_take_no_output_format() -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        plan_for("gemini-2.5-flash-image", output_format="jpeg")
    assert caught.value.param == "output_format"
    assert plan_for("gemini-3.1-flash-image").output_format == "jpeg"


def test_imagen_body_asks_for_n_samples_and_jpeg_only_when_asked() -> None:
    assert imagen_body(plan_for("imagen-4.0-generate-001", n=3, size="896x1280")) == {
        "instances": [{"prompt": "a cat"}],
        "parameters": {"sampleCount": 3, "aspectRatio": "3:4", "includeRaiReason": True},
    }
    jpeg = imagen_body(plan_for("imagen-4.0-fast-generate-001", output_format="jpeg"))
    assert jpeg["parameters"]["outputOptions"] == {"mimeType": "image/jpeg"}


def test_imagen_is_retired_with_a_successor() -> None:
    for spec in GOOGLE:
        if spec.family == "imagen":
            assert (str(spec.retired_on), spec.successor) == ("2026-08-21", "gemini-2.5-flash-image")


# -- answers ------------------------------------------------------------------------------------------------------------


def candidate(*parts: dict[str, Any], finish: str = "STOP") -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": list(parts), "role": "model"}, "finishReason": finish}]}


def test_parse_gemini_skips_thoughts_and_reads_usage() -> None:
    draft, final = image(size=(4, 4)), image(size=(16, 16))
    payload = candidate(
        {"inlineData": {"mimeType": "image/png", "data": b64(draft)}, "thought": True},
        {"text": "thinking", "thought": True},
        {"inlineData": {"mimeType": "image/png", "data": b64(final)}},
    )
    payload["usageMetadata"] = {"promptTokenCount": 3, "candidatesTokenCount": 1290, "totalTokenCount": 1293}
    data, usage = parse_gemini(payload)
    assert data == final
    assert usage == {"input_tokens": 3, "output_tokens": 1290, "total_tokens": 1293}


@pytest.mark.parametrize(
    "payload",
    [
        {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}},
        {"promptFeedback": {"blockReason": "SAFETY"}, "candidates": []},
        {"candidates": [{"finishReason": "IMAGE_SAFETY"}]},
        {"candidates": [{"finishReason": "PROHIBITED_CONTENT", "content": {"parts": [{"text": "no"}]}}]},
        {"candidates": [{"finishReason": "IMAGE_RECITATION"}]},
    ],
)
def test_refusals_are_content_policy_errors(payload) -> None:
    with pytest.raises(errors.ContentPolicyError) as caught:
        parse_gemini(payload)
    assert (caught.value.code, caught.value.param, caught.value.status_code) == ("content_policy_violation", "prompt", 400)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({}, "no candidate"),
        ([], "not a JSON object"),
        (candidate({"text": "I can only draw dogs."}), "I can only draw dogs."),
        ({"candidates": [{"finishReason": "NO_IMAGE"}]}, "NO_IMAGE"),
        (candidate({"inlineData": {"mimeType": "image/png", "data": "!!"}}), "not base64"),
        (candidate({"inlineData": {"mimeType": "image/png"}}), "without data"),
    ],
)
def test_an_answer_without_an_image_is_a_bad_response(payload, says) -> None:
    with pytest.raises(errors.ProviderError) as caught:
        parse_gemini(payload)
    assert caught.value.code == "provider_bad_response" and says in caught.value.message


def test_parse_imagen_takes_n_and_reads_filtered_ones_as_refusals() -> None:
    predictions = [{"bytesBase64Encoded": b64(image()), "mimeType": "image/png"} for _ in range(3)]
    assert len(parse_imagen({"predictions": predictions}, 2)) == 2
    filtered = {"predictions": [*predictions[:1], {"raiFilteredReason": "violated the usage guidelines"}]}
    with pytest.raises(errors.ContentPolicyError) as caught:
        parse_imagen(filtered, 2)
    assert "1 of 2 images" in caught.value.message and "usage guidelines" in caught.value.message
    with pytest.raises(errors.ContentPolicyError):
        parse_imagen({}, 1)  # every image filtered: Google answers an empty object


# -- the status table with Google's error bodies ----------------------------------------------------------------------


def google_response(
    status: int, name: str, message: str, *details: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"error": {"code": status, "message": message, "status": name, "details": list(details)}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("response", "kind", "code"),
    [
        (google_response(400, "INVALID_ARGUMENT", "Request contains an invalid argument."), errors.InvalidRequestError, "invalid_value"),
        (
            google_response(
                400, "INVALID_ARGUMENT", "API key not valid.", {"@type": "t/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ),
            errors.ProviderConfigurationError,
            "provider_auth_failed",
        ),
        (
            google_response(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
            errors.ProviderConfigurationError,
            "provider_auth_failed",
        ),
        (google_response(403, "PERMISSION_DENIED", "denied"), errors.ProviderConfigurationError, "provider_auth_failed"),
        (google_response(404, "NOT_FOUND", "models/x is not found"), errors.ProviderConfigurationError, "provider_model_unavailable"),
        (google_response(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota"), errors.RateLimitError, "rate_limit_exceeded"),
        (google_response(500, "INTERNAL", "An internal error has occurred."), errors.ProviderError, "provider_error"),
        (google_response(503, "UNAVAILABLE", "The model is overloaded."), errors.ProviderError, "provider_error"),
        (google_response(504, "DEADLINE_EXCEEDED", "Deadline expired."), errors.ProviderError, "provider_error"),
        (
            google_response(400, "INVALID_ARGUMENT", "The prompt violates Google's Responsible AI practices."),
            errors.ContentPolicyError,
            "content_policy_violation",
        ),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), errors.ProviderError, "provider_error"),
    ],
)
def test_googles_error_bodies_through_the_one_table(response, kind, code) -> None:
    error = google_error(response)
    assert type(error) is kind and error.code == code


@pytest.mark.parametrize(
    ("delay", "headers", "expected"),
    [("37s", None, "37"), ("0.4s", None, "1"), ("12.5s", None, "13"), ("37s", {"retry-after": "5"}, "5"), ("soon", None, None)],
)
def test_retry_info_becomes_retry_after_unless_a_header_says(delay, headers, expected) -> None:
    response = google_response(
        429, "RESOURCE_EXHAUSTED", "quota", {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}, headers=headers
    )
    assert google_error(response).headers.get("Retry-After") == expected


def test_keys_never_leak_from_googles_messages() -> None:
    key = "AIzaSyA-real-key-123456789012345678901"
    message = f"API key {key} not valid; also AIzaSyOTHER_key_abcdefghijklmnopqrstuvw"
    error = google_error(google_response(400, "INVALID_ARGUMENT", message), key=key)
    assert "AIza" not in error.message and "[redacted]" in error.message


# -- the provider over a mock transport ---------------------------------------------------------------------------


class Recorder:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answer(request) if callable(self.answer) else self.answer
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)


def provider_with(answer: Any, *, sleep: Any = None) -> tuple[GoogleProvider, Recorder]:
    recorder = Recorder(answer)
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    provider = GoogleProvider(client, base_url="https://google.test/v1beta/", api_key=lambda: "AIza-test", sleep=sleep or (lambda _: None))
    return provider, recorder


def gemini_answer(fmt: str = "PNG") -> dict[str, Any]:
    payload = candidate({"inlineData": {"mimeType": "image/png", "data": b64(image(fmt))}})
    payload["usageMetadata"] = {"promptTokenCount": 2, "candidatesTokenCount": 1290, "totalTokenCount": 1292}
    return payload


def test_n_gemini_images_are_n_calls_with_the_key_and_their_usage_summed() -> None:
    provider, recorder = provider_with(gemini_answer())
    result = provider.generate(plan_for("gemini-2.5-flash-image", n=3), Deadline.after(10))
    assert len(result.images) == 3 and len(recorder.requests) == 3
    assert result.usage == {"input_tokens": 6, "output_tokens": 3870, "total_tokens": 3876}
    for request in recorder.requests:
        assert str(request.url) == "https://google.test/v1beta/models/gemini-2.5-flash-image:generateContent"
        assert request.headers["x-goog-api-key"] == "AIza-test"
        assert json.loads(request.content)["generationConfig"]["responseModalities"] == ["IMAGE"]


def test_one_refused_image_refuses_the_request() -> None:
    calls = iter([gemini_answer(), {"candidates": [{"finishReason": "IMAGE_SAFETY"}]}, gemini_answer()])
    provider, _ = provider_with(lambda _: next(calls))
    with pytest.raises(errors.ContentPolicyError):
        provider.generate(plan_for("gemini-2.5-flash-image", n=3), Deadline.after(10))


@pytest.mark.parametrize(("model", "fmt"), [("gemini-2.5-flash-image", "JPEG"), ("gemini-3.1-flash-image", "PNG")])
def test_bytes_in_another_format_than_planned_are_refused_whatever_the_mime_type_says(model, fmt) -> None:
    provider, _ = provider_with(gemini_answer(fmt))
    with pytest.raises(errors.ProviderError) as caught:
        provider.generate(plan_for(model), Deadline.after(10))
    assert caught.value.code == "provider_bad_response" and fmt in caught.value.message


def test_the_planned_format_passes_even_under_a_wrong_mime_type() -> None:
    provider, _ = provider_with(gemini_answer("JPEG"))  # declared image/png, bytes JPEG: as python-genai #1824 saw
    (result,) = provider.generate(plan_for("gemini-3-pro-image"), Deadline.after(10)).images
    assert result.data.startswith(b"\xff\xd8\xff")


def test_imagen_is_one_predict_call_for_n_images() -> None:
    predictions = [{"bytesBase64Encoded": b64(image("JPEG")), "mimeType": "image/jpeg"} for _ in range(2)]
    provider, recorder = provider_with({"predictions": predictions})
    result = provider.generate(plan_for("imagen-4.0-generate-001", n=2, output_format="jpeg"), Deadline.after(10))
    assert len(result.images) == 2
    (request,) = recorder.requests
    assert request.url.path == "/v1beta/models/imagen-4.0-generate-001:predict"
    assert json.loads(request.content)["parameters"]["sampleCount"] == 2


def test_a_429_waits_googles_retry_delay_then_retries() -> None:
    waits: list[float] = []
    answers = iter(
        [
            google_response(429, "RESOURCE_EXHAUSTED", "quota", {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}),
            gemini_answer(),
        ]
    )
    provider, recorder = provider_with(lambda _: next(answers), sleep=waits.append)
    provider.generate(plan_for("gemini-2.5-flash-image"), Deadline.after(10))
    assert waits == [2.0] and len(recorder.requests) == 2


def test_a_non_json_success_is_a_bad_response() -> None:
    provider, _ = provider_with(httpx.Response(200, text="<html>hi</html>"))
    with pytest.raises(errors.ProviderError) as caught:
        provider.generate(plan_for("gemini-2.5-flash-image"), Deadline.after(10))
    assert caught.value.code == "provider_bad_response"


def test_edits_are_not_made_here() -> None:
    provider, recorder = provider_with(gemini_answer())
    edit = plan_for("gemini-2.5-flash-image").model_copy(update={"operation": "edit"})
    with pytest.raises(errors.ProviderError) as caught:
        provider.generate(edit, Deadline.after(10))
    assert caught.value.code == "unsupported_operation" and recorder.requests == []
