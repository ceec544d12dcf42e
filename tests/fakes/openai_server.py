"""A fake OpenAI Images API on loopback speaking real HTTP, for integration and end-to-end tests.

The prompt picks the behaviour, so tests that only reach it through the API (or the official SDK) can steer it:
``fail:400``, ``fail:preview`` (a preview feature refused), ``fail:401`` (key refused), ``fail:403`` (model access),
``fail:404`` (no such model), ``fail:quota`` (429 ``insufficient_quota``), ``fail:429``, ``fail:500``, ``fail:policy``
(DALL-E's refusal), ``fail:moderation`` (GPT image models' refusal), ``fail:malformed``, ``fail:slow`` (sleeps past
any sane deadline), ``flaky:N:<anything>`` (500 for the first N requests with that prompt, then success); the error
bodies are OpenAI's own.
Faults for tests/integration/test_faults.py: ``fail:429-bare`` (no Retry-After), ``fail:503``, ``fail:html-502`` (a
proxy's HTML error page), ``fail:html`` (200 with an HTML body), ``fail:truncated`` (the connection closes halfway
through the promised body), ``fail:short`` (one image fewer than asked), ``fail:not-image`` (base64 of bytes that
are no image), ``fail:bad-base64``, ``flaky429:N:<anything>`` (429 with ``Retry-After: 1`` N times, then success).
Edits (``POST /v1/images/edits``, multipart/form-data parsed by the API's own ``functions.api.multipart.parse_form``)
are steered by their ``prompt`` field the same way, and also answer OpenAI's own edit errors: ``fail:image-file``
(an image it cannot read), ``fail:mask-alpha``, ``fail:mask-size``, ``fail:rgba`` (DALL-E 2's "format must be in
['RGBA', 'LA', 'L']"); the first three are also what a request gets whose image does not open in Pillow, whose mask
has no alpha channel or is not the first image's size. Each edit is recorded with its text fields (``fields``) and
its files (``files``: field name, filename, content type, size and sha256 of each part), a generation with its
``json``.
Azure OpenAI's paths ``/openai/deployments/<name>/images/{generations,edits}?api-version=...`` are served too: they
answer 401 without an ``api-key`` header (or with an ``Authorization`` one), 404 without ``api-version`` or for a body
naming a model, and then behave as above. Any other prompt succeeds with PNGs of the requested size (1024x1024 for
``auto``; drawn with Pillow, not with the code under test).
``stream: true`` (JSON ``true``, a form's ``"true"``) answers ``text/event-stream``, chunked, each event written and
flushed on its own: ``partial_images`` partial events (``image_generation.partial_image`` or ``image_edit.*``; smaller
PNGs of the size, seeds 100+i) then one completed event per image (the PNGs of a plain answer, each with its usage).
``slow-partials:<seconds>[:<anything>]`` waits that long before each event; ``fail:mid-stream`` sends one partial, then
an ``error`` event (a server_error) and ends; ``fail:stream-cut`` sends one partial and closes the connection without
ending the chunked body; ``fail:*`` refusals above are answered before any stream, as OpenAI does."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image as PILImage

from functions.api.multipart import FormData, parse_form
from imagegen.errors import InvalidRequestError
from tests.fakes.loopback import LoopbackHTTPServer, QuietHandler

SLOW_SECONDS = 30.0
AZURE_PATH = re.compile(r"^/openai/deployments/([^/?]+)/images/(generations|edits)\?api-version=([^&]+)$")
OPENAI_PATHS = {"/v1/images/generations": "generations", "/v1/images/edits": "edits"}


def png(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), ((seed * 40) % 256, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def _error(
    status: int, message: str, code: str | None = None, param: str | None = None, kind: str = "invalid_request_error", **headers: str
):
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers


# OpenAI's own error bodies (status, type and code as its API answers them; platform.openai.com/docs/guides/error-codes).
FAILURES: dict[str, tuple[int, Any, dict[str, str]]] = {
    "fail:400": _error(400, "Invalid size for this model.", "invalid_value", "size"),
    "fail:401": _error(
        401,
        "Incorrect API key provided: sk-fake***1234. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_api_key",
    ),
    "fail:403": _error(
        403,
        "Your organization must be verified to use the model `gpt-image-1`. Please go to: "
        "https://platform.openai.com/settings/organization/general and click on Verify Organization. If you just verified, "
        "it can take up to 15 minutes for access to propagate.",
    ),
    "fail:404": _error(404, "The model `dall-e-2` does not exist or you do not have access to it.", "model_not_found"),
    "fail:quota": _error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, "
        "read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        kind="insufficient_quota",
    ),
    "fail:429": _error(429, "Rate limit reached for images per minute.", "rate_limit_exceeded", kind="requests", **{"retry-after": "1"}),
    "fail:500": _error(500, "The server had an error while processing your request. Sorry about that!", kind="server_error"),
    "fail:policy": _error(
        400,
        "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by "
        "our safety system.",
        "content_policy_violation",
    ),
    "fail:moderation": _error(
        400,
        "Your request was rejected by the safety system. If you believe this is an error, contact us at help.openai.com "
        "and include the request ID req_0123456789abcdef.",
        "moderation_blocked",
        kind="image_generation_user_error",
    ),
    # A preview feature the project has no access to (as reported for GIF output on gpt-image-2.6).
    "fail:preview": _error(400, "This feature is not enabled for this request."),
    "fail:429-bare": _error(429, "Rate limit reached for images per minute.", "rate_limit_exceeded", kind="requests"),
    "fail:503": _error(503, "The engine is currently overloaded, please try again later.", kind="server_error"),
    # Edits: the wording reported from OpenAI's images/edits (e.g. ComfyUI #8430, go-openai #188, and API gateways
    # passing on OpenAI's body); the index is the image's place in the form.
    "fail:image-file": _error(
        400,
        "Invalid image file or mode for image 1, please check your image file. If you believe this is an error, contact us at "
        "help.openai.com and include the request ID.",
        "invalid_image_file",
        kind="image_generation_user_error",
    ),
    "fail:mask-alpha": _error(
        400, "Invalid mask image format - mask image missing alpha channel", "invalid_mask_image_format", kind="image_generation_user_error"
    ),
    "fail:mask-size": _error(
        400,
        "Invalid mask image format - mask size does not match image size",
        "invalid_mask_image_format",
        kind="image_generation_user_error",
    ),
    "fail:rgba": _error(400, "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB."),
}
HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"


class FakeOpenAI(LoopbackHTTPServer):
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                azure = AZURE_PATH.match(self.path)
                operation = azure[2] if azure else OPENAI_PATHS.get(self.path)
                if operation is None:
                    return self._send(404, {"error": {"message": "no route", "type": "invalid_request_error"}}, {})
                if operation == "edits":
                    try:
                        form = parse_form(raw, self.headers.get("content-type", ""))
                    except InvalidRequestError as exc:
                        return self._send(*_error(400, exc.message))
                    body = form.fields
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "fields": form.fields, "files": received(form)})
                else:
                    body = json.loads(raw)
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                if azure:
                    if "api-key" not in self.headers or "authorization" in self.headers:
                        return self._send(*_error(401, "Access denied due to invalid subscription key.", "401"))
                    if "model" in body:
                        return self._send(404, {"error": {"message": "the deployment implies the model", "code": "404"}}, {})
                if operation == "edits":
                    refused = edit_refusal(form)
                    if refused is not None:
                        return self._send(*refused)
                prompt = body.get("prompt", "")
                if prompt == "fail:slow":
                    time.sleep(SLOW_SECONDS)
                if prompt == "fail:malformed":
                    return self._send_raw(200, b'{"data": [{"b64_json": "trunc', "application/json", {})
                if prompt in FAILURES:
                    return self._send(*FAILURES[prompt])
                if prompt in ("fail:html", "fail:html-502"):
                    return self._send_raw(200 if prompt == "fail:html" else 502, HTML_PAGE, "text/html", {})
                if prompt == "fail:truncated":
                    data = json.dumps(fake.success(body)).encode()
                    self.close_connection = True
                    return self._send_raw(200, data[: len(data) // 2], "application/json", {"content-length-override": str(len(data))})
                if prompt in ("fail:short", "fail:not-image", "fail:bad-base64"):
                    payload = fake.success(body)
                    if prompt == "fail:short":
                        payload["data"] = payload["data"][:-1]
                    else:
                        fake_bytes = base64.b64encode(b"GIF89a not what was asked").decode()
                        payload["data"][-1]["b64_json"] = fake_bytes if prompt == "fail:not-image" else "!!not base64!!"
                    return self._send(200, payload, {})
                if prompt.startswith("flaky429:") and fake.attempt(prompt) <= int(prompt.split(":")[1]):
                    return self._send(*FAILURES["fail:429"])
                if prompt.startswith("flaky:") and fake.attempt(prompt) <= int(prompt.split(":")[1]):
                    return self._send(*FAILURES["fail:500"])
                if body.get("stream") in (True, "true"):
                    return self._stream(operation, prompt, body)
                return self._send(200, fake.success(body), {})

            def _stream(self, operation: str, prompt: str, body: dict[str, Any]) -> None:
                prefix = "image_edit" if operation == "edits" else "image_generation"
                pause = float(prompt.split(":")[1]) if prompt.startswith("slow-partials:") else 0.0
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for event in stream_events(prefix, prompt, body):
                    time.sleep(pause)
                    if event is None:  # fail:stream-cut
                        self.close_connection = True
                        return
                    self._chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                self._chunk(b"")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _send_raw(self, status: int, data: bytes, content_type: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", headers.pop("content-length-override", str(len(data))))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def attempt(self, prompt: str) -> int:
        with self._lock:
            self.attempts[prompt] = self.attempts.get(prompt, 0) + 1
            return self.attempts[prompt]

    @staticmethod
    def success(body: dict[str, Any]) -> dict[str, Any]:
        """n PNGs of the size asked (an edit's form fields are strings, a generation's JSON numbers)."""
        size = body.get("size", "1024x1024")
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        dalle3 = body.get("model") == "dall-e-3"
        data = [
            {
                "b64_json": base64.b64encode(png(width, height, index)).decode(),
                **({"revised_prompt": f"revised: {body['prompt']}"} if dalle3 else {}),
            }
            for index in range(int(body.get("n", 1)))
        ]
        usage = {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110} if str(body.get("model")).startswith("gpt-image") else None
        return {"created": int(time.time()), "data": data, **({"usage": usage} if usage else {})}


# A completed event's usage, as OpenAI's stream events carry it (image_gen_completed_event.py).
STREAM_USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
    "output_tokens": 100,
    "total_tokens": 110,
}


def stream_events(prefix: str, prompt: str, body: dict[str, Any]) -> list[dict[str, Any] | None]:
    """The events of a streamed answer, in order (None: the connection is cut there)."""
    size = body.get("size", "1024x1024")
    width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
    settings = {
        "background": body.get("background", "auto"),
        "output_format": body.get("output_format", "png"),
        "quality": body.get("quality", "auto"),
        "size": size,
    }
    partials = [
        {
            "type": f"{prefix}.partial_image",
            "b64_json": base64.b64encode(png(width, height, 100 + index)).decode(),
            "created_at": int(time.time()),
            "partial_image_index": index,
            **settings,
        }
        for index in range(int(body.get("partial_images", 0)))
    ]
    if prompt == "fail:mid-stream":
        error = {"message": "The server had an error while processing your request.", "type": "server_error", "param": None, "code": None}
        return [*partials[:1], {"type": "error", "error": error}]
    if prompt == "fail:stream-cut":
        return [*partials[:1], None]
    completed = [
        {
            "type": f"{prefix}.completed",
            "b64_json": item["b64_json"],
            "created_at": int(time.time()),
            "usage": STREAM_USAGE,
            **settings,
        }
        for item in FakeOpenAI.success(body)["data"]
    ]
    return [*partials, *completed]


def received(form: FormData) -> list[dict[str, Any]]:
    """Each file part as it arrived, in order: enough for a test to tell that every input reached OpenAI intact."""
    return [
        {
            "name": part.name,
            "filename": part.filename,
            "content_type": part.content_type,
            "bytes": len(part.data),
            "sha256": hashlib.sha256(part.data).hexdigest(),
        }
        for parts in form.files.values()
        for part in parts
    ]


def edit_refusal(form: FormData) -> tuple[int, Any, dict[str, str]] | None:
    """What OpenAI answers for an edit's files before it edits anything: no image, an image it cannot open, a mask
    without an alpha channel or of another size than the first image."""
    images = form.files.get("image", [])
    if not images:
        return _error(400, "Missing required parameter: 'image'.", "missing_required_parameter", "image")
    sizes = []
    for index, part in enumerate(images):
        try:
            with PILImage.open(io.BytesIO(part.data)) as image:
                image.load()
                sizes.append(image.size)
        except (OSError, SyntaxError, ValueError):
            status, payload, headers = FAILURES["fail:image-file"]
            message = payload["error"]["message"].replace("for image 1", f"for image {index}")
            return status, {"error": {**payload["error"], "message": message}}, headers
    for part in form.files.get("mask", []):
        try:
            with PILImage.open(io.BytesIO(part.data)) as mask:
                alpha, size = mask.mode in ("RGBA", "LA", "PA") or "transparency" in mask.info, mask.size
        except (OSError, SyntaxError, ValueError):
            alpha, size = False, None  # a mask that is no image has no alpha channel either
        if not alpha:
            return FAILURES["fail:mask-alpha"]
        if size != sizes[0]:
            return FAILURES["fail:mask-size"]
    return None
