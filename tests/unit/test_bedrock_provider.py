"""Bedrock request bodies (golden; edits and variations too), size and input rules, batching and the error table, with a
stub client (no sockets)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from PIL import Image as PILImage

from imagegen import planning
from imagegen.deadline import Deadline
from imagegen.errors import (
    ContentPolicyError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from imagegen.options import ImageGenerationRequest
from imagegen.planning import GenerationPlan
from imagegen.providers import bedrock
from imagegen.providers.bedrock import (
    BedrockProvider,
    amazon_body,
    amazon_task,
    aspect_ratio,
    client_error,
    stability_body,
    transport_error,
)
from imagegen.providers.local import draw
from imagegen.registry import build_registry
from imagegen.specs import ModelSpec, catalog
from tests.fakes.bedrock_server import edit_plan, openai_mask, picture, variation_plan

REGISTRY = build_registry(openai_enabled=False, default_model=None, bedrock_enabled=True)
NOVA, TITAN, CORE = "amazon.nova-canvas-v1:0", "amazon.titan-image-generator-v2:0", "stability.stable-image-core-v1:1"
INPAINT = "stability.stable-image-inpaint-v1:0"
# Stability AI Image Services, Control: one image and a prompt, no mask.
STRUCTURE, SKETCH = "stability.stable-image-control-structure-v1:0", "stability.stable-image-control-sketch-v1:0"
STYLE_GUIDE = "stability.stable-image-style-guide-v1:0"
CONTROL = (STRUCTURE, SKETCH, STYLE_GUIDE)


def plan(**fields: Any):
    request = ImageGenerationRequest(**{"prompt": "a cat", **fields})
    if request.model == TITAN:
        # Retired on 2026-06-30 (its AWS model card), so the registry refuses it before any call; its body is still
        # what the provider builds from its catalog rules, tested here on the spec itself.
        return planning.plan(catalog()[TITAN], request)
    return REGISTRY.plan(request)


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
        # Inpainting has no width/height (it answers at the input's size): a small image stands in.
        image = base64.b64encode(draw("x", config.get("width", 8), config.get("height", 8))).decode()
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


def test_an_inference_profile_is_invoked_by_its_own_id_with_the_base_models_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cross-Region inference profile ``us.<model id>``: Bedrock needs the profile's id as modelId (a model served
    only through profiles answers "on-demand throughput isn't supported" to its bare id); the body is the model's."""
    monkeypatch.setitem(bedrock.CFG_SCALE, NOVA, 7.25)  # a value of the base model's own, to see it looked up
    registry = build_registry(openai_enabled=False, default_model=None, bedrock_models=[f"us.{NOVA}", f"eu.{CORE}"])
    nova = registry.plan(ImageGenerationRequest(prompt="a cat", model=f"us.{NOVA}", size="1280x720"))
    client = StubClient()
    BedrockProvider(client, seed=lambda _: 7).generate(nova, Deadline.after(10))
    (call,) = client.calls
    assert call["modelId"] == f"us.{NOVA}"
    assert call["body"] == amazon_body(plan(model=NOVA, size="1280x720"), 1, seed=7)
    assert call["body"]["imageGenerationConfig"]["cfgScale"] == 7.25
    core = registry.plan(ImageGenerationRequest(prompt="a cat", model=f"eu.{CORE}", size="1280x720"))
    assert (core.model.family, core.model.provider_model) == ("stability", f"eu.{CORE}")


# --- edits and variations (Nova Canvas, Titan v2) ---------------------------------------------------------------------


def png(width: int, height: int, mode: str = "RGB", colour: tuple[int, ...] = (200, 40, 40)) -> bytes:
    return picture(width, height, colour, mode=mode)


def jpeg(width: int, height: int) -> bytes:
    return picture(width, height, (10, 90, 200), image_format="JPEG")


def _spec(model: str) -> ModelSpec:
    """The served model, or Titan v2's catalog entry (retired, see plan())."""
    return catalog()[TITAN] if model == TITAN else REGISTRY.get(model)


