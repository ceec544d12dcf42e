"""A fault-injecting HTTP proxy on loopback in front of a real S3 server, for tests of S3 failures.

Point ``AWS_ENDPOINT_URL_S3`` at ``proxy.endpoint_url``: every request is forwarded byte for byte, the Host header
included, so SigV4 signatures made for the proxy's address still verify at the server behind it. That holds for
presigned URLs too: the code under test signs them for the proxy, and a GET of one goes through the proxy to S3.

A ``Fault`` answers a matching request itself, with S3's XML error, instead of forwarding it: ``method`` and a regular
expression on the path (the key is in it: ``/<bucket>/images/.../<request-id>/<index>.png``), optionally only the
first ``times`` matching requests (botocore retries a 500 up to its ``max_attempts``), optionally only requests
whose ``X-Amz-Target`` header matches ``target`` (JSON protocols such as DynamoDB's post every operation to ``/``:
``DynamoDB_20120810.PutItem``). Besides an error (``mode="error"``), a fault can be slowness:
- ``stall``: read the request, then never answer (the connection stays open, silent, until ``release()``, ``reset()``
  or the proxy's end; then it is closed with no response). Nothing reaches the server behind.
- ``delay``: wait ``seconds``, then forward the request and answer (a write that lands late).
- ``drip``: forward the request at once (S3 stores the object), then send the answer a few bytes at a time over
  ``seconds``: no single silence is long, so only a deadline, not a socket timeout, cuts it short.
Every request is logged as (method, path and query, status answered; 0 for a stall never answered).

The same proxy works in front of any HTTP service that signs with SigV4 (moto server for DynamoDB and SQS).
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.fakes.loopback import LoopbackHTTPServer, QuietHandler

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


@dataclass
class Fault:
    method: str
    path: str  # a regular expression searched in the request's path and query
    status: int = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again."
    times: int | None = None  # None: every matching request
    mode: str = "error"  # error | stall | delay | drip
    seconds: float = 0.0  # delay: before forwarding; drip: how long the answer takes to send
    target: str | None = None  # a regular expression searched in the X-Amz-Target header
    hits: int = 0

    def matches(self, method: str, path: str, amz_target: str = "") -> bool:
        return (
            method == self.method
            and re.search(self.path, path) is not None
            and (self.target is None or re.search(self.target, amz_target) is not None)
            and (self.times is None or self.hits < self.times)
        )

    def body(self, target: str) -> bytes:
        resource = urlsplit(target).path
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{self.message}</Message><Resource>{resource}</Resource>"
            "<RequestId>fault-proxy</RequestId></Error>"
        ).encode()


class S3FaultProxy(LoopbackHTTPServer):
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        super().__init__(self._handler())

    @property
    def endpoint_url(self) -> str:
        return self.origin

    def inject(
        self,
        method: str,
        path: str,
        *,
        times: int | None = None,
        status: int = 500,
        code: str = "InternalError",
        mode: str = "error",
        seconds: float = 0.0,
        target: str | None = None,
    ) -> Fault:
        if mode not in ("error", "stall", "delay", "drip"):
            raise ValueError(f"unknown fault mode {mode!r}")
        fault = Fault(method, path, status=status, code=code, times=times, mode=mode, seconds=seconds, target=target)
        with self._lock:
            self.faults.append(fault)
        return fault

    def release(self) -> None:
        """End every stalled request (its connection closes without an answer); later stalls stall again."""
        with self._lock:
            self._release.set()
            self._release = threading.Event()

    def reset(self) -> None:
        self.release()
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def __exit__(self, *exc: object) -> None:
        self.release()
        super().__exit__(*exc)

    def requests(self, method: str, pattern: str = "") -> list[tuple[str, str, int]]:
        with self._lock:
            return [entry for entry in self.log if entry[0] == method and re.search(pattern, entry[1])]

    def _fault_for(self, method: str, target: str, amz_target: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, target, amz_target):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.log.append((method, target, status))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def _raw_body(self) -> bytes:
                """The body exactly as sent (chunk framing included), so what was signed is what S3 gets."""
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    raw = bytearray()
                    while True:
                        line = self.rfile.readline()
                        raw += line
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                                raw += trailer
                            raw += b"\r\n"
                            return bytes(raw)
                        raw += self.rfile.read(size) + self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._raw_body()
                fault = proxy._fault_for(self.command, self.path, self.headers.get("X-Amz-Target", ""))
                if fault is not None and fault.mode == "error":
                    payload = fault.body(self.path)
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy._record(self.command, self.path, fault.status)
                    return
                if fault is not None and fault.mode == "stall":
                    proxy._record(self.command, self.path, 0)  # logged on arrival: it is never answered
                    with proxy._lock:
                        released = proxy._release
                    released.wait(120)
                    self.close_connection = True
                    return
                if fault is not None and fault.mode == "delay":
                    time.sleep(fault.seconds)
                status, reason, headers, data = self._forward(body)
                answer = [f"{self.protocol_version} {status} {reason}\r\n".encode("latin-1")]
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP:
                        answer.append(f"{name}: {value}\r\n".encode("latin-1"))
                length = {name.lower(): value for name, value in headers}.get("content-length")
                answer.append(f"Content-Length: {length if self.command == 'HEAD' and length else len(data)}\r\n\r\n".encode())
                raw = b"".join(answer) + (b"" if self.command == "HEAD" else data)
                if fault is not None and fault.mode == "drip":
                    pieces = max(1, int(fault.seconds / 0.1))
                    step = -(-len(raw) // pieces)
                    for start in range(0, len(raw), step):
                        self.wfile.write(raw[start : start + step])
                        self.wfile.flush()
                        time.sleep(fault.seconds / pieces)
                else:
                    self.wfile.write(raw)
                proxy._record(self.command, self.path, status)

            def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() != "expect":  # this proxy already answered 100-continue; never signed
                            upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    return response.status, response.reason, response.getheaders(), response.read()
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
