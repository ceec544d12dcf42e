"""A fake Gemini API (``/v1beta/models/<model>:generateContent`` and ``:predict``) on loopback speaking real HTTP.

Auth as Google answers it: no ``x-goog-api-key`` is a 403 ``PERMISSION_DENIED``, a wrong one a 400
``INVALID_ARGUMENT`` whose ``ErrorInfo`` reason is ``API_KEY_INVALID``; an unknown model is a 404 ``NOT_FOUND``.
The prompt picks the behaviour: ``fail:400`` (INVALID_ARGUMENT), ``fail:precondition`` (FAILED_PRECONDITION, "User
location is not supported"), ``fail:403`` (PERMISSION_DENIED), ``fail:404``, ``fail:429`` (RESOURCE_EXHAUSTED with a
``RetryInfo`` of 1 s and no Retry-After header, as Google sends it), ``fail:500`` (INTERNAL), ``fail:503``
(UNAVAILABLE), ``fail:504`` (DEADLINE_EXCEEDED), ``fail:blocked`` (200, ``promptFeedback.blockReason``
PROHIBITED_CONTENT, no candidates), ``fail:filtered`` (Gemini: 200, a candidate ending IMAGE_SAFETY without content;
Imagen: one prediction fewer than asked, with a ``raiFilteredReason`` entry), ``fail:all-filtered`` (Imagen: ``{}``),
``fail:text`` (Gemini: a text part and no image, finish STOP), ``fail:wrong-format`` (the other format than the
model draws), ``fail:malformed`` (truncated JSON), ``fail:slow`` (sleeps past any deadline), ``flaky429:N:<x>`` and
``flaky:N:<x>`` (429 / 500 for the first N requests with that prompt, then success). The error bodies are Google's
``{"error": {"code", "message", "status", "details"}}``.

Otherwise it draws images with Pillow at the pixels Google's tables give for the ``aspectRatio`` (and
``imageSize``) asked (its own copy of the tables, not the code under test's): PNG from Gemini 2.5 Flash Image and
Imagen (JPEG with ``outputOptions.mimeType`` image/jpeg), JPEG from the Gemini 3 models, which also answer a thought
image first (``"thought": true``) as Gemini 3 does. Each request is recorded with its path, headers and JSON."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image as PILImage

from tests.fakes.loopback import LoopbackHTTPServer, QuietHandler

SLOW_SECONDS = 30.0
KEY = "AIzaSyTEST-fake-google-key-000000000000"
PATH = re.compile(r"^/v1beta/models/([^/:?]+):(generateContent|predict)$")
GEMINI_25 = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
GEMINI_3_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
SCALE = {"1K": 1, "2K": 2, "4K": 4}
IMAGEN = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408), "16:9": (1408, 768)}
GEMINI_MODELS = {"gemini-2.5-flash-image": "PNG", "gemini-3.1-flash-image": "JPEG", "gemini-3-pro-image": "JPEG"}
FILTERED_REASON = "Unable to show generated images. All images were filtered out because they violated Vertex AI's usage guidelines."
IMAGEN_MODELS = {"imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-4.0-ultra-generate-001"}


def picture(width: int, height: int, fmt: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), ((seed * 40) % 256, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def _error(status: int, name: str, message: str, *details: dict[str, Any]) -> tuple[int, Any]:
    error: dict[str, Any] = {"code": status, "message": message, "status": name}
    if details:
        error["details"] = list(details)
    return status, {"error": error}


def _retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


BAD_KEY = _error(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
)
NO_KEY = _error(
    403,
    "PERMISSION_DENIED",
    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form "
    "of API consumer identity to call this API.",
)
FAILURES: dict[str, tuple[int, Any]] = {
    "fail:400": _error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "fail:precondition": _error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
    "fail:403": _error(403, "PERMISSION_DENIED", "You do not have permission to access this model."),
    "fail:404": _error(
        404,
        "NOT_FOUND",
        "models/gemini-0-image is not found for API version v1beta, or is not supported for generateContent. Call "
        "ListModels to see the list of available models and their supported methods.",
    ),
    "fail:429": _error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more information on this "
        "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests"}],
        },
        _retry_info("1s"),
    ),
    "fail:500": _error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    ),
    "fail:503": _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "fail:504": _error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


class FakeGoogle(LoopbackHTTPServer):
    def __init__(self, key: str = KEY) -> None:
        self.key = key
        self.requests: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1beta"

    def attempt(self, prompt: str) -> int:
        with self._lock:
            self.attempts[prompt] = self.attempts.get(prompt, 0) + 1
            return self.attempts[prompt]

    def requests_with(self, prompt: str) -> int:
        return sum(1 for request in self.requests if prompt_of(request["json"]) == prompt)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                match = PATH.match(self.path)
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._send(*_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                if "x-goog-api-key" not in self.headers:
                    return self._send(*NO_KEY)
                if self.headers["x-goog-api-key"] != fake.key:
                    return self._send(*BAD_KEY)
                model, method = (match[1], match[2]) if match else ("", "")
                known = GEMINI_MODELS if method == "generateContent" else IMAGEN_MODELS
                if model not in known:
                    return self._send(*FAILURES["fail:404"])
                prompt = prompt_of(body)
                if prompt == "fail:slow":
                    time.sleep(SLOW_SECONDS)
                if prompt == "fail:malformed":
                    return self._send_raw(200, b'{"candidates": [{"content": {"parts": [{"inlineData": {"da')
                if prompt in FAILURES:
                    return self._send(*FAILURES[prompt])
                if prompt.startswith("flaky429:") and fake.attempt(prompt) <= int(prompt.split(":")[1]):
                    return self._send(*FAILURES["fail:429"])
                if prompt.startswith("flaky:") and fake.attempt(prompt) <= int(prompt.split(":")[1]):
                    return self._send(*FAILURES["fail:500"])
                if method == "generateContent":
                    return self._send(200, gemini_answer(model, prompt, body))
                return self._send(200, imagen_answer(prompt, body))

            def _send(self, status: int, payload: Any) -> None:
                self._send_raw(status, json.dumps(payload).encode())

            def _send_raw(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def prompt_of(body: Any) -> str:
    try:
        if "instances" in body:
            return str(body["instances"][0]["prompt"])
        return str(body["contents"][0]["parts"][0]["text"])
    except (KeyError, IndexError, TypeError):
        return ""


def _inline(data: bytes, fmt: str) -> dict[str, Any]:
    return {"inlineData": {"mimeType": f"image/{fmt.lower()}", "data": base64.b64encode(data).decode()}}


def gemini_answer(model: str, prompt: str, body: dict[str, Any]) -> dict[str, Any]:
    usage = {"promptTokenCount": 7, "candidatesTokenCount": 1290, "totalTokenCount": 1297}
    if prompt == "fail:blocked":
        return {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}}
    if prompt == "fail:filtered":
        return {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}], "usageMetadata": usage}
    if prompt == "fail:text":
        parts = [{"text": "I can only draw cats today."}]
        return {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP"}], "usageMetadata": usage}
    config = body.get("generationConfig", {}).get("imageConfig", {})
    ratio, tier = config.get("aspectRatio", "1:1"), config.get("imageSize", "1K")
    fmt = GEMINI_MODELS[model]
    if fmt == "PNG":
        width, height = GEMINI_25[ratio]
    else:
        width, height = (side * SCALE[tier] for side in GEMINI_3_1K[ratio])
    if prompt == "fail:wrong-format":
        fmt = "JPEG" if fmt == "PNG" else "PNG"
    parts: list[dict[str, Any]] = []
    if model != "gemini-2.5-flash-image":
        parts.append({**_inline(picture(64, 64, fmt, 9), fmt), "thought": True})
        parts.append({"text": "Drawing it.", "thought": True})
    parts.append(_inline(picture(width, height, fmt, 1), fmt))
    return {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage}


def imagen_answer(prompt: str, body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    count, ratio = int(parameters.get("sampleCount", 4)), parameters.get("aspectRatio", "1:1")
    mime = parameters.get("outputOptions", {}).get("mimeType", "image/png")
    fmt = "JPEG" if mime == "image/jpeg" else "PNG"
    if prompt == "fail:wrong-format":
        fmt = "JPEG" if fmt == "PNG" else "PNG"
    if prompt == "fail:all-filtered":
        return {}
    width, height = IMAGEN[ratio]
    predictions: list[dict[str, Any]] = [
        {"bytesBase64Encoded": base64.b64encode(picture(width, height, fmt, index)).decode(), "mimeType": f"image/{fmt.lower()}"}
        for index in range(count)
    ]
    if prompt == "fail:filtered":
        predictions[-1] = {"raiFilteredReason": FILTERED_REASON}
    return {"predictions": predictions}
