"""Amazon Bedrock image models over boto3 ``bedrock-runtime`` ``invoke_model`` (IAM only, no keys).

Two wire shapes: Amazon's (Nova Canvas, Titan Image Generator v2: up to 5 images per call, more in consecutive
calls) and Stability's (Stable Image Core/Ultra, SD3.5 Large: an aspect ratio, one image per call, so ``n`` calls
run concurrently; text-to-image; and four of Stability AI Image Services for edits, below). Every call is bounded by
the request's deadline; Bedrock's errors become ours here, in one table. Titan Image Generator v2 is retired (the
registry refuses it before any call); its body stays for its catalog entry.

Amazon's task per operation (Amazon Nova user guide, "Request and response structure for image generation" and
"Image generation access and usage", docs.aws.amazon.com/nova/latest/userguide/image-gen-req-resp-structure.html;
Bedrock user guide, "Amazon Titan Image Generator G1", docs.aws.amazon.com/bedrock/latest/userguide/
model-parameters-titan-image.html):

- generation: ``TEXT_IMAGE`` (``textToImageParams.text``), at ``imageGenerationConfig`` width x height.
- edit with a mask: ``INPAINTING`` of the first (only) image, ``inPaintingParams`` {image, maskImage, text}. The
  mask is a black-and-white image of the input's size: a (0 0 0) pixel is inside the mask, the area the model
  changes, a (255 255 255) pixel outside it; so OpenAI's mask (alpha 0 = edit) becomes black where it is
  transparent. The output has the input image's size (the editing tasks take no width/height).
- edit without a mask: ``IMAGE_VARIATION`` of all images (1-5), ``imageVariationParams`` {images, text}, at width x
  height (the edit's, which is the first input's size: the catalog makes edits follow the input).
- variation: ``IMAGE_VARIATION`` of the one image without text (the text is optional for both models: "with or
  without a text prompt"), at the size asked. ``similarityStrength`` (0.2-1.0) is left at the model's default.

Input images (both models): PNG or JPEG, base64 in the body; Nova Canvas refuses a PNG whose alpha channel has
transparent pixels. The byte and side limits are the catalog's (``imagegen/catalog/bedrock.json``).

Stability AI Image Services (Bedrock user guide, "Stability AI Image Services", stable-image-services.html: InvokeModel,
the same ``seeds``/``finish_reasons``/``images`` answer as Stability's generation models). Stable Image Inpaint
(``stability.stable-image-inpaint-v1:0``, invoked through a cross-Region profile such as ``us.``) serves
``/v1/images/edits`` with a mask: one call per image, body {image, mask, prompt, output_format, seed}; the field
names, the ``us.`` profile ids and "the output will be provided at 4mp" are from AWS's own sample notebook
(github.com/aws-samples/stabilityai-sample-notebooks, stability-ai-image-services-sample-notebook.ipynb), not the
user guide's parameter table, which was not read. Assumed, not read this session: the mask's polarity (Stability's
platform API: a black-and-white image where white is full inpainting strength and black none), so OpenAI's mask
(alpha 0 = edit) becomes white where it is transparent. Inpaint only edits: a generation, a variation or an edit
without a mask is refused before any call.

Three Control services of the same notebook serve ``/v1/images/edits`` with one image and a prompt (no mask: planning
refuses one by name, the catalog giving them none), one call per image: Stable Image Control Structure
(``stability.stable-image-control-structure-v1:0``) and Control Sketch (``stability.stable-image-control-sketch-v1:0``)
take {image, prompt, output_format, seed} and no size (the catalog plans the output as the input's size, assumed);
Stable Image Style Guide (``stability.stable-image-style-guide-v1:0``) also takes ``aspect_ratio``, the edit's size as
for the generation models. Their own strength options (``control_strength``, Style Guide's ``fidelity``) and
``style_preset``/``negative_prompt`` are left at the service's defaults: no OpenAI edit field means them (OpenAI's
``input_fidelity`` is a high/low switch of its own models, not a 0-1 weight of a control image). Like Inpaint, they
only edit: a generation or a variation is refused before any call. Not served, none fitting OpenAI's edit fields
without inventing meaning: Style Transfer (``init_image`` and ``style_image``: two images with roles OpenAI's
``image[]`` does not give), Search and Replace / Recolor (a search or select prompt), Erase Object and Remove
Background (no prompt), Outpaint (how far to extend each side) and the upscalers.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from imagegen.deadline import Deadline
from imagegen.errors import (
    ContentPolicyError,
    ImageGenError,
    InvalidRequestError,
    ProviderConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from imagegen.observability import tracer
from imagegen.planning import GenerationPlan
from imagegen.png import alpha_plane, encode_png_rgb
from imagegen.providers.base import ProviderImage, ProviderResult
from imagegen.providers.fanout import side_by_side
from imagegen.specs import bedrock_base_id

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
else:
    BedrockRuntimeClient = Any

# Nova Canvas and Titan v2 draw at most 5 images per call.
AMAZON_MAX_IMAGES_PER_CALL = 5
# Prompt adherence: each model's documented default (Titan 8.0, Nova 6.5; both accept 1.1-10).
CFG_SCALE = {"amazon.titan-image-generator-v2:0": 8.0, "amazon.nova-canvas-v1:0": 6.5}
DEFAULT_CFG_SCALE = 6.5
# Seeds: Nova takes 0-858,993,459 (Titan up to 2,147,483,646); Stability 0-4,294,967,294. One random seed per call,
# so the calls of one request never draw the same image.
AMAZON_MAX_SEED = 858_993_459
STABILITY_MAX_SEED = 4_294_967_294
# Bedrock's mask convention (Titan and Nova alike): a black pixel is inside the mask, the area INPAINTING changes.
MASK_EDIT_IS_BLACK = True
# Stability's inpainting (Stability's platform API convention, assumed for Bedrock): a white pixel is inpainted.
STABILITY_MASK_EDIT_IS_BLACK = False
# Stability AI Image Services this module serves, by foundation model id -> the fields of its body beyond the image and
# the prompt: Inpaint takes a mask (edits with a mask only); the Control services one image and no mask (edits only).
STABILITY_SERVICES: Mapping[str, tuple[str, ...]] = {
    "stability.stable-image-inpaint-v1:0": ("mask",),
    "stability.stable-image-control-structure-v1:0": (),
    "stability.stable-image-control-sketch-v1:0": (),
    "stability.stable-image-style-guide-v1:0": ("aspect_ratio",),
}
# The aspect ratios Stability's Bedrock models accept, as (width, height) units.
STABILITY_ASPECT_RATIOS = ((1, 1), (16, 9), (9, 16), (3, 2), (2, 3), (4, 5), (5, 4), (21, 9), (9, 21))
# Threads for the calls of one request (n is at most 10), with room for calls an earlier request abandoned at its
# deadline and that still wait for their answer (the client's read timeout ends them); matches the client's pool.
MAX_CONCURRENT_CALLS = 32


def random_seed(upper: int) -> int:
    return secrets.randbelow(upper + 1)


def aspect_ratio(width: int, height: int) -> str:
    """The Stability aspect ratio that ``width``x``height`` is exactly (the registry lists only such sizes)."""
    for units_w, units_h in STABILITY_ASPECT_RATIOS:
        if width * units_h == height * units_w:
            return f"{units_w}:{units_h}"
    raise ValueError(f"{width}x{height} is none of Stability's aspect ratios")


def alpha_mask_to_black_white(mask_png: bytes, *, edit_is_black: bool) -> bytes:
    """OpenAI's mask (a PNG whose fully transparent pixels, alpha 0, mark where to edit) -> an RGB PNG of the same
    size with no alpha, pure black and pure white only, where the edit area is black if ``edit_is_black``.

    Amazon Bedrock (Nova Canvas, the Amazon Nova user guide, "Masking images"): a mask contains only pure black and pure
    white pixels; for INPAINTING the black area is the masked area that is changed and the rest must be pure white; for
    OUTPAINTING the model changes the white area. An inpainting mask therefore passes ``edit_is_black=True``. The guide
    also allows an alpha channel only without transparent pixels, so the result has none."""
    width, height, alpha = alpha_plane(mask_png, param="mask")
    edit, keep = (0, 255) if edit_is_black else (255, 0)
    grey = alpha.translate(bytes([edit] + [keep] * 255))
    rgb = bytearray(3 * width * height)
    for channel in range(3):
        rgb[channel::3] = grey
    return encode_png_rgb(width, height, bytes(rgb))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def amazon_task(plan: GenerationPlan) -> dict[str, Any]:
    """The task half of a Nova Canvas / Titan v2 body (``taskType`` and its parameters) for the plan's operation,
    built once per request: the images are encoded and the mask converted once, not per call."""
    if plan.operation == "generation":
        return {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": plan.prompt}}
    inputs = plan.inputs
    assert inputs is not None  # imagegen.planning attaches the inputs of every edit and variation
    images = [_b64(picture.data) for picture in inputs.images]
    if plan.operation == "edit" and inputs.mask is not None:
        mask = alpha_mask_to_black_white(inputs.mask.data, edit_is_black=MASK_EDIT_IS_BLACK)
        return {"taskType": "INPAINTING", "inPaintingParams": {"image": images[0], "maskImage": _b64(mask), "text": plan.prompt}}
    params: dict[str, Any] = {"images": images}
    if plan.operation == "edit":
        params["text"] = plan.prompt
    return {"taskType": "IMAGE_VARIATION", "imageVariationParams": params}


def amazon_body(plan: GenerationPlan, count: int, seed: int, task: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Nova Canvas / Titan v2 request for ``count`` (<= 5) images: ``task`` (default: the plan's) and its config."""
    task = amazon_task(plan) if task is None else task
    config: dict[str, Any] = {
        "numberOfImages": count,
        "cfgScale": CFG_SCALE.get(bedrock_base_id(plan.model.provider_model), DEFAULT_CFG_SCALE),
        "seed": seed,
        "quality": plan.quality or "standard",
    }
    if task["taskType"] != "INPAINTING":  # inpainting answers at the input image's size and takes no width/height
        config.update(width=plan.width, height=plan.height)
    return {**task, "imageGenerationConfig": config}


