"""A fake Amazon Bedrock runtime on loopback speaking its wire protocol, for boto3 pointed at it with
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` (so boto3's serialization, SigV4 signing and error parsing all run for real).

``invoke_model`` is ``POST /model/{modelId}/invoke`` with the model's JSON body; errors are the status Bedrock uses,
an ``x-amzn-ErrorType`` header and ``{"message": ...}``. The prompt picks the behaviour: ``fail:<ErrorType>`` (one
of ``ERRORS``), ``fail:filtered`` (Stability: a finish reason; Nova/Titan: the output ``error`` field),
``fail:malformed``, ``fail:slow`` (sleeps ``SLOW_SECONDS``). Anything else succeeds with PNG/JPEG images drawn
with Pillow: Nova/Titan at the requested width x height, Stability at the size the project lists for the ratio.
Requests are recorded with their headers; unsigned requests or a credential scope other than bedrock are 403.

Nova/Titan edits as Bedrock takes them: ``INPAINTING`` (``inPaintingParams``: image, text, exactly one of maskImage or
maskPrompt; a mask image of the input's size with pure black and white pixels only) answers at the input's size;
``IMAGE_VARIATION`` (``imageVariationParams``: 1-5 images, optional text) at the config's width x height. A body
that breaks these rules is a 400 ValidationException in Bedrock's "Malformed input request: #/path: ..." style. Each
recorded request carries ``inputs``: the decoded images and mask (``images``, ``mask``; bytes), for tests to check
what arrived; ``edit_plan`` / ``variation_plan`` and the image builders make what such tests send.

Stable Image Inpaint (``stability.stable-image-inpaint-v1:0``, one of Stability AI Image Services) as AWS's sample
notebook calls it: {image, mask, prompt, output_format, seed}, the mask a black-and-white image of the input's size
(white: inpainted); it answers at the input's size here (AWS's notebook says 4 megapixels whatever the input: the
catalog plans that as its worst case) and records the decoded ``inputs``. The Control services of the same notebook
take one image and a prompt: Control Structure and Control Sketch {image, prompt, control_strength, seed,
output_format, negative_prompt, style_preset} answer at the input's size here; Style Guide {image, prompt,
aspect_ratio, fidelity, ...} at the ratio's size. A required key missing, an empty prompt, a key the service does not
take (a mask), a strength outside 0-1 or an unknown aspect ratio is a ValidationException in the style of Bedrock's
schema errors (assumed for these services: their messages were not seen).

Model ids as Bedrock takes them: a foundation model id, or a cross-Region inference profile ``<geo>.<model id>``;
a model in ``profile_only`` refuses its bare id as Bedrock does ("... with on-demand throughput isn't supported"),
and an id of an unknown geography is "The provided model identifier is invalid"."""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from PIL import Image as PILImage

from imagegen import pictures
from imagegen.options import ImageEditOptions, ImageVariationOptions
from imagegen.planning import GenerationPlan, InputPictures, plan_edit, plan_variation
from imagegen.specs import ModelSpec
from tests.fakes.loopback import LoopbackHTTPServer, QuietHandler

SLOW_SECONDS = 5.0
# Status codes from the Bedrock runtime API reference (InvokeModel errors), with Bedrock's own messages.
ERRORS: dict[str, tuple[int, str]] = {
    "ThrottlingException": (429, "Too many requests, please wait before trying again."),
    "ValidationException": (400, "Malformed input request: #/textToImageParams/text: expected maxLength: 512, actual: 600"),
    "AccessDeniedException": (403, "You don't have access to the model with the specified model ID."),
    "ModelTimeoutException": (408, "Model has timed out in processing the request."),
    "ServiceUnavailableException": (503, "Bedrock is unable to process your request."),
    "InternalServerException": (500, "The server encountered an internal error."),
    "ModelErrorException": (424, "The model encountered an error processing the request."),
    "ResourceNotFoundException": (404, "The requested resource could not be found."),
    "ServiceQuotaExceededException": (400, "Your request exceeds the service quota for your account."),
    "ContentFilter": (400, "This request has been blocked by our content filters."),
}
# The parameters field of each Amazon task.
AMAZON_TASKS = {"TEXT_IMAGE": "textToImageParams", "INPAINTING": "inPaintingParams", "IMAGE_VARIATION": "imageVariationParams"}
MAX_VARIATION_IMAGES = 5


class Malformed(Exception):
    """A body Bedrock refuses: its ValidationException message."""


def _malformed(path: str, problem: str) -> Malformed:
    return Malformed(f"Malformed input request: #/{path}: {problem}, please reformat your input and try again.")


