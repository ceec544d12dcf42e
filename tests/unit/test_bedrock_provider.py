"""Bedrock request bodies (golden), size rules, batching and the error table, with a stub client (no sockets)."""

from __future__ import annotations

import base64
import io
import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from imagegen.deadline import Deadline
from imagegen.errors import (
    ContentPolicyError,
    InvalidRequestError,
    ProviderConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from imagegen.options import ImageGenerationRequest
from imagegen.providers.bedrock import BedrockProvider, amazon_body, aspect_ratio, client_error, stability_body, transport_error
from imagegen.providers.local import draw
from imagegen.registry import build_registry
from imagegen.specs import catalog

REGISTRY = build_registry(openai_enabled=False, default_model=None, bedrock_enabled=True)
NOVA, TITAN, CORE = "amazon.nova-canvas-v1:0", "amazon.titan-image-generator-v2:0", "stability.stable-image-core-v1:1"


def plan(**fields: Any):
    return REGISTRY.plan(ImageGenerationRequest(**{"prompt": "a cat", **fields}))


def test_nova_body_golden() -> None:
    assert amazon_body(plan(model=NOVA, size="1280x720", quality="hd", n=3), 3, seed=42) == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a cat"},
        "imageGenerationConfig": {"numberOfImages": 3, "width": 1280, "height": 720, "cfgScale": 6.5, "seed": 42, "quality": "premium"},
    }


def test_titan_body_golden() -> None:
    assert amazon_body(plan(model=TITAN, size="1173x640"), 1, seed=7)["imageGenerationConfig"] == {
        "numberOfImages": 1,
        "width": 1173,
        "height": 640,
        "cfgScale": 8.0,
        "seed": 7,
        "quality": "standard",
    }


def test_stability_body_golden() -> None:
    body = stability_body(plan(model=CORE, size="1280x720", output_format="jpeg"), seed=9)
    assert body == {"prompt": "a cat", "aspect_ratio": "16:9", "output_format": "jpeg", "seed": 9}


def test_every_stability_size_is_exactly_an_aspect_ratio() -> None:
    ratios = {aspect_ratio(*map(int, size.split("x"))) for size in catalog()["stability.sd3-5-large-v1:0"].sizes}
    assert ratios == {"1:1", "16:9", "9:16", "3:2", "2:3", "4:5", "5:4", "21:9", "9:21"}


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (NOVA, {"size": "2048x1024", "n": 5}),
        (NOVA, {"size": "320x1280"}),
        (NOVA, {"size": "2560x1440"}),
        (NOVA, {"prompt": "p" * 1024, "quality": "standard"}),
        (TITAN, {"size": "704x320", "quality": "hd"}),
        (TITAN, {"prompt": "p" * 512}),
        (CORE, {"size": "576x1344", "n": 4, "output_format": "jpeg", "response_format": "b64_json"}),
    ],
)
def test_accepted(model: str, fields: dict[str, Any]) -> None:
    assert plan(model=model, **fields).model.id == model


