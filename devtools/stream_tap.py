"""A Runtime API proxy that sees a function's streamed answers as they are written (docs/streaming.md).

The RIE reads a streamed ``/response`` body whole before it answers the invoke (``io.ReadAll``), so the local
front cannot take chunks from it. The tap sits between the runtime and the RIE: the runtime's
``AWS_LAMBDA_RUNTIME_API`` points at it, and it forwards every call to the RIE's Runtime API. For a chunked
``/response`` it forwards each chunk to the RIE as it arrives (so the RIE's deadlines, 413 and REPORT stay its
own) and hands the pieces to whoever waits in :meth:`StreamTap.next_response`: the prelude (parsed), each payload
chunk, and the end with its trailers, each stamped with ``time.monotonic()`` when the tap read it.

    runtime --AWS_LAMBDA_RUNTIME_API--> StreamTap --> RIE Runtime API      (one tap per RIE process)

Limits: like Lambda's 6 MiB response limit (the RIE refuses bodies over 6,291,556 bytes with 413), the tap
delivers at most ``max_bytes`` (6 MiB) of a body, prelude included; past that its last piece is ``aborted`` with
``Function.ResponseSizeTooLarge``, it drops the rest, and keeps forwarding so the runtime still gets the RIE's 413.
A runtime that dies or is killed mid-body (the RIE's timeout) ends the response ``aborted`` too. An invocation
that fails before posting anything produces no piece: the front calls :meth:`StreamTap.interrupt` once the RIE's
invoke answer is in, which ends whatever is still open (and a ``next_response`` still waiting for an invocation).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from devtools.procs import LOOPBACK

MAX_RESPONSE_BYTES = 6 * 1024 * 1024
PRELUDE_DELIMITER = b"\0" * 8
HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_HEADER = "Lambda-Runtime-Function-Error-Body"
# Requests nobody claimed with next_response are kept this many deep, then the oldest are dropped.
MAX_UNCLAIMED = 8
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
INVOCATION_PATH = re.compile(r"^/2018-06-01/runtime/invocation/(?P<id>[^/]+)/(?P<what>response|error)$")


class PieceKind(StrEnum):
    PRELUDE = "prelude"  # ``prelude``: the JSON object before the delimiter
    DATA = "data"  # ``data``: one payload chunk as the runtime wrote it
    END = "end"  # the body ended; ``trailers`` (error type and base64 body if the function failed mid-stream)
    FUNCTION_ERROR = "function_error"  # the runtime posted /error: ``data`` is the error JSON, ``error_type`` its type
    BUFFERED = "buffered"  # a /response that was not streamed: ``data`` is the whole body
    ABORTED = "aborted"  # the tap gave up on it: ``reason`` says why


TERMINAL = {PieceKind.END, PieceKind.FUNCTION_ERROR, PieceKind.BUFFERED, PieceKind.ABORTED}


@dataclass(frozen=True)
class StreamPiece:
    """One thing the tap saw of an invocation's answer, stamped with ``time.monotonic()`` when it was read."""

    kind: PieceKind
    request_id: str
    at: float
    data: bytes = b""
    prelude: Mapping[str, Any] | None = None
    trailers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL

    @property
    def error_type(self) -> str | None:
        """The function's error type: the /error header, or the trailer of a stream that failed mid-way."""
        return next((v for k, v in self.trailers.items() if k.lower() == ERROR_TYPE_HEADER.lower()), None)


class _BodyParser:
    """Splits a streamed body into prelude and payload pieces as chunks arrive, up to ``max_bytes``."""

    def __init__(self, request_id: str, expects_prelude: bool, max_bytes: int, emit: Callable[[StreamPiece], None]) -> None:
        self.request_id = request_id
        self.expects_prelude = expects_prelude
        self.max_bytes = max_bytes
        self.emit = emit
        self.head = bytearray()
        self.total = 0
        self.done = False

    def _piece(self, kind: PieceKind, **fields: Any) -> None:
        self.emit(StreamPiece(kind, self.request_id, time.monotonic(), **fields))
        self.done = self.done or kind in TERMINAL

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.total += len(data)
        if self.total > self.max_bytes:
            self._piece(PieceKind.ABORTED, reason=f"Function.ResponseSizeTooLarge: the response is over {self.max_bytes} bytes")
            return
        if not self.expects_prelude:
            self._piece(PieceKind.DATA, data=data)
            return
        self.head += data
        end = self.head.find(PRELUDE_DELIMITER)
        if end < 0:
            return
        try:
            prelude = json.loads(bytes(self.head[:end]))
        except ValueError as exc:
            prelude, reason = None, f"the prelude is not JSON: {exc}"
        else:
            reason = "" if isinstance(prelude, dict) else "the prelude is not a JSON object"
        if reason:
            self._piece(PieceKind.ABORTED, reason=reason)
            return
        rest = bytes(self.head[end + len(PRELUDE_DELIMITER) :])
        self.expects_prelude, self.head = False, bytearray()
        self._piece(PieceKind.PRELUDE, prelude=prelude)
        if rest:
            self._piece(PieceKind.DATA, data=rest)

    def finish(self, trailers: Mapping[str, str]) -> None:
        if self.done:
            return
        if self.expects_prelude:
            self._piece(PieceKind.ABORTED, reason="the body ended before the prelude's delimiter")
        else:
            self._piece(PieceKind.END, trailers=dict(trailers))

    def abort(self, reason: str) -> None:
        if not self.done:
            self._piece(PieceKind.ABORTED, reason=reason)