def decode_image(value: Any, path: str) -> tuple[bytes, PILImage.Image]:
    """A base64 PNG or JPEG of the body, as Bedrock reads it."""
    if not isinstance(value, str):
        raise _malformed(path, f"expected type: String, found: {type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=True)
        image = PILImage.open(io.BytesIO(data))
        image.load()
    except (binascii.Error, ValueError, OSError) as exc:
        raise Malformed(f"Unable to process the image at {path}: it is not a base64-encoded PNG or JPEG image.") from exc
    if image.format not in ("PNG", "JPEG"):
        raise Malformed(f"Unable to process the image at {path}: {image.format} is not supported; send PNG or JPEG.")
    return data, image


def amazon_inputs(task: str, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """The decoded inputs of an edit task, and the size it answers at (None: the config's)."""
    if task == "INPAINTING":
        field = AMAZON_TASKS[task]
        if "image" not in params:
            raise _malformed(field, "required key [image] not found")
        if ("maskImage" in params) == ("maskPrompt" in params):
            raise Malformed("Exactly one of maskImage or maskPrompt must be provided for INPAINTING.")
        data, image = decode_image(params["image"], f"{field}/image")
        inputs: dict[str, Any] = {"images": [data], "mask": None}
        if "maskImage" in params:
            mask_data, mask = decode_image(params["maskImage"], f"{field}/maskImage")
            if mask.size != image.size:
                raise Malformed(
                    f"The mask image ({mask.size[0]}x{mask.size[1]}) must have the input image's size ({image.size[0]}x{image.size[1]})."
                )
            colours = {colour for _, colour in mask.convert("RGB").getcolors(maxcolors=1 << 24) or []}
            if not colours <= {(0, 0, 0), (255, 255, 255)}:
                raise Malformed("The mask image must contain only pure black and pure white pixels.")
            inputs["mask"] = mask_data
        return inputs, image.size
    if task == "IMAGE_VARIATION":
        field = AMAZON_TASKS[task]
        images = params.get("images")
        if not isinstance(images, list):
            raise _malformed(field, "required key [images] not found")
        if not 1 <= len(images) <= MAX_VARIATION_IMAGES:
            bound = "minimum item count: 1" if not images else f"maximum item count: {MAX_VARIATION_IMAGES}"
            raise _malformed(f"{field}/images", f"expected {bound}, found: {len(images)}")
        if "text" in params and not params["text"]:
            raise _malformed(f"{field}/text", "expected minLength: 1, actual: 0")
        return {"images": [decode_image(value, f"{field}/images/{index}")[0] for index, value in enumerate(images)], "mask": None}, None
    return {}, None


INPAINT_MODELS = {"stability.stable-image-inpaint-v1:0"}


def stability_inpaint_inputs(body: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, int]]:
    """The decoded image and mask of an inpainting body, and the size it answers at (the image's)."""
    for key in ("image", "mask", "prompt"):
        if key not in body:
            raise _malformed("", f"required key [{key}] not found")
    if not body["prompt"]:
        raise _malformed("prompt", "expected minLength: 1, actual: 0")
    data, image = decode_image(body["image"], "image")
    mask_data, mask = decode_image(body["mask"], "mask")
    if mask.size != image.size:
        raise Malformed(f"The mask ({mask.size[0]}x{mask.size[1]}) must have the image's size ({image.size[0]}x{image.size[1]}).")
    colours = {colour for _, colour in mask.convert("RGB").getcolors(maxcolors=1 << 24) or []}
    if not colours <= {(0, 0, 0), (255, 255, 255)}:
        raise Malformed("The mask must be black and white.")
    return {"images": [data], "mask": mask_data}, image.size


STABILITY_FORMATS = ("png", "jpeg", "webp")
COMMON_SERVICE_KEYS = {"image", "prompt", "negative_prompt", "seed", "output_format", "style_preset"}
# Stability AI Image Services, Control: foundation model id -> its optional 0-1 strength and the keys it takes.
CONTROL_MODELS: dict[str, tuple[str, frozenset[str]]] = {
    "stability.stable-image-control-structure-v1:0": ("control_strength", frozenset(COMMON_SERVICE_KEYS | {"control_strength"})),
    "stability.stable-image-control-sketch-v1:0": ("control_strength", frozenset(COMMON_SERVICE_KEYS | {"control_strength"})),
    "stability.stable-image-style-guide-v1:0": ("fidelity", frozenset(COMMON_SERVICE_KEYS | {"fidelity", "aspect_ratio"})),
}
STYLE_GUIDE = "stability.stable-image-style-guide-v1:0"


def stability_control_inputs(model_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, int]]:
    """The decoded image of a Control body, and the size it answers at (Style Guide: the ratio's; else the image's)."""
    strength, keys = CONTROL_MODELS[model_id]
    extra = sorted(set(body) - keys)
    if extra:
        raise _malformed("", f"extraneous key [{extra[0]}] is not permitted")
    for key in ("image", "prompt"):
        if key not in body:
            raise _malformed("", f"required key [{key}] not found")
    if not isinstance(body["prompt"], str) or not body["prompt"]:
        raise _malformed("prompt", "expected minLength: 1, actual: 0")
    value = body.get(strength, 0.5)
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _malformed(strength, f"{value} is not in the range 0 to 1")
    if body.get("output_format", "png") not in STABILITY_FORMATS:
        raise _malformed("output_format", f"{body['output_format']} is not a valid enum value")
    data, image = decode_image(body["image"], "image")
    if model_id == STYLE_GUIDE:
        ratio = body.get("aspect_ratio", "1:1")
        if ratio not in STABILITY_SIZES:
            raise _malformed("aspect_ratio", f"{ratio} is not a valid enum value")
        return {"images": [data], "mask": None}, STABILITY_SIZES[ratio]
    return {"images": [data], "mask": None}, image.size


