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
Azure OpenAI's path ``/openai/deployments/<name>/images/generations?api-version=...`` is served too: it answers 401
without an ``api-key`` header (or with an ``Authorization`` one), 404 without ``api-version`` or for a body naming a
model, and then behaves as above. Any other prompt succeeds with PNGs of the requested size (drawn with Pillow, not with the
code under test)."""

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
AZURE_PATH = re.compile(r"^/openai/deployments/([^/?]+)/images/generations\?api-version=([^&]+)$")


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
                body = json.loads(raw)
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                azure = AZURE_PATH.match(self.path)
                if azure:
                    if "api-key" not in self.headers or "authorization" in self.headers:
                        return self._send(*_error(401, "Access denied due to invalid subscription key.", "401"))
                    if "model" in body:
                        return self._send(404, {"error": {"message": "the deployment implies the model", "code": "404"}}, {})
                elif self.path != "/v1/images/generations":
                    return self._send(404, {"error": {"message": "no route", "type": "invalid_request_error"}}, {})
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
                return self._send(200, fake.success(body), {})

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
        size = body.get("size", "1024x1024")
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        dalle3 = body.get("model") == "dall-e-3"
        data = [
            {
                "b64_json": base64.b64encode(png(width, height, index)).decode(),
                **({"revised_prompt": f"revised: {body['prompt']}"} if dalle3 else {}),
            }
            for index in range(body.get("n", 1))
        ]
        usage = {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110} if str(body.get("model")).startswith("gpt-image") else None
        return {"created": int(time.time()), "data": data, **({"usage": usage} if usage else {})}
