"""A fake Black Forest Labs API on loopback speaking real HTTP: ``POST /v1/<model>`` (``x-key``) answers
``{"id", "polling_url"}``, ``GET /v1/get_result?id=<id>`` (``x-key``) answers ``Pending`` for ``pending_polls`` polls,
then ``Ready`` with ``result.sample`` a URL on this server (``/delivery/<id>.<ext>``, which must be fetched WITHOUT
the key) serving the image, drawn with Pillow at the requested size (Ultra and Kontext: the ratio at about 4 MP and
1 MP).

The prompt picks failures, with BFL's own bodies: ``fail:402`` (no credits), ``fail:403``, ``fail:422`` (FastAPI's
validation body), ``fail:429`` (with ``Retry-After: 1``), ``fail:500``, ``fail:503``, ``flaky429:N:<anything>`` (429
N times for that prompt, then success), ``fail:request-moderated``, ``fail:content-moderated``, ``fail:not-found``
(``Task not found``), ``fail:error`` (status ``Error``), ``fail:slow`` (Pending forever), ``fail:malformed`` (a
submit answer without ``polling_url``), ``fail:evil-poll`` (a polling URL on another host), ``fail:evil-sample`` (a
result URL on another host). A wrong key is BFL's 403 ``{"detail": "Not authenticated"}``.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image as PILImage

from tests.fakes.loopback import LoopbackHTTPServer, QuietHandler

API_KEY = "bfl-test-key-0000"
RATIO_SIZES = {
    "flux-pro-1.1-ultra": {"1:1": (2048, 2048), "16:9": (2752, 1536), "9:16": (1536, 2752), "4:3": (2368, 1792), "3:4": (1792, 2368)},
    "flux-kontext-pro": {"1:1": (1024, 1024), "16:9": (1392, 752), "9:16": (752, 1392), "4:3": (1184, 880), "3:4": (880, 1184)},
}
ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "fail:402": (402, {"detail": "Insufficient credits. Please add credits to your account."}),
    "fail:403": (403, {"detail": "Not authenticated"}),
    "fail:422": (
        422,
        {"detail": [{"loc": ["body", "width"], "msg": "Input should be less than or equal to 1440", "type": "less_than_equal"}]},
    ),
    "fail:429": (429, {"detail": "You have exceeded the number of active tasks. Please wait and try again."}),
    "fail:500": (500, {"detail": "Internal Server Error"}),
    "fail:503": (503, {"detail": "Service temporarily unavailable"}),
}
FINAL_STATUSES = {
    "fail:request-moderated": "Request Moderated",
    "fail:content-moderated": "Content Moderated",
    "fail:not-found": "Task not found",
    "fail:error": "Error",
}


def image(width: int, height: int, output_format: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), (200, 120, 40)).save(buffer, format="JPEG" if output_format == "jpeg" else "PNG")
    return buffer.getvalue()


class FakeBfl(LoopbackHTTPServer):
    def __init__(self, *, pending_polls: int = 2) -> None:
        self.pending_polls = pending_polls
        self.requests: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.flaky: dict[str, int] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                fake._post(self)

            def do_GET(self) -> None:
                fake._get(self)

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.tasks.clear()
            self.flaky.clear()

    def _record(self, handler: BaseHTTPRequestHandler, body: Any = None) -> None:
        with self.lock:
            self.requests.append({"method": handler.command, "path": handler.path, "headers": dict(handler.headers), "json": body})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("content-type", (headers or {}).pop("content-type", "application/json"))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        self._record(handler, body)
        model = urlsplit(handler.path).path.removeprefix("/v1/")
        if handler.headers.get("x-key") != API_KEY:
            return self._send(handler, 403, {"detail": "Not authenticated"})
        prompt = str(body.get("prompt", ""))
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
        task_id = str(uuid.uuid4())
        if model in RATIO_SIZES:
            width, height = RATIO_SIZES[model].get(str(body.get("aspect_ratio")), (1024, 1024))
        else:
            width, height = int(body.get("width", 1024)), int(body.get("height", 768))
        with self.lock:
            self.tasks[task_id] = {"prompt": prompt, "polls": 0, "size": (width, height), "format": body.get("output_format", "jpeg")}
        if prompt == "fail:malformed":
            return self._send(handler, 200, {"id": task_id})
        host = "http://169.254.169.254" if prompt == "fail:evil-poll" else self.origin
        self._send(handler, 200, {"id": task_id, "polling_url": f"{host}/v1/get_result?id={task_id}"})

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        self._record(handler)
        parts = urlsplit(handler.path)
        if parts.path.startswith("/delivery/"):
            task = self.tasks.get(parts.path.removeprefix("/delivery/").rsplit(".", 1)[0])
            if task is None:
                return self._send(handler, 404, b"<Error><Code>BlobNotFound</Code></Error>", {"content-type": "application/xml"})
            content_type = "image/jpeg" if task["format"] == "jpeg" else "image/png"
            return self._send(handler, 200, image(*task["size"], task["format"]), {"content-type": content_type})
        if parts.path != "/v1/get_result":
            return self._send(handler, 404, {"detail": "Not Found"})
        if handler.headers.get("x-key") != API_KEY:
            return self._send(handler, 403, {"detail": "Not authenticated"})
        task_id = (parse_qs(parts.query).get("id") or [""])[0]
        with self.lock:
            task = self.tasks.get(task_id)
            if task is not None:
                task["polls"] += 1
        if task is None:
            return self._send(handler, 200, {"id": task_id, "status": "Task not found", "result": None})
        prompt = task["prompt"]
        if prompt in FINAL_STATUSES:
            status = FINAL_STATUSES[prompt]
            details = {"Moderation Reasons": ["Derivative Works"]} if "Moderated" in status else None
            return self._send(handler, 200, {"id": task_id, "status": status, "result": None, "details": details})
        if prompt == "fail:slow" or task["polls"] <= self.pending_polls:
            return self._send(handler, 200, {"id": task_id, "status": "Pending", "result": None, "progress": 0.5})
        ext = "jpg" if task["format"] == "jpeg" else "png"
        host = "https://evil.example.com" if prompt == "fail:evil-sample" else self.origin
        result = {"sample": f"{host}/delivery/{task_id}.{ext}", "prompt": prompt, "seed": 42, "start_time": 0.0, "end_time": 1.0}
        self._send(handler, 200, {"id": task_id, "status": "Ready", "result": result})