# Stability answers at its own resolution per ratio; the fake uses the sizes the project's registry lists.
# Geographies of Bedrock's cross-Region (system-defined) inference profiles.
GEOS = ("us", "us-gov", "eu", "apac", "jp", "au", "global")
ON_DEMAND_MESSAGE = (
    "Invocation of model ID {model} with on-demand throughput isn\u2019t supported. Retry your request with the ID or ARN "
    "of an inference profile that contains this model."
)
STABILITY_SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1280, 720),
    "9:16": (720, 1280),
    "3:2": (1536, 1024),
    "2:3": (1024, 1536),
    "4:5": (1024, 1280),
    "5:4": (1280, 1024),
    "21:9": (1344, 576),
    "9:21": (576, 1344),
}


def picture(width: int, height: int, colour: tuple[int, ...] = (200, 40, 40), *, mode: str = "RGB", image_format: str = "PNG") -> bytes:
    """A flat image, encoded."""
    buffer = io.BytesIO()
    PILImage.new(mode, (width, height), colour).save(buffer, format=image_format)
    return buffer.getvalue()


def draw(width: int, height: int, seed: int, image_format: str = "PNG") -> bytes:
    return picture(width, height, ((seed * 37) % 256, 120, 80), image_format=image_format)


def openai_mask(width: int, height: int, box: tuple[int, int, int, int]) -> bytes:
    """For tests that send edits: OpenAI's mask, opaque grey with a fully transparent rectangle (the area to edit)."""
    mask = PILImage.new("RGBA", (width, height), (90, 90, 90, 255))
    mask.paste((0, 0, 0, 0), box)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_plan(spec: ModelSpec, *images: bytes, mask: bytes | None = None, **fields: Any) -> GenerationPlan:
    """For tests that send edits: the plan of an edit of ``images`` (prompt "add a red hat" unless given)."""
    inputs = InputPictures(
        images=tuple(pictures.inspect(data, param="image") for data in images),
        mask=pictures.inspect(mask, param="mask") if mask is not None else None,
    )
    return plan_edit(spec, ImageEditOptions.model_validate({"prompt": "add a red hat", **fields}), inputs)


def variation_plan(spec: ModelSpec, image: bytes, **fields: Any) -> GenerationPlan:
    """For tests that send variations: the plan of variations of ``image``."""
    return plan_variation(spec, ImageVariationOptions.model_validate(fields), pictures.inspect(image, param="image"))