def edit(model: str, *images: bytes, mask: bytes | None = None, **fields: Any) -> GenerationPlan:
    return edit_plan(_spec(model), *images, mask=mask, **fields)


def variation(model: str, image: bytes, **fields: Any) -> GenerationPlan:
    return variation_plan(_spec(model), image, **fields)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


IMAGE = png(384, 320)
MASK = openai_mask(384, 320, (100, 50, 200, 150))


def test_an_edit_with_a_mask_is_inpainting_of_the_image_with_bedrocks_black_and_white_mask() -> None:
    body = amazon_body(edit(NOVA, IMAGE, mask=MASK, quality="hd", n=2), 2, seed=42)
    assert body["taskType"] == "INPAINTING" and set(body) == {"taskType", "inPaintingParams", "imageGenerationConfig"}
    params = body["inPaintingParams"]
    assert set(params) == {"image", "maskImage", "text"}
    assert (params["image"], params["text"]) == (b64(IMAGE), "add a red hat")
    # Inpainting answers at the input's size: no width/height in the config.
    assert body["imageGenerationConfig"] == {"numberOfImages": 2, "cfgScale": 6.5, "seed": 42, "quality": "premium"}
    mask = PILImage.open(io.BytesIO(base64.b64decode(params["maskImage"], validate=True)))
    assert (mask.format, mask.mode, mask.size) == ("PNG", "RGB", (384, 320))
    # Black (0 0 0) is inside Bedrock's mask, the area changed: exactly OpenAI's transparent rectangle.
    assert mask.crop((100, 50, 200, 150)).getcolors() == [(100 * 100, (0, 0, 0))]
    assert sorted(mask.getcolors() or []) == [(100 * 100, (0, 0, 0)), (384 * 320 - 100 * 100, (255, 255, 255))]


def test_titan_inpainting_keeps_its_own_cfg_scale() -> None:
    body = amazon_body(edit(TITAN, jpeg(512, 512), mask=openai_mask(512, 512, (0, 0, 10, 10))), 1, seed=3)
    assert body["taskType"] == "INPAINTING"
    assert body["imageGenerationConfig"] == {"numberOfImages": 1, "cfgScale": 8.0, "seed": 3, "quality": "standard"}


def test_an_edit_without_a_mask_is_an_image_variation_of_every_image_with_the_prompt_at_the_inputs_size() -> None:
    second = jpeg(640, 480)
    request_plan = edit(NOVA, IMAGE, second)
    assert (request_plan.size, request_plan.width, request_plan.height) == ("384x320", 384, 320)
    body = amazon_body(request_plan, 1, seed=5)
    assert body == {
        "taskType": "IMAGE_VARIATION",
        "imageVariationParams": {"images": [b64(IMAGE), b64(second)], "text": "add a red hat"},
        "imageGenerationConfig": {"numberOfImages": 1, "width": 384, "height": 320, "cfgScale": 6.5, "seed": 5, "quality": "standard"},
    }


def test_a_variation_is_an_image_variation_without_text_at_the_size_asked() -> None:
    body = amazon_body(variation(TITAN, IMAGE, size="768x768"), 1, seed=9)
    assert body == {
        "taskType": "IMAGE_VARIATION",
        "imageVariationParams": {"images": [b64(IMAGE)]},
        "imageGenerationConfig": {"numberOfImages": 1, "width": 768, "height": 768, "cfgScale": 8.0, "seed": 9, "quality": "standard"},
    }
    assert variation(NOVA, IMAGE).size == "1024x1024"  # the model's default size, not the input's


