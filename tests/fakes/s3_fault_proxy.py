"""A fault-injecting HTTP proxy on loopback in front of a real S3 server, for tests of S3 failures.

Point ``AWS_ENDPOINT_URL_S3`` at ``proxy.endpoint_url``: every request is forwarded byte for byte, the Host header
included, so SigV4 signatures made for the proxy's address still verify at the server behind it. That holds for
presigned URLs too: the code under test signs them for the proxy, and a GET of one goes through the proxy to S3.

A ``Fault`` answers a matching request itself, with S3's XML error, instead of forwarding it: ``method`` and a regular
expression on the path (the key is in it: ``/<bucket>/images/.../<request-id>/<index>.png``), optionally only the
first ``times`` matching requests (botocore retries a 500 up to its ``max_attempts``). Every request is logged as
(method, path and query, status answered).
"""

from __future__ import annotations

import http.client
import re
import threading
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
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        return method == self.method and re.search(self.path, target) is not None and (self.times is None or self.hits < self.times)

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
        super().__init__(self._handler())

    @property
    def endpoint_url(self) -> str:
        return self.origin

    def inject(self, method: str, path: str, *, times: int | None = None, status: int = 500, code: str = "InternalError") -> Fault:
        fault = Fault(method, path, status=status, code=code, times=times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def requests(self, method: str, pattern: str = "") -> list[tuple[str, str, int]]:
        with self._lock:
            return [entry for entry in self.log if entry[0] == method and re.search(pattern, entry[1])]

    def _fault_for(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, target):
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
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None:
                    payload = fault.body(self.path)
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy._record(self.command, self.path, fault.status)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() != "expect":  # this proxy already answered 100-continue; never signed
                            upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                proxy._record(self.command, self.path, response.status)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