class _BrokenBody(Exception):
    """The runtime's chunked body ended early or is not chunked encoding."""


class StreamTap:
    """A Runtime API proxy on loopback in front of ``upstream`` (the RIE's ``--runtime-api-address``, host:port)."""

    def __init__(self, upstream: str, *, port: int = 0, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.upstream = upstream
        self.max_bytes = max_bytes
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._pieces: dict[str, deque[StreamPiece]] = {}
        self._unclaimed: deque[str] = deque()
        self._open: set[str] = set()
        self._interruptions = 0
        self._last_interruption = ""

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("StreamTap is not started")
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """What the runtime's ``AWS_LAMBDA_RUNTIME_API`` must be."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> int:
        """Listen on loopback; returns the port."""
        if self._server is None:
            server = ThreadingHTTPServer((LOOPBACK, self._requested_port), _handler_for(self))
            server.daemon_threads = True  # a runtime's long-polling GET /next must not hold up stop()
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, name=f"stream-tap-{self.port}", daemon=True)
            self._thread.start()
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.interrupt("the tap stopped")

    def next_response(self, request_id: str | None = None, timeout: float = 30.0) -> Iterator[StreamPiece]:
        """The pieces of one invocation's answer until its terminal piece (end, function_error, buffered, aborted).

        ``request_id=None`` takes the oldest invocation the runtime fetched that nobody has claimed yet: with one
        invocation at a time per RIE, the one just invoked. ``timeout`` bounds each wait (for the invocation, then
        for each piece); past it TimeoutError. An :meth:`interrupt` while waiting for the invocation yields one
        ``aborted`` piece with an empty request id.
        """
        with self._changed:
            if request_id is None:
                seen = self._interruptions
                if not self._changed.wait_for(lambda: self._unclaimed or self._interruptions != seen, timeout):
                    raise TimeoutError(f"the runtime fetched no invocation within {timeout} s")
                request_id = self._unclaimed.popleft() if self._unclaimed else None
            elif request_id in self._unclaimed:
                self._unclaimed.remove(request_id)
            queue = self._pieces.setdefault(request_id, deque()) if request_id is not None else None
            reason = self._last_interruption
        if queue is None or request_id is None:
            yield StreamPiece(PieceKind.ABORTED, "", time.monotonic(), reason=reason)
            return
        while True:
            with self._changed:
                if not self._changed.wait_for(lambda: bool(queue), timeout):
                    raise TimeoutError(f"no new piece of invocation {request_id} within {timeout} s")
                piece = queue.popleft()
                if piece.terminal:
                    self._pieces.pop(request_id, None)
            yield piece
            if piece.terminal:
                return

    def interrupt(self, reason: str) -> None:
        """End every open answer with an ``aborted`` piece, and wake a next_response still waiting for one."""
        with self._changed:
            for request_id in sorted(self._open):
                self._pieces.setdefault(request_id, deque()).append(
                    StreamPiece(PieceKind.ABORTED, request_id, time.monotonic(), reason=reason)
                )
            self._open.clear()
            self._interruptions += 1
            self._last_interruption = reason
            self._changed.notify_all()

    def _fetched(self, request_id: str) -> None:
        with self._changed:
            self._pieces.setdefault(request_id, deque())
            self._open.add(request_id)
            self._unclaimed.append(request_id)
            while len(self._unclaimed) > MAX_UNCLAIMED:
                dropped = self._unclaimed.popleft()
                self._pieces.pop(dropped, None)
                self._open.discard(dropped)
            self._changed.notify_all()

    def _emit(self, piece: StreamPiece) -> None:
        with self._changed:
            if piece.request_id not in self._open:
                return  # an answer interrupted or dropped already: its late pieces go nowhere
            self._pieces.setdefault(piece.request_id, deque()).append(piece)
            if piece.terminal:
                self._open.discard(piece.request_id)
            self._changed.notify_all()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _handler_for(tap: StreamTap) -> type[BaseHTTPRequestHandler]:
    class Handler(_TapHandler):
        pass

    Handler.tap = tap
    return Handler


class _TapHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as awslambdaric's client expects
    tap: StreamTap

    def log_message(self, format: str, *args: Any) -> None:
        """The RIE logs every call already."""

    def do_GET(self) -> None:
        upstream = self._upstream()
        try:
            upstream.request("GET", self.path, headers=self._forward_headers())
            response = upstream.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._fail(exc)
            return
        finally:
            upstream.close()
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        if self.path.endswith("/invocation/next") and response.status == 200 and request_id:
            self.tap._fetched(request_id)  # before the runtime has the event, so before any piece of its answer
        self._relay(response, body)

    def do_POST(self) -> None:
        match = INVOCATION_PATH.match(self.path)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if match and match["what"] == "response" and chunked:
            self._stream(match["id"])
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if not chunked else self._read_chunked_whole()
        upstream = self._upstream()
        try:
            headers = self._forward_headers() | {"Content-Length": str(len(body))}
            upstream.request("POST", self.path, body=body, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._fail(exc)
            return
        finally:
            upstream.close()
        if match:
            at = time.monotonic()
            if match["what"] == "error":
                trailers = {ERROR_TYPE_HEADER: self.headers.get(ERROR_TYPE_HEADER, "")}
                self.tap._emit(StreamPiece(PieceKind.FUNCTION_ERROR, match["id"], at, data=body, trailers=trailers))
            else:
                self.tap._emit(StreamPiece(PieceKind.BUFFERED, match["id"], at, data=body))
        elif self.path.endswith("/runtime/init/error"):
            self.tap.interrupt(f"the runtime's init failed: {self.headers.get(ERROR_TYPE_HEADER, '')}")
        self._relay(response, answer)

    def _stream(self, request_id: str) -> None:
        """Parse and forward a chunked /response chunk by chunk, then relay the RIE's answer."""
        expects_prelude = self.headers.get("Content-Type", "").split(";")[0].strip() == HTTP_INTEGRATION_CONTENT_TYPE
        parser = _BodyParser(request_id, expects_prelude, self.tap.max_bytes, self.tap._emit)
        upstream = self._upstream()
        upstream_error: BaseException | None = None

        def forward(data: bytes) -> None:
            nonlocal upstream_error
            if upstream_error is None:
                try:
                    upstream.send(data)
                except OSError as exc:
                    upstream_error = exc

        try:
            upstream.putrequest("POST", self.path, skip_accept_encoding=True)
            for name, value in self._forward_headers().items():
                upstream.putheader(name, value)
            upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
        except OSError as exc:
            upstream_error = exc
        try:
            while data := self._read_chunk():
                parser.feed(data)
                forward(b"%x\r\n%b\r\n" % (len(data), data))
            raw_trailers = self._read_trailers()
        except (OSError, _BrokenBody) as exc:
            parser.abort(f"the runtime's response broke off: {exc}")
            upstream.close()
            self.close_connection = True
            return
        trailers = {}
        for line in raw_trailers:
            name, value = line.decode("latin-1").split(":", 1)
            trailers[name.strip()] = value.strip()
        parser.finish(trailers)
        forward(b"0\r\n" + b"".join(line + b"\r\n" for line in raw_trailers) + b"\r\n")
        try:
            if upstream_error is not None:
                raise upstream_error
            response = upstream.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._fail(exc)
            return
        finally:
            upstream.close()
        self._relay(response, answer)

    def _read_chunk(self) -> bytes:
        """The next chunk's data, b"" for the last chunk."""
        line = self.rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise _BrokenBody("the connection closed inside the body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BrokenBody(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            return b""
        data = self.rfile.read(size)
        if len(data) < size or self.rfile.read(2) != b"\r\n":
            raise _BrokenBody("the connection closed inside a chunk")
        return data

    def _read_trailers(self) -> list[bytes]:
        lines = []
        while (line := self.rfile.readline(65536)) not in (b"\r\n", b"\n"):
            if not line.endswith(b"\n"):
                raise _BrokenBody("the connection closed inside the trailers")
            lines.append(line.rstrip(b"\r\n"))
        return [line for line in lines if b":" in line]

    def _read_chunked_whole(self) -> bytes:
        body = bytearray()
        while data := self._read_chunk():
            body += data
        self._read_trailers()
        return bytes(body)

    def _upstream(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.tap.upstream, timeout=None)

    def _forward_headers(self) -> dict[str, str]:
        return {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP | {"host"}}

    def _relay(self, response: http.client.HTTPResponse, body: bytes) -> None:
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self._finish(body)

    def _finish(self, body: bytes) -> None:
        try:
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the runtime is gone (the RIE killed it, or it is shutting down): nobody to tell
            self.close_connection = True

    def _fail(self, exc: BaseException) -> None:
        body = json.dumps({"errorMessage": f"stream tap: the RIE's Runtime API failed: {exc!r}", "errorType": "TapUpstreamError"}).encode()
        self.send_response_only(502)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self._finish(body)
        self.close_connection = True
