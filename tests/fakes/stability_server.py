"""A fake Stability AI platform API on loopback speaking real HTTP: ``POST /v2beta/stable-image/generate/{ultra|core|
sd3}`` with ``Authorization: Bearer <key>`` and a multipart/form-data body (parsed by the API's own
``functions.api.multipart.parse_form``) answers, with ``accept: application/json``, ``{"image": "<base64>",
"finish_reason": "SUCCESS", "seed": ...}`` (with ``image/*``: the image's bytes), the image drawn with Pillow at the
size Stability is taken to draw for the ``aspect_ratio`` (about 1 MP). It checks the fields as Stability documents
them (``prompt`` 1..10000 characters, ``aspect_ratio``, ``output_format``, ``model`` on sd3) and answers its own 400.

The prompt picks failures, in the shape of Stability's own error body ``{"id", "name", "errors"}`` (the names and
messages are plausible, not copied from Stability): ``fail:400``, ``fail:402``,
``fail:403`` (content moderation), ``fail:404``, ``fail:413``, ``fail:422``, ``fail:429`` (``Retry-After: 1``),
``fail:500``, ``flaky429:N:<anything>`` (429 N times for that prompt, then success), ``fail:filtered`` (200 with
``finish_reason: CONTENT_FILTERED`` and a blurred image), ``fail:malformed`` (200 without an image),
``fail:echo-key`` (a 400 quoting the key), ``fail:slow`` (no answer for 30 s). A wrong or missing key is a 401 ``unauthorized``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image as PILImage

from functions.api.multipart import parse_form
from imagegen.errors import InvalidRequestError
from tests.fakes.loopback import LoopbackHTTPServer, QuietHandler

API_KEY = "sk-stability-test-key-0000"
SLOW_SECONDS = 30.0
PATH = "/v2beta/stable-image/generate/"
ENDPOINTS = ("ultra", "core", "sd3")
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash")
# What Stability is taken to draw for each ratio (SDXL's ~1 MP buckets; unverified).
RATIO_SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "5:4": (1088, 896),
    "4:5": (896, 1088),
}
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def _error(status: int, name: str, *errors: str) -> tuple[int, dict[str, Any]]:
    return status, {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}


ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "fail:400": _error(400, "bad_request", "negative_prompt: must be at most 10000 characters"),
    "fail:402": _error(402, "payment_required", "You lack sufficient credits to make this request. Please purchase more credits."),
    "fail:403": _error(
        403,
        "content_moderation",
        "Your request was flagged by our content moderation system, as a result your request was denied and you were not charged.",
    ),
    "fail:404": _error(404, "not_found", "The requested resource was not found."),
    "fail:413": _error(413, "payload_too_large", "body: payloads cannot be larger than 10MiB in size"),
    "fail:422": _error(422, "invalid_language", "English is the only supported language for this service."),
    "fail:429": _error(429, "rate_limit_exceeded", "You have exceeded the rate limit of 150 requests within a 10 second period."),
    "fail:500": _error(500, "internal_error", "An unexpected server error has occurred, please try again later."),
}


def image(width: int, height: int, output_format: str, colour: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buffer, format=OUTPUT_FORMATS[output_format])
    return buffer.getvalue()


class FakeStability(LoopbackHTTPServer):
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.flaky: dict[str, int] = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                fake._post(self)

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return self.origin

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.flaky.clear()

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        super().__exit__(*exc)

    def requests_with(self, prompt: str) -> int:
        with self.lock:
            return sum(1 for request in self.requests if request["fields"].get("prompt") == prompt)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        headers = dict(headers or {})
        handler.send_header("content-type", headers.pop("content-type", "application/json"))
        handler.send_header("x-request-id", uuid.uuid4().hex)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        endpoint = handler.path.removeprefix(PATH) if handler.path.startswith(PATH) else None
        try:
            form = parse_form(raw, handler.headers.get("content-type", ""))
            fields = {name: str(value) for name, value in form.fields.items()}
            files = sorted(form.files)
        except InvalidRequestError:
            fields, files = {}, ["<not multipart>"]
        with self.lock:
            self.requests.append(
                {"path": handler.path, "endpoint": endpoint, "headers": dict(handler.headers), "fields": fields, "files": files}
            )
        if handler.headers.get("authorization") != f"Bearer {API_KEY}":
            return self._send(handler, *_error(401, "unauthorized", "authorization: invalid or missing header value"))
        if endpoint not in ENDPOINTS:
            return self._send(handler, *_error(404, "not_found", f"{handler.path} does not exist"))
        if files:
            return self._send(handler, *_error(400, "bad_request", "content-type: must be multipart/form-data with text fields"))
        refusal = self._invalid(endpoint, fields)
        if refusal is not None:
            return self._send(handler, *refusal)
        prompt = fields["prompt"]
        if prompt.startswith("flaky429:"):
            times = int(prompt.split(":")[1])
            with self.lock:
                seen = self.flaky.get(prompt, 0)
                self.flaky[prompt] = seen + 1
            if seen < times:
                return self._send(handler, *ERRORS["fail:429"], headers={"Retry-After": "1"})
        if prompt in ERRORS:
            status, error = ERRORS[prompt]
            return self._send(handler, status, error, headers={"Retry-After": "1"} if status == 429 else None)
        if prompt == "fail:echo-key":  # a message quoting the key it was sent (as a proxy might)
            return self._send(handler, *_error(400, "bad_request", f"authorization: key {API_KEY} is not valid for prompt"))
        if prompt == "fail:slow":
            self.closing.wait(SLOW_SECONDS)
            return None
        if prompt == "fail:malformed":
            return self._send(handler, 200, {"finish_reason": "SUCCESS", "seed": 1})
        width, height = RATIO_SIZES[fields.get("aspect_ratio", "1:1")]
        output_format = fields.get("output_format", "png")
        filtered = prompt == "fail:filtered"
        data = image(width, height, output_format, (128, 128, 128) if filtered else (40, 120, 200))
        finish_reason = "CONTENT_FILTERED" if filtered else "SUCCESS"
        if handler.headers.get("accept") == "application/json":
            body = {"image": base64.b64encode(data).decode(), "finish_reason": finish_reason, "seed": 1234}
            return self._send(handler, 200, body, {"content-type": f"application/json; type=image/{output_format}"})
        headers = {"content-type": f"image/{output_format}", "finish-reason": finish_reason, "seed": "1234"}
        return self._send(handler, 200, data, headers)

    @staticmethod
    def _invalid(endpoint: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        prompt = fields.get("prompt", "")
        if not 1 <= len(prompt) <= 10000:
            return _error(400, "bad_request", "prompt: must be between 1 and 10000 characters")
        if fields.get("aspect_ratio", "1:1") not in RATIO_SIZES:
            return _error(400, "bad_request", f"aspect_ratio: must be one of {', '.join(RATIO_SIZES)}")
        if fields.get("output_format", "png") not in OUTPUT_FORMATS:
            return _error(400, "bad_request", "output_format: must be one of jpeg, png, webp")
        if endpoint == "sd3" and fields.get("model", "sd3.5-large") not in SD3_MODELS:
            return _error(400, "bad_request", f"model: must be one of {', '.join(SD3_MODELS)}")
        if endpoint != "sd3" and "model" in fields:
            return _error(400, "bad_request", "model: is not allowed")
        return None