def signature_matches(method: str, url: str, headers: dict[str, str], body: bytes, credentials: Credentials, region: str) -> bool:
    """Recompute the request's SigV4 signature (service ``bedrock``) over the headers it says it signed."""
    authorization = headers.get("authorization", "")
    fields = dict(part.strip().split("=", 1) for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(","))
    signed = fields.get("SignedHeaders", "").split(";")
    request = AWSRequest(method=method, url=url, data=body, headers={name: headers[name] for name in signed if name in headers})
    request.context["timestamp"] = headers.get("x-amz-date", "")
    signer = SigV4Auth(credentials, "bedrock", region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return bool(fields.get("Signature")) and fields["Signature"] == expected


class FakeBedrock(LoopbackHTTPServer):
    def __init__(self, region: str = "us-east-1", credentials: tuple[str, str] | None = None) -> None:
        self.region = region
        # With credentials, the SigV4 signature is checked as AWS would (403 InvalidSignatureException otherwise).
        self.credentials = Credentials(*credentials) if credentials else None
        self.requests: list[dict[str, Any]] = []
        # Foundation models this fake serves only through an inference profile (their bare id is refused).
        self.profile_only: set[str] = set()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        super().__init__(self._handler())

    @property
    def endpoint(self) -> str:
        return self.origin

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.profile_only.clear()
            self.max_in_flight = 0

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                parts = self.path.split("/")
                if len(parts) != 4 or parts[1] != "model" or parts[3] != "invoke":
                    return self._error(404, "UnknownOperationException", "no such operation")
                model_id = urllib.parse.unquote(parts[2])
                body = json.loads(raw)
                record: dict[str, Any] = {"model": model_id, "headers": dict(self.headers), "json": body}
                fake.requests.append(record)
                scope = f"/{fake.region}/bedrock/aws4_request"
                if not self.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 ") or scope not in self.headers["authorization"]:
                    return self._error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
                headers = {name.lower(): value for name, value in self.headers.items()}
                url = f"http://{headers['host']}{self.path}"
                if fake.credentials and not signature_matches("POST", url, headers, raw, fake.credentials, fake.region):
                    return self._error(403, "InvalidSignatureException", "The request signature we calculated does not match.")
                fake._enter()
                try:
                    self._answer(model_id, body, record)
                finally:
                    fake._leave()

            def _answer(self, model_id: str, body: dict[str, Any], record: dict[str, Any]) -> None:
                geo, _, base = model_id.partition(".")
                if geo in GEOS:
                    model_id = base
                elif not model_id.startswith(("amazon.", "stability.")):
                    return self._error(400, "ValidationException", "The provided model identifier is invalid.")
                elif model_id in fake.profile_only:
                    return self._error(400, "ValidationException", ON_DEMAND_MESSAGE.format(model=model_id))
                stability = model_id.startswith("stability.")
                size: tuple[int, int] | None = None
                if stability and model_id in INPAINT_MODELS:
                    try:
                        record["inputs"], size = stability_inpaint_inputs(body)
                    except Malformed as exc:
                        return self._error(400, "ValidationException", str(exc))
                    prompt = body["prompt"]
                elif stability and model_id in CONTROL_MODELS:
                    try:
                        record["inputs"], size = stability_control_inputs(model_id, body)
                    except Malformed as exc:
                        return self._error(400, "ValidationException", str(exc))
                    prompt = body["prompt"]
                elif stability:
                    prompt = body["prompt"]
                else:
                    task = body.get("taskType")
                    if task not in AMAZON_TASKS:
                        return self._error(
                            400, "ValidationException", f"Malformed input request: #/taskType: {task} is not a valid enum value"
                        )
                    params = body.get(AMAZON_TASKS[task])
                    if not isinstance(params, dict):
                        return self._error(
                            400, "ValidationException", f"Malformed input request: #: required key [{AMAZON_TASKS[task]}] not found"
                        )
                    try:
                        inputs, size = amazon_inputs(task, params)
                    except Malformed as exc:
                        return self._error(400, "ValidationException", str(exc))
                    record["inputs"] = inputs
                    prompt = params.get("text", "")
                time.sleep(0.2)  # long enough for concurrent calls to overlap
                if prompt == "fail:slow":
                    time.sleep(SLOW_SECONDS)
                    prompt = "slow"
                if prompt == "fail:malformed":
                    return self._send(200, b'{"images": ["not base64!"]')
                if prompt == "fail:filtered":
                    if stability:
                        payload: dict[str, Any] = {"images": [""], "finish_reasons": ["Filter reason: prompt"], "seeds": [body["seed"]]}
                    else:
                        payload = {"images": [], "error": "The generated image has been blocked by our content filters."}
                    return self._send(200, json.dumps(payload).encode())
                if prompt.startswith("fail:"):
                    kind = prompt.removeprefix("fail:")
                    status, message = ERRORS[kind]
                    return self._error(status, "ValidationException" if kind == "ContentFilter" else kind, message)
                if stability:
                    width, height = size or STABILITY_SIZES[body["aspect_ratio"]]
                    image_format = "JPEG" if body.get("output_format") == "jpeg" else "PNG"
                    image = draw(width, height, body["seed"], image_format)
                    payload = {"images": [base64.b64encode(image).decode()], "finish_reasons": [None], "seeds": [body["seed"]]}
                else:
                    config = body["imageGenerationConfig"]
                    width, height = size or (config["width"], config["height"])
                    images = [draw(width, height, config["seed"] + index) for index in range(config["numberOfImages"])]
                    payload = {"images": [base64.b64encode(image).decode() for image in images], "error": None}
                self._send(200, json.dumps(payload).encode())

            def _error(self, status: int, kind: str, message: str) -> None:
                self._send(
                    status, json.dumps({"message": message}).encode(), {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/"}
                )

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-amzn-RequestId", "fake-request-id")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