def stability_body(plan: GenerationPlan, seed: int) -> dict[str, Any]:
    """A Stability request: one image at the size's aspect ratio."""
    return {
        "prompt": plan.prompt,
        "aspect_ratio": aspect_ratio(plan.width, plan.height),
        "output_format": plan.output_format,
        "seed": seed,
    }


def stability_service_task(plan: GenerationPlan) -> dict[str, Any]:
    """The image half of a Stability AI Image Services body, built once per request: the first image, and for Inpaint
    the mask (white where OpenAI's mask is transparent). Anything but an edit the service takes is refused here,
    before any call."""
    inputs = plan.inputs
    masked = "mask" in STABILITY_SERVICES[bedrock_base_id(plan.model.provider_model)]
    if plan.operation != "edit" or inputs is None or masked != (inputs.mask is not None):
        what = f"{plan.operation}s" if plan.operation != "edit" else "an edit without a mask" if masked else "a mask"
        needs = "an image and a mask" if masked else "one image and a prompt, without a mask,"
        raise InvalidRequestError(
            f"The model '{plan.model.id}' only edits: send {needs} to /v1/images/edits ({what} are not served).",
            param="mask" if plan.operation == "edit" else "model",
            code="unsupported_operation",
        )
    task = {"image": _b64(inputs.images[0].data)}
    if inputs.mask is not None:
        task["mask"] = _b64(alpha_mask_to_black_white(inputs.mask.data, edit_is_black=STABILITY_MASK_EDIT_IS_BLACK))
    return task