def test_the_mask_is_converted_once_for_all_calls_of_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    conversions: list[bool] = []
    real = bedrock.alpha_mask_to_black_white

    def counting(mask_png: bytes, *, edit_is_black: bool) -> bytes:
        conversions.append(edit_is_black)
        return real(mask_png, edit_is_black=edit_is_black)

    monkeypatch.setattr(bedrock, "alpha_mask_to_black_white", counting)
    spec = REGISTRY.get(NOVA).model_copy(update={"max_n": 10})
    request_plan = edit(NOVA, IMAGE, mask=MASK, n=5).model_copy(update={"model": spec, "n": 7})
    client = StubClient()
    result = BedrockProvider(client, seed=lambda upper: 1).generate(request_plan, Deadline.after(10))
    assert len(result.images) == 7
    assert sorted(call["body"]["imageGenerationConfig"]["numberOfImages"] for call in client.calls) == [2, 5]
    assert {call["body"]["taskType"] for call in client.calls} == {"INPAINTING"}
    assert len({call["body"]["inPaintingParams"]["maskImage"] for call in client.calls}) == 1
    assert conversions == [True]


def test_amazon_task_of_a_generation_is_text_image() -> None:
    assert amazon_task(plan(model=NOVA, prompt="a fox")) == {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a fox"}}


def test_a_stability_edit_is_an_unsupported_operation_without_a_call() -> None:
    client = StubClient()
    stability_edit = plan(model=CORE, size="1024x1024").model_copy(update={"operation": "edit"})
    with pytest.raises(ProviderError) as caught:
        BedrockProvider(client).generate(stability_edit, Deadline.after(10))
    assert caught.value.code == "unsupported_operation" and client.calls == []


def test_the_catalog_gives_edits_and_variations_to_the_amazon_models_only() -> None:
    for model in (NOVA, TITAN):
        spec = catalog()[model]
        assert spec.edits is not None and spec.variations is not None
        assert (spec.edits.mask, spec.edits.max_images, spec.edits.max_images_with_mask, spec.edits.output_follows_input) == (
            True,
            5,
            1,
            True,
        )
        assert (spec.variations.max_images, spec.variations.output_follows_input) == (1, False)
        assert spec.edits.formats == spec.variations.formats == ("png", "jpeg")
    for spec in catalog().of("bedrock"):
        if spec.family == "stability" and spec.id not in (INPAINT, *CONTROL):
            assert spec.edits is None and spec.variations is None
    inpaint = catalog()[INPAINT]
    assert inpaint.variations is None and inpaint.edits is not None
    assert (inpaint.edits.mask, inpaint.edits.max_images, inpaint.edits.output_follows_input) == (True, 1, True)
    assert inpaint.max_output_pixels == 4_194_304  # "the output will be provided at 4mp": the worst case planned


def test_stable_image_inpaint_body_golden() -> None:
    """AWS's sample notebook: {image, mask, prompt, output_format, seed}; the mask white where OpenAI's is transparent."""
    image = picture(384, 320)
    body = bedrock.stability_service_body(edit(INPAINT, image, mask=openai_mask(384, 320, (100, 50, 200, 150))), seed=5)
    assert set(body) == {"image", "mask", "prompt", "output_format", "seed"}
    assert (body["image"], body["prompt"], body["output_format"], body["seed"]) == (b64(image), "add a red hat", "png", 5)
    mask = PILImage.open(io.BytesIO(base64.b64decode(body["mask"])))
    assert (mask.mode, mask.size) == ("RGB", (384, 320))
    assert sorted(mask.getcolors() or []) == [(100 * 100, (255, 255, 255)), (384 * 320 - 100 * 100, (0, 0, 0))]
    assert mask.getpixel((150, 100)) == (255, 255, 255) and mask.getpixel((0, 0)) == (0, 0, 0)


def test_stable_image_inpaint_makes_n_calls_under_the_profile_id() -> None:
    registry = build_registry(openai_enabled=False, default_model=None, bedrock_models=[f"us.{INPAINT}"])
    planned = edit_plan(registry.get(f"us.{INPAINT}"), picture(384, 320), mask=openai_mask(384, 320, (0, 0, 10, 10)), n=3)
    client = StubClient(answer=lambda body: {"images": [b64(picture(384, 320))], "finish_reasons": [None], "seeds": [body["seed"]]})
    result = BedrockProvider(client).generate(planned, Deadline.after(10))
    assert len(result.images) == 3
    assert [call["modelId"] for call in client.calls] == [f"us.{INPAINT}"] * 3
    assert len({call["body"]["seed"] for call in client.calls}) == 3  # a seed per call, never the same image


@pytest.mark.parametrize(
    ("make", "param"),
    [
        (lambda: planning.plan(catalog()[INPAINT], ImageGenerationRequest(prompt="a cat")), "model"),
        (lambda: edit(INPAINT, picture(384, 320)), "mask"),
    ],
)
def test_stable_image_inpaint_refuses_all_but_masked_edits_before_any_call(make: Any, param: str) -> None:
    client = StubClient()
    with pytest.raises(InvalidRequestError) as caught:
        BedrockProvider(client).generate(make(), Deadline.after(10))
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (400, "unsupported_operation", param)
    assert client.calls == []


@pytest.mark.parametrize("model", [STRUCTURE, SKETCH])
def test_control_structure_and_sketch_bodies_golden(model: str) -> None:
    """AWS's sample notebook: {image, prompt, output_format, seed} (control_strength and style_preset left at the
    service's defaults); no size: the output is planned at the input's."""
    image = picture(384, 320)
    planned = edit(model, image, output_format="jpeg")
    assert (planned.width, planned.height) == (384, 320)
    body = bedrock.stability_service_body(planned, seed=9)
    assert body == {"image": b64(image), "prompt": "add a red hat", "output_format": "jpeg", "seed": 9}


@pytest.mark.parametrize(("size", "ratio"), [(None, "1:1"), ("1280x720", "16:9"), ("576x1344", "9:21")])
def test_style_guide_body_golden_sends_the_sizes_aspect_ratio(size: str | None, ratio: str) -> None:
    image = picture(384, 320)
    body = bedrock.stability_service_body(edit(STYLE_GUIDE, image, **({"size": size} if size else {})), seed=3)
    assert body == {"image": b64(image), "prompt": "add a red hat", "output_format": "png", "seed": 3, "aspect_ratio": ratio}


def test_the_control_services_are_edits_of_one_image_without_a_mask_in_the_catalog() -> None:
    for model in CONTROL:
        spec = catalog()[model]
        assert spec.variations is None and spec.edits is not None
        assert (spec.edits.mask, spec.edits.max_images) == (False, 1)
        assert spec.edits.output_follows_input is (model != STYLE_GUIDE)
    assert catalog()[STYLE_GUIDE].sizes == catalog()[CORE].sizes  # the nine aspect ratios


@pytest.mark.parametrize("model", CONTROL)
def test_a_control_service_refuses_a_mask_by_name_before_any_call(model: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        edit(model, picture(384, 320), mask=openai_mask(384, 320, (0, 0, 10, 10)))
    assert (caught.value.status_code, caught.value.param) == (400, "mask")
    assert "'mask' is not supported by this model" in caught.value.message


@pytest.mark.parametrize("model", CONTROL)
def test_a_control_service_refuses_a_generation_and_a_second_image_before_any_call(model: str) -> None:
    client = StubClient()
    with pytest.raises(InvalidRequestError) as caught:
        BedrockProvider(client).generate(planning.plan(catalog()[model], ImageGenerationRequest(prompt="a cat")), Deadline.after(10))
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (400, "unsupported_operation", "model")
    with pytest.raises(InvalidRequestError) as caught:
        edit(model, picture(384, 320), picture(384, 320))
    assert (caught.value.param, "this model takes at most 1" in caught.value.message) == ("image", True)
    assert client.calls == []


def test_a_control_service_makes_n_calls_with_a_seed_each_under_the_profile_id() -> None:
    registry = build_registry(openai_enabled=False, default_model=None, bedrock_models=[f"us.{STYLE_GUIDE}"])
    planned = edit_plan(registry.get(f"us.{STYLE_GUIDE}"), picture(384, 320), n=2, size="1280x720")
    client = StubClient(answer=lambda body: {"images": [b64(picture(1280, 720))], "finish_reasons": [None], "seeds": [body["seed"]]})
    assert len(BedrockProvider(client).generate(planned, Deadline.after(10)).images) == 2
    assert [call["modelId"] for call in client.calls] == [f"us.{STYLE_GUIDE}"] * 2
    assert {call["body"]["aspect_ratio"] for call in client.calls} == {"16:9"}
    assert len({call["body"]["seed"] for call in client.calls}) == 2


def test_a_filtered_inpainting_is_a_content_policy_error() -> None:
    client = StubClient(answer=lambda body: {"images": [""], "finish_reasons": ["Filter reason: input image"], "seeds": [1]})
    with pytest.raises(ContentPolicyError, match="input image"):
        BedrockProvider(client).generate(edit(INPAINT, picture(384, 320), mask=openai_mask(384, 320, (0, 0, 10, 10))), Deadline.after(10))


@pytest.mark.parametrize(
    ("make", "param", "text"),
    [
        (lambda: edit(NOVA, IMAGE, IMAGE, mask=MASK), "image", "with a mask this model takes at most 1"),
        (lambda: edit(NOVA, *[IMAGE] * 6), "image", "at most 5"),
        (lambda: edit(TITAN, png(1472, 704)), "image", "320 to 1408"),
        (lambda: edit(NOVA, png(320, 256)), "image", "320 to 4096"),
        (lambda: edit(NOVA, png(2048, 2064)), "image", "above the model's 4194303 pixels"),
        (lambda: edit(NOVA, png(384, 320, "RGBA", (1, 2, 3, 255)), mask=png(384, 320)), "mask", "alpha channel"),
        (lambda: edit(NOVA, IMAGE, size="1024x1024"), "size", "input image's size"),
        (lambda: edit(NOVA, IMAGE, mask=openai_mask(320, 320, (0, 0, 1, 1))), "mask", "first image's size"),
        (lambda: variation(TITAN, png(4112, 320)), "image", "320 to 4096"),
        (lambda: variation(TITAN, IMAGE, size="1000x1000"), "size", "not supported"),
    ],
)
def test_edit_and_variation_inputs_are_checked_against_the_catalog(make: Any, param: str, text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        make()
    assert caught.value.param == param and text in caught.value.message, caught.value.message


def test_a_gif_or_webp_input_is_refused_for_bedrock() -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (320, 320)).save(buffer, format="WEBP")
    with pytest.raises(InvalidRequestError) as caught:
        edit(NOVA, buffer.getvalue())
    assert caught.value.param == "image" and "PNG or JPEG" in caught.value.message


def test_titan_v2_is_retired_on_its_aws_eol_and_refused_before_any_call() -> None:
    """Its AWS model card: Legacy, EOL June 30, 2026, no successor named. The registry refuses it as 404
    model_retired naming the day (it is not listed either)."""
    assert (catalog()[TITAN].retired_on, catalog()[TITAN].successor) == (dt.date(2026, 6, 30), None)
    with pytest.raises(ModelNotFoundError) as caught:
        REGISTRY.plan(ImageGenerationRequest(prompt="a cat", model=TITAN))
    assert (caught.value.status_code, caught.value.code) == (404, "model_retired")
    assert "retired on 2026-06-30" in caught.value.message
    assert TITAN not in [spec.id for spec in REGISTRY.models]


def test_a_retired_model_without_successor_names_none() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        REGISTRY.plan(ImageGenerationRequest(prompt="a cat", model=TITAN))
    assert "None" not in caught.value.message and "retired on 2026-06-30" in caught.value.message


def test_nova_canvas_is_legacy_but_still_served_and_never_retired_on_a_third_partys_date() -> None:
    """Nova Canvas's Legacy state and 2026-09-30 end of life come from third parties only: marked, shown, served."""
    nova = catalog()[NOVA]
    assert (nova.legacy_on, nova.end_of_life_on, nova.retired_on, nova.lifecycle_unverified) == (
        dt.date(2026, 7, 9),
        dt.date(2026, 9, 30),
        None,
        True,
    )
    assert nova.legacy(dt.date(2026, 12, 3)) and not nova.retired(dt.date(2026, 12, 3))
    assert REGISTRY.plan(ImageGenerationRequest(prompt="a cat", model=NOVA)).model.id == NOVA