@pytest.mark.parametrize(
    ("model", "fields", "param", "text"),
    [
        (NOVA, {"size": "1000x1000"}, "size", "multiples of 16"),
        (NOVA, {"size": "304x1024"}, "size", "at least 320"),
        (NOVA, {"size": "4096x1024"}, "size", "at most 4194303 pixels"),
        (NOVA, {"size": "2048x2048"}, "size", "at most 4194303 pixels"),
        (NOVA, {"size": "1600x320"}, "size", "1:4 and 4:1"),
        (NOVA, {"n": 6}, "n", "between 1 and 5"),
        (NOVA, {"quality": "high"}, "quality", "'standard', 'hd'"),
        (NOVA, {"style": "vivid"}, "style", "not supported"),
        (NOVA, {"prompt": "p" * 1025}, "prompt", "1024"),
        (TITAN, {"size": "1792x1024"}, "size", "'1173x640'"),
        (TITAN, {"prompt": "p" * 513}, "prompt", "512"),
        (CORE, {"size": "1792x1024"}, "size", "'1344x576'"),
        (CORE, {"quality": "hd"}, "quality", "not supported"),
        (CORE, {"n": 5}, "n", "between 1 and 4"),
        (CORE, {"output_format": "webp"}, "output_format", "'png', 'jpeg'"),
    ],
)
def test_rejected_with_the_allowed_values(model: str, fields: dict[str, Any], param: str, text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        plan(model=model, **fields)
    assert caught.value.param == param and text in caught.value.message


class StubBody(io.BytesIO):
    pass


class StubClient:
    """Records invoke_model calls and answers like Bedrock (or raises what a test sets)."""

    def __init__(self, answer=None, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answer = answer
        self.error = error
        self.lock = threading.Lock()

    def invoke_model(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.calls.append({**kwargs, "body": json.loads(kwargs["body"])})
        if self.error is not None:
            raise self.error
        body = self.calls[-1]["body"]
        payload = self.answer(body) if self.answer else self.amazon(body)
        return {"body": StubBody(json.dumps(payload).encode())}

    @staticmethod
    def amazon(body: dict[str, Any]) -> dict[str, Any]:
        config = body["imageGenerationConfig"]
        image = base64.b64encode(draw("x", config["width"], config["height"])).decode()
        return {"images": [image] * config["numberOfImages"], "error": None}


def test_more_than_five_images_are_drawn_in_calls_of_at_most_five() -> None:
    client = StubClient()
    spec = REGISTRY.get(NOVA).model_copy(update={"max_n": 10})
    request_plan = plan(model=NOVA, size="512x512", n=5).model_copy(update={"model": spec, "n": 7})
    result = BedrockProvider(client, seed=lambda upper: 1).generate(request_plan, Deadline.after(10))
    assert len(result.images) == 7
    assert sorted(call["body"]["imageGenerationConfig"]["numberOfImages"] for call in client.calls) == [2, 5]
    assert {call["modelId"] for call in client.calls} == {NOVA}
    assert {(call["contentType"], call["accept"]) for call in client.calls} == {("application/json", "application/json")}


def test_stability_makes_one_call_per_image() -> None:
    image = base64.b64encode(draw("x", 8, 8)).decode()
    client = StubClient(answer=lambda body: {"images": [image], "finish_reasons": [None], "seeds": [body["seed"]]})
    seeds = iter(range(100))
    result = BedrockProvider(client, seed=lambda upper: next(seeds)).generate(plan(model=CORE, n=3, size="1024x1024"), Deadline.after(10))
    assert len(result.images) == 3
    assert sorted(call["body"]["seed"] for call in client.calls) == [0, 1, 2]


def test_stability_filter_reason_is_a_content_policy_error() -> None:
    client = StubClient(answer=lambda body: {"images": [""], "finish_reasons": ["Filter reason: output image"], "seeds": [1]})
    with pytest.raises(ContentPolicyError, match="Filter reason"):
        BedrockProvider(client).generate(plan(model=CORE, size="1024x1024"), Deadline.after(10))


def test_amazon_error_field_is_a_content_policy_error() -> None:
    client = StubClient(answer=lambda body: {"images": [], "error": "blocked by our content filters"})
    with pytest.raises(ContentPolicyError):
        BedrockProvider(client).generate(plan(model=TITAN, size="512x512"), Deadline.after(10))


def test_wrong_image_count_is_a_bad_response() -> None:
    client = StubClient(answer=lambda body: {"images": [], "error": None})
    with pytest.raises(ProviderError) as caught:
        BedrockProvider(client).generate(plan(model=TITAN, size="512x512"), Deadline.after(10))
    assert caught.value.code == "provider_bad_response"


def test_no_time_left_calls_nothing() -> None:
    client = StubClient()
    with pytest.raises(ProviderTimeoutError):
        BedrockProvider(client).generate(plan(model=NOVA, size="512x512"), Deadline.after(0))
    assert client.calls == []


# Bedrock's own messages (InvokeModel): a model offered only through a cross-Region inference profile, and a model
# whose access is not granted to the account.
ON_DEMAND = (
    "Invocation of model ID amazon.nova-canvas-v1:0 with on-demand throughput isn\u2019t supported. Retry your request "
    "with the ID or ARN of an inference profile that contains this model."
)
MODEL_ACCESS = "You don't have access to the model with the specified model ID."


def bedrock_error(code: str, message: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "InvokeModel")


@pytest.mark.parametrize(
    ("code", "message", "expected", "our_code"),
    [
        ("ThrottlingException", "Too many requests", RateLimitError, "rate_limit_exceeded"),
        ("ValidationException", "Malformed input request", InvalidRequestError, "invalid_value"),
        ("ValidationException", "This request has been blocked by our content filters.", ContentPolicyError, "content_policy_violation"),
        ("AccessDeniedException", MODEL_ACCESS, ProviderConfigurationError, "provider_auth_failed"),
        ("ValidationException", ON_DEMAND, ProviderConfigurationError, "provider_inference_profile_required"),
        ("ValidationException", ON_DEMAND.replace("\u2019", "'"), ProviderConfigurationError, "provider_inference_profile_required"),
        ("ValidationException", "The provided model identifier is invalid.", ProviderConfigurationError, "provider_model_unavailable"),
        ("ModelTimeoutException", "timed out", ProviderTimeoutError, "provider_timeout"),
        ("ServiceUnavailableException", "unavailable", ProviderError, "provider_error"),
        ("InternalServerException", "internal", ProviderError, "provider_error"),
        ("ModelErrorException", "model error", ProviderError, "provider_error"),
        ("ResourceNotFoundException", "not found", ProviderConfigurationError, "provider_model_unavailable"),
        ("UnrecognizedClientException", "bad token", ProviderConfigurationError, "provider_auth_failed"),
        ("InvalidSignatureException", "bad signature", ProviderConfigurationError, "provider_auth_failed"),
        ("ExpiredTokenException", "The security token included in the request is expired", ProviderError, "provider_credentials_expired"),
        ("SomethingNewException", "new", ProviderError, "provider_error"),
    ],
)
def test_client_error_table(code: str, message: str, expected: type, our_code: str) -> None:
    error = client_error(bedrock_error(code, message))
    assert type(error) is expected and error.code == our_code
    # What no retry can fix says so (OpenAI SDKs honour x-should-retry) and fails a job at once.
    configuration = expected is ProviderConfigurationError
    assert error.retryable is (not configuration and expected is not InvalidRequestError and expected is not ContentPolicyError)
    assert (error.headers.get("x-should-retry") == "false") is configuration


def test_content_policy_is_400_as_openai_answers_it() -> None:
    error = client_error(bedrock_error("ValidationException", "This request has been blocked by our content filters."))
    assert (error.status_code, error.code, error.param) == (400, "content_policy_violation", "prompt")


def test_transport_errors() -> None:
    assert isinstance(transport_error(ReadTimeoutError(endpoint_url="http://x")), ProviderTimeoutError)
    unreachable = transport_error(ConnectTimeoutError(endpoint_url="http://x"))
    assert (type(unreachable), unreachable.code) == (ProviderError, "provider_unreachable")


def test_client_errors_raised_by_boto3_are_mapped() -> None:
    client = StubClient(error=bedrock_error("ThrottlingException", "slow down", 429))
    with pytest.raises(RateLimitError):
        BedrockProvider(client).generate(plan(model=NOVA, size="512x512"), Deadline.after(10))


def test_an_inference_profile_is_invoked_by_its_own_id_with_the_base_models_body() -> None:
    """A cross-Region inference profile ``us.<model id>``: Bedrock needs the profile's id as modelId (a model served
    only through profiles answers "on-demand throughput isn't supported" to its bare id); the body is the model's."""
    registry = build_registry(openai_enabled=False, default_model=None, bedrock_models=[f"us.{TITAN}", f"eu.{CORE}"])
    titan = registry.plan(ImageGenerationRequest(prompt="a cat", model=f"us.{TITAN}", size="1173x640"))
    client = StubClient()
    BedrockProvider(client, seed=lambda _: 7).generate(titan, Deadline.after(10))
    (call,) = client.calls
    assert call["modelId"] == f"us.{TITAN}"
    assert call["body"] == amazon_body(plan(model=TITAN, size="1173x640"), 1, seed=7)  # cfgScale 8.0: Titan's own
    core = registry.plan(ImageGenerationRequest(prompt="a cat", model=f"eu.{CORE}", size="1280x720"))
    assert (core.model.family, core.model.provider_model) == ("stability", f"eu.{CORE}")