def stability_service_body(plan: GenerationPlan, seed: int, task: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Stability AI Image Services request for one image: the image (and mask), the prompt, and for Style Guide the
    aspect ratio of the size asked."""
    task = stability_service_task(plan) if task is None else task
    body = {**task, "prompt": plan.prompt, "output_format": plan.output_format, "seed": seed}
    if "aspect_ratio" in STABILITY_SERVICES[bedrock_base_id(plan.model.provider_model)]:
        body["aspect_ratio"] = aspect_ratio(plan.width, plan.height)
    return body


def _message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Message") or error.get("Code") or "no message")


def _content_policy(message: str) -> ContentPolicyError:
    return ContentPolicyError(f"The provider refused the request: {message}", param="prompt")


def _credentials_refused(_: str) -> ImageGenError:
    return ProviderConfigurationError(
        "Amazon Bedrock refused this deployment's AWS credentials. This is not a problem with your request; contact the operator.",
        code="provider_auth_failed",
    )


def _needs_inference_profile(message: str) -> ImageGenError:
    return ProviderConfigurationError(
        "Amazon Bedrock serves this model only through a cross-Region inference profile: the deployment must list it as "
        f"'<geo>.<model id>' (for example 'us.<model id>') in BEDROCK_MODELS. Bedrock said: {message} This is not a "
        "problem with your request; contact the operator.",
        code="provider_inference_profile_required",
    )


def _unknown_model_id(message: str) -> ImageGenError:
    return ProviderConfigurationError(
        f"Amazon Bedrock does not know this deployment's model id ({message}): check the region and BEDROCK_MODELS. "
        "This is not a problem with your request; contact the operator.",
        code="provider_model_unavailable",
    )


# Bedrock's error code -> our error. Failures only the operator can fix are ProviderConfigurationError (502 with
# x-should-retry: false, never retried). ValidationException is also how Nova/Titan refuse a prompt or an output on
# content grounds, how Bedrock asks for an inference profile and how it refuses an unknown model id: its message is
# the only signal, checked in client_error.
_CLIENT_ERRORS: Mapping[str, Callable[[str], ImageGenError]] = {
    "ThrottlingException": lambda _: RateLimitError("Amazon Bedrock is throttling this deployment; retry later."),
    "ServiceQuotaExceededException": lambda _: RateLimitError("This deployment has reached its Amazon Bedrock quota; retry later."),
    "ModelNotReadyException": lambda _: RateLimitError("The Amazon Bedrock model is not ready yet; retry later."),
    "ValidationException": lambda message: InvalidRequestError(f"Amazon Bedrock refused the request: {message}"),
    "AccessDeniedException": lambda _: ProviderConfigurationError(
        "This deployment may not invoke the model on Amazon Bedrock (IAM or model access is not set up). This is not a "
        "problem with your request; contact the operator.",
        code="provider_auth_failed",
    ),
    # The role's credentials themselves were refused (not the model access): the deployment is misconfigured too.
    **dict.fromkeys(("UnrecognizedClientException", "InvalidSignatureException"), _credentials_refused),
    # Session credentials that expired: a later call (a fresh container, refreshed credentials) can succeed.
    "ExpiredTokenException": lambda _: ProviderError(
        "Amazon Bedrock refused this deployment's expired AWS credentials; try again.", code="provider_credentials_expired"
    ),
    "ResourceNotFoundException": lambda _: ProviderConfigurationError(
        "Amazon Bedrock does not offer the model in this deployment's region; contact the operator.", code="provider_model_unavailable"
    ),
    "ModelTimeoutException": lambda _: ProviderTimeoutError("The Amazon Bedrock model took too long to draw the image."),
    "ModelErrorException": lambda _: ProviderError("The Amazon Bedrock model failed; try again later."),
    "InternalServerException": lambda _: ProviderError("Amazon Bedrock failed; try again later."),
    "ServiceUnavailableException": lambda _: ProviderError("Amazon Bedrock is unavailable; try again later."),
}
CONTENT_FILTER_MARKERS = ("content filters", "blocked by our", "responsible ai")
# "Invocation of model ID ... with on-demand throughput isn't supported. Retry your request with the ID or ARN of an
# inference profile that contains this model." (Bedrock writes a typographic apostrophe: matched without it.)
INFERENCE_PROFILE_MARKERS = ("with on-demand throughput isn", "id or arn of an inference profile")
UNKNOWN_MODEL_MARKERS = ("provided model identifier is invalid",)
_VALIDATION_MESSAGES: tuple[tuple[tuple[str, ...], Callable[[str], ImageGenError]], ...] = (
    (CONTENT_FILTER_MARKERS, lambda message: _content_policy(message)),
    (INFERENCE_PROFILE_MARKERS, _needs_inference_profile),
    (UNKNOWN_MODEL_MARKERS, _unknown_model_id),
)


def client_error(exc: ClientError) -> ImageGenError:
    """The one table from a Bedrock error to ours (unknown codes: 502)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    message = _message(exc)
    if code == "ValidationException":
        lowered = message.lower()
        for markers, make_error in _VALIDATION_MESSAGES:
            if any(marker in lowered for marker in markers):
                return make_error(message)
    make = _CLIENT_ERRORS.get(code)
    if make is not None:
        return make(message)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return ProviderError(f"Amazon Bedrock answered {code or 'an error'} (HTTP {status}).")


def transport_error(exc: BotoCoreError) -> ImageGenError:
    if isinstance(exc, ReadTimeoutError):
        return ProviderTimeoutError("Amazon Bedrock did not answer in time.")
    if isinstance(exc, ConnectTimeoutError | EndpointConnectionError):
        return ProviderError("Amazon Bedrock could not be reached.", code="provider_unreachable")
    if isinstance(exc, NoCredentialsError):
        return ProviderConfigurationError(
            "This deployment has no AWS credentials for Amazon Bedrock; contact the operator.", code="provider_auth_failed"
        )
    return ProviderError("Amazon Bedrock could not be called.")


def _malformed(detail: str) -> ProviderError:
    return ProviderError(f"Amazon Bedrock answered with a malformed body ({detail}).", code="provider_bad_response")


def _decode(images: Any, expected: int) -> tuple[ProviderImage, ...]:
    if not isinstance(images, list) or len(images) != expected:
        raise _malformed(f"expected {expected} images")
    try:
        return tuple(ProviderImage(base64.b64decode(image, validate=True)) for image in images)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise _malformed("images are not base64") from exc


def parse_amazon(payload: Mapping[str, Any], expected: int) -> tuple[ProviderImage, ...]:
    """``{"images": [b64, ...], "error": null | "..."}``: an error is a content-policy refusal of the output."""
    if payload.get("error"):
        raise _content_policy(str(payload["error"]))
    return _decode(payload.get("images"), expected)


def parse_stability(payload: Mapping[str, Any]) -> ProviderImage:
    """``{"images": [b64], "finish_reasons": [null | "Filter reason: ..."], "seeds": [...]}``: a reason means the
    image was filtered (a content-policy 400, never an empty success)."""
    reasons = payload.get("finish_reasons") or []
    reason = next((reason for reason in reasons if reason), None) if isinstance(reasons, list) else None
    if reason:
        raise _content_policy(str(reason))
    (image,) = _decode(payload.get("images"), 1)
    return image


class BedrockProvider:
    def __init__(
        self,
        client: BedrockRuntimeClient,
        *,
        executor: ThreadPoolExecutor | None = None,
        seed: Callable[[int], int] = random_seed,
    ) -> None:
        self._client = client
        self._executor = executor or ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CALLS, thread_name_prefix="bedrock")
        self._seed = seed

    @tracer.capture_method(capture_response=False)
    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        """Every call runs on the executor and is awaited only until the deadline: botocore has no per-call timeout,
        so a call still running then is abandoned (its answer ignored) and the request is a 504."""
        model = plan.model.provider_model
        calls: list[Callable[[], tuple[ProviderImage, ...]]] = []
        if plan.model.family == "stability" and bedrock_base_id(model) in STABILITY_SERVICES:
            task = stability_service_task(plan)
            for _ in range(plan.n):
                body = stability_service_body(plan, self._seed(STABILITY_MAX_SEED), task)
                calls.append(partial(self._stability_call, model, body, deadline))
        elif plan.model.family == "stability":
            if plan.operation != "generation":
                # Never reached in practice: the catalog gives Stability's generation models no edits or variations.
                raise ProviderError(f"The model '{plan.model.id}' does not make {plan.operation}s here.", code="unsupported_operation")
            for _ in range(plan.n):
                calls.append(partial(self._stability_call, model, stability_body(plan, self._seed(STABILITY_MAX_SEED)), deadline))
        else:
            task = amazon_task(plan)
            for start in range(0, plan.n, AMAZON_MAX_IMAGES_PER_CALL):
                count = min(AMAZON_MAX_IMAGES_PER_CALL, plan.n - start)
                body = amazon_body(plan, count, self._seed(AMAZON_MAX_SEED), task)
                calls.append(partial(self._amazon_call, model, body, count, deadline))
        batches = side_by_side(self._executor, calls, deadline, provider="Amazon Bedrock")
        return ProviderResult(images=tuple(image for batch in batches for image in batch))

    def _stability_call(self, model: str, body: dict[str, Any], deadline: Deadline) -> tuple[ProviderImage, ...]:
        return (parse_stability(self._invoke(model, body, deadline)),)

    def _amazon_call(self, model: str, body: dict[str, Any], count: int, deadline: Deadline) -> tuple[ProviderImage, ...]:
        return parse_amazon(self._invoke(model, body, deadline), count)

    def _invoke(self, model_id: str, body: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        deadline.require("call Amazon Bedrock")
        try:
            response = self._client.invoke_model(
                modelId=model_id, body=json.dumps(body), contentType="application/json", accept="application/json"
            )
            payload = json.loads(response["body"].read())
        except ClientError as exc:
            raise client_error(exc) from exc
        except BotoCoreError as exc:
            raise transport_error(exc) from exc
        except ValueError as exc:
            raise _malformed("not JSON") from exc
        if not isinstance(payload, dict):
            raise _malformed("not a JSON object")
        return payload
