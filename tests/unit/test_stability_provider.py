"""The Stability AI provider against httpx.MockTransport: the endpoint and model encoding, the size -> aspect ratio
mapping of every catalog size, the multipart body, one call per image, refusals and the error table with
Stability's own error bodies."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from functions.api.multipart import parse_form
from imagegen import errors
from imagegen.deadline import Deadline
from imagegen.options import ImageGenerationRequest
from imagegen.planning import GenerationPlan, plan
from imagegen.providers.stability import StabilityProvider, build_fields, endpoint_and_model, parse_image, stability_error
from imagegen.specs import catalog, catalog_spec

KEY = "sk-unit0stability0key0000"
BASE = "https://api.stability.ai"
PNG = b"\x89PNG\r\n\x1a\nfake"
MODELS = ("stable-image-ultra", "stable-image-core", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium")

Handler = Callable[[httpx.Request], httpx.Response]


def make_plan(model: str = "stable-image-ultra", **fields: Any) -> GenerationPlan:
    spec = catalog_spec(model)
    assert spec is not None
    return plan(spec, ImageGenerationRequest.model_validate({"prompt": "a red fox", "response_format": "url", **fields}))


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"image": base64.b64encode(PNG).decode(), "finish_reason": "SUCCESS", "seed": 7})


class Recorder:
    def __init__(self, *answers: Handler) -> None:
        self.answers = list(answers) or [ok]
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        return answer(request)


def provider(handler: Handler, *, key: str = KEY, max_retries: int = 2) -> tuple[StabilityProvider, list[float]]:
    slept: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return StabilityProvider(client, base_url=BASE + "/", api_key=lambda: key, max_retries=max_retries, sleep=slept.append), slept


def fields_of(request: httpx.Request) -> dict[str, object]:
    form = parse_form(request.read(), request.headers["content-type"])
    assert form.files == {}  # text parts only
    return form.fields


def error_response(status: int, name: str, *messages: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"id": "a1b2c3", "name": name, "errors": list(messages)}, headers=headers)


# -- the catalog and the request ------------------------------------------------------------------------------------


def test_the_catalog_serves_the_five_models_on_their_endpoints() -> None:
    models = {spec.id: spec for spec in catalog().of("stability")}
    assert list(models) == list(MODELS)
    assert {spec.family for spec in models.values()} == {"stability-platform"}
    assert {model: endpoint_and_model(spec.provider_model) for model, spec in models.items()} == {
        "stable-image-ultra": ("ultra", None),
        "stable-image-core": ("core", None),
        "sd3.5-large": ("sd3", "sd3.5-large"),
        "sd3.5-large-turbo": ("sd3", "sd3.5-large-turbo"),
        "sd3.5-medium": ("sd3", "sd3.5-medium"),
    }


@pytest.mark.parametrize("bad", ["sd3", "core/sd3.5-large", "edit/inpaint", "", "ultra/"])
def test_a_provider_model_that_is_no_stability_endpoint_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Stability endpoint"):
        endpoint_and_model(bad)


SIZES = {
    "1024x1024": "1:1",
    "1280x720": "16:9",
    "720x1280": "9:16",
    "1536x1024": "3:2",
    "1024x1536": "2:3",
    "1024x1280": "4:5",
    "1280x1024": "5:4",
    "1344x576": "21:9",
    "576x1344": "9:21",
}


@pytest.mark.parametrize("model", MODELS)
def test_every_catalog_size_is_one_of_stabilitys_nine_ratios(model: str) -> None:
    spec = catalog_spec(model)
    assert spec is not None and set(spec.sizes) == set(SIZES)
    for size, ratio in SIZES.items():
        assert dict(build_fields(make_plan(model, size=size)))["aspect_ratio"] == ratio


def test_the_fields_core_and_sd3() -> None:
    assert build_fields(make_plan("stable-image-core", size="1280x720", output_format="webp")) == [
        ("prompt", "a red fox"),
        ("aspect_ratio", "16:9"),
        ("output_format", "webp"),
    ]
    assert build_fields(make_plan("sd3.5-medium", output_format="jpeg")) == [
        ("prompt", "a red fox"),
        ("aspect_ratio", "1:1"),
        ("output_format", "jpeg"),
        ("model", "sd3.5-medium"),
    ]


def test_one_call_sends_the_key_json_accept_and_a_multipart_form() -> None:
    recorder = Recorder()
    result = provider(recorder)[0].generate(make_plan("sd3.5-large", size="1024x1536", safety_identifier="user-42"), Deadline.after(10))
    assert [image.data for image in result.images] == [PNG]
    (request,) = recorder.requests
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/v2beta/stable-image/generate/sd3")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["stability-client-id"] == "imagegen-serverless"
    assert request.headers["stability-client-user-id"] == "user-42"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert fields_of(request) == {"prompt": "a red fox", "aspect_ratio": "2:3", "output_format": "png", "model": "sd3.5-large"}


def test_n_images_are_n_calls_answered_in_order() -> None:
    counter = iter(range(100))
    lock = threading.Lock()

    def numbered(request: httpx.Request) -> httpx.Response:
        with lock:
            number = next(counter)
        return httpx.Response(200, json={"image": base64.b64encode(PNG + bytes([number])).decode(), "finish_reason": "SUCCESS"})

    recorder = Recorder(numbered)
    result = provider(recorder)[0].generate(make_plan(n=4), Deadline.after(10))
    assert len(recorder.requests) == 4 and len(result.images) == 4
    assert sorted(image.data[-1] for image in result.images) == [0, 1, 2, 3]
    assert "stability-client-user-id" not in recorder.requests[0].headers


def test_one_failing_call_of_several_fails_the_request() -> None:
    answers = iter([ok, lambda request: error_response(403, "content_moderation", "flagged"), ok])
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            answer = next(answers)
        return answer(request)

    with pytest.raises(errors.ContentPolicyError):
        provider(handler)[0].generate(make_plan(n=3), Deadline.after(10))


def test_only_generations() -> None:
    edit = make_plan().model_copy(update={"operation": "edit"})
    with pytest.raises(errors.ProviderError) as caught:
        provider(Recorder())[0].generate(edit, Deadline.after(10))
    assert caught.value.code == "unsupported_operation"


# -- answers ---------------------------------------------------------------------------------------------------------


def test_a_filtered_image_is_a_content_policy_refusal() -> None:
    blurred = httpx.Response(200, json={"image": base64.b64encode(PNG).decode(), "finish_reason": "CONTENT_FILTERED", "seed": 1})
    with pytest.raises(errors.ContentPolicyError) as caught:
        parse_image(blurred)
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (400, "content_policy_violation", "prompt")


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"finish_reason": "SUCCESS", "seed": 1}),
        httpx.Response(200, json={"image": "", "finish_reason": "SUCCESS"}),
        httpx.Response(200, json={"image": "not base64!", "finish_reason": "SUCCESS"}),
        httpx.Response(200, json={"image": base64.b64encode(PNG).decode(), "finish_reason": "ERROR"}),
        httpx.Response(200, json=["image"]),
        httpx.Response(200, content=PNG, headers={"content-type": "image/png"}),
    ],
)
def test_an_answer_without_a_usable_image_is_a_bad_response(answer: httpx.Response) -> None:
    with pytest.raises(errors.ProviderError) as caught:
        parse_image(answer)
    assert caught.value.code == "provider_bad_response"


# -- the error table -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "kind", "status", "code", "param"),
    [
        (
            error_response(400, "bad_request", "aspect_ratio: must be one of 16:9, 1:1"),
            errors.InvalidRequestError,
            400,
            "bad_request",
            "size",
        ),
        (error_response(400, "bad_request", "prompt: cannot be empty"), errors.InvalidRequestError, 400, "bad_request", "prompt"),
        (error_response(400, "bad_request", "something odd"), errors.InvalidRequestError, 400, "bad_request", None),
        (error_response(401, "unauthorized", "authorization: invalid or missing header value"), None, 502, "provider_auth_failed", None),
        (error_response(402, "payment_required", "You lack sufficient credits"), None, 502, "provider_quota_exceeded", None),
        (
            error_response(403, "content_moderation", "Your request was flagged"),
            errors.ContentPolicyError,
            400,
            "content_policy_violation",
            "prompt",
        ),
        (error_response(403, "forbidden", "This key may not use this service"), None, 502, "provider_auth_failed", None),
        (error_response(404, "not_found", "no such endpoint"), None, 502, "provider_model_unavailable", None),
        (error_response(413, "payload_too_large", "body: at most 10MiB"), errors.PayloadTooLargeError, 413, "payload_too_large", None),
        (
            error_response(422, "invalid_language", "English is the only supported language"),
            errors.InvalidRequestError,
            400,
            "invalid_language",
            None,
        ),
        (error_response(429, "rate_limit_exceeded", "150 requests per 10 s"), errors.RateLimitError, 429, "rate_limit_exceeded", None),
        (error_response(500, "internal_error", "try again later"), errors.ProviderError, 502, "provider_error", None),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), errors.ProviderError, 502, "provider_error", None),
    ],
)
def test_stabilitys_error_bodies_through_the_one_status_table(response, kind, status, code, param) -> None:
    error = stability_error(response)
    if kind is not None:
        assert isinstance(error, kind)
    assert (error.status_code, error.code, error.param) == (status, code, param)


def test_the_message_is_the_errors_joined() -> None:
    error = stability_error(error_response(400, "bad_request", "prompt: cannot be empty", "seed: must be at most 4294967294"))
    assert error.message == "prompt: cannot be empty; seed: must be at most 4294967294"


def test_a_429_keeps_retry_after() -> None:
    error = stability_error(error_response(429, "rate_limit_exceeded", "slow down", headers={"retry-after": "3"}))
    assert isinstance(error, errors.RateLimitError) and error.headers["Retry-After"] == "3"


def test_the_key_never_reaches_a_message() -> None:
    odd_key = "0123456789abcdef0123456789abcdef"  # not shaped like a key: replaced because it is the key

    def echo(request: httpx.Request) -> httpx.Response:
        return error_response(400, "bad_request", f"authorization: {KEY} and {odd_key} are not valid")

    for key in (KEY, odd_key):
        with pytest.raises(errors.InvalidRequestError) as caught:
            provider(echo, key=key)[0].generate(make_plan(), Deadline.after(10))
        assert key not in caught.value.message and "[redacted]" in caught.value.message


# -- retries ---------------------------------------------------------------------------------------------------------


def test_a_429_is_retried_after_retry_after_then_succeeds() -> None:
    recorder = Recorder(lambda request: error_response(429, "rate_limit_exceeded", "slow down", headers={"retry-after": "1"}), ok)
    prov, slept = provider(recorder)
    assert len(prov.generate(make_plan(), Deadline.after(10)).images) == 1
    assert len(recorder.requests) == 2 and slept == [1.0]
    assert fields_of(recorder.requests[0]) == fields_of(recorder.requests[1])  # the whole form sent again


def test_a_500_is_retried_max_retries_times() -> None:
    recorder = Recorder(lambda request: error_response(500, "internal_error", "oops"))
    with pytest.raises(errors.ProviderError):
        provider(recorder, max_retries=2)[0].generate(make_plan(), Deadline.after(10))
    assert len(recorder.requests) == 3


@pytest.mark.parametrize(
    "answer",
    [
        lambda request: error_response(400, "bad_request", "prompt: cannot be empty"),
        lambda request: error_response(403, "content_moderation", "flagged"),
        lambda request: error_response(401, "unauthorized", "bad key"),
        lambda request: httpx.Response(200, json={"image": base64.b64encode(PNG).decode(), "finish_reason": "CONTENT_FILTERED"}),
    ],
)
def test_what_no_retry_can_fix_is_sent_once(answer: Handler) -> None:
    recorder = Recorder(answer)
    with pytest.raises(errors.ImageGenError):
        provider(recorder)[0].generate(make_plan(), Deadline.after(10))
    assert len(recorder.requests) == 1


def test_a_timeout_is_a_provider_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(errors.ProviderTimeoutError):
        provider(slow)[0].generate(make_plan(), Deadline.after(10))
