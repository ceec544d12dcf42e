"""An HTTP front that plays API Gateway (REST, Lambda proxy integration) for a local function.

Each request becomes the v1 proxy event ``sam local start-api`` builds (every path goes to the function,
with ``resource`` equal to the path, as for this project's static routes), is invoked through a
``FunctionPool`` and the proxy answer becomes the HTTP response. API Gateway's own limits hold: a body over
10 MB is a 413, a function that has not answered after 29 s a 504, a crash or malformed answer a 502.

Authorization follows template.yaml's ``AuthMode``: ``ApiKey`` checks Bearer keys (``api_keys``; none: auth off),
``IAM`` checks AWS Signature Version 4 against ``iam_credentials`` (devtools/sigv4.py) and puts the caller in
``requestContext.identity``. The public routes need neither.

Streaming (docs/streaming.md): given ``invoke_stream`` (``FunctionPool.invoke_stream``), the front plays a REST
route with ``responseTransferMode: STREAM``. It relays the function's answer as the stream tap hands it over: the
prelude becomes the status line and headers (``Transfer-Encoding: chunked``), each payload piece one chunk, sent at
once. A function that fails or is cut off after that (an error trailer, the 6 MiB cap, its timeout) gets the
connection closed without the last chunk, which a client sees as a truncated body; one that fails before the
prelude is a 502 as today. Such a route has no 29 s limit: 15 minutes in all and 5 minutes without a piece.
``parse_proxy_response`` reads a streamed answer whole (prelude, eight NUL bytes, body) as well.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from devtools.procs import LOOPBACK, StartupError
from devtools.rie import Invocation, PoolBusy
from devtools.sigv4 import SignatureError, SigV4Verifier
from devtools.stream_tap import PRELUDE_DELIMITER, PieceKind, StreamPiece
from imagegen.auth import bearer_key

MAX_REQUEST_BYTES = 10 * 1024 * 1024
# template.yaml's BinaryMediaTypes: API Gateway hands such bodies to the function base64-encoded, whatever they hold.
BINARY_MEDIA_TYPES = frozenset({"multipart/form-data"})
INTEGRATION_TIMEOUT = 29.0
PROXY_RESPONSE_KEYS = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded", "base64Encoded"}
# A STREAM route's limits: the whole answer, and the longest wait for its next piece.
STREAM_TIMEOUT = 15 * 60.0
STREAM_IDLE_TIMEOUT = 5 * 60.0
# What a streamed answer's prelude may hold (HttpResponseStream's metadata for REST and HTTP APIs).
PRELUDE_KEYS = {"statusCode", "headers", "multiValueHeaders", "cookies"}
# Routes open without a key when keys are required (template.yaml: Authorizer NONE on these events).
PUBLIC_ROUTES = frozenset({("GET", "/"), ("GET", "/health"), ("GET", "/docs"), ("GET", "/openapi.json")})
# API Gateway's answers for a missing key (the authorizer's 401) and an unknown one (the usage plan's 403).
MISSING_KEY_MESSAGE = "Missing API key: send 'Authorization: Bearer <key>'."
UNKNOWN_KEY_MESSAGE = "Incorrect API key provided."
HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade", "date", "server"}

AuthMode = Literal["ApiKey", "IAM"]
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)


class GatewayError(Exception):
    """An answer API Gateway itself gives (the function's answer never reaches the client).

    ``response_type`` is the gateway response type that answers it (template.yaml's GatewayResponses render some
    of them); by default DEFAULT_4XX or DEFAULT_5XX, or THROTTLED for a 429.
    """

    def __init__(self, status: int, message: str, detail: str = "", response_type: str | None = None) -> None:
        super().__init__(f"{status} {message}{': ' + detail if detail else ''}")
        self.status = status
        self.message = message
        default = "DEFAULT_5XX" if status >= 500 else "THROTTLED" if status == 429 else "DEFAULT_4XX"
        self.response_type = response_type or default


Invoke = Callable[[bytes, float], Invocation]
# (event, the longest wait for each piece) -> the answer's pieces up to the terminal one, as FunctionPool.invoke_stream.
InvokeStream = Callable[[bytes, float], Iterator[StreamPiece]]
ErrorBody = Callable[[GatewayError], bytes]


def aws_error_body(error: GatewayError) -> bytes:
    """API Gateway's default gateway response: ``{"message": "..."}``."""
    return json.dumps({"message": error.message}).encode()


def build_event(
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    port: int,
    stage: str,
    protocol: str = "HTTP/1.1",
    identity: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The API Gateway REST (payload v1) proxy event for one HTTP request; ``identity`` fills in what the
    authorization established (IAM: the caller's access key, account and ARN)."""
    parts = urlsplit(target)
    path = unquote(parts.path) or "/"
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    forwarded = [name for name in single if name.lower() == "x-forwarded-for"]
    forwarded_for = f"{single.pop(forwarded[0])}, {source_ip}" if forwarded else source_ip
    for name in forwarded:
        multi.pop(name, None)
    for name, value in (("X-Forwarded-For", forwarded_for), ("X-Forwarded-Port", str(port)), ("X-Forwarded-Proto", "http")):
        single[name] = value
        multi[name] = [value]
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query[key] = value
        multi_query.setdefault(key, []).append(value)
    content_type = next((value for name, value in headers if name.lower() == "content-type"), "")
    encoded = content_type.split(";")[0].strip().lower() in BINARY_MEDIA_TYPES
    text: str | None = None
    if not encoded:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            encoded = True
    if encoded:
        text = base64.b64encode(body).decode("ascii")
    now = datetime.now(UTC)
    user_agent = next((value for name, value in headers if name.lower() == "user-agent"), None)
    host = next((value for name, value in headers if name.lower() == "host"), f"{LOOPBACK}:{port}")
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "1234567890",
            "resourceId": "123456",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "extendedRequestId": None,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "identity": {
                "apiKey": None,
                "accessKey": None,
                "userArn": None,
                "cognitoAuthenticationType": None,
                "caller": None,
                "userAgent": user_agent,
                "user": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationProvider": None,
                "sourceIp": source_ip,
                "accountId": None,
                **(identity or {}),
            },
            # The path as the client sent it: the local front serves at "/", like a custom domain mapped to the
            # stage (on an execute-api URL it would start with "/<stage>"), so Location headers built from it work.
            "path": path,
            "resourcePath": path,
            "httpMethod": method,
            "protocol": protocol,
            "domainName": host,
        },
        "body": text if body else None,
        "isBase64Encoded": encoded if body else False,
    }


def parse_proxy_response(invocation: Invocation) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body from a proxy answer, or from a streamed one read whole (a JSON prelude, eight NUL
    bytes, the raw body: JSON never holds a raw NUL); GatewayError(502) for a crash or a malformed answer."""
    head, delimiter, rest = invocation.payload.partition(PRELUDE_DELIMITER)
    if delimiter:
        status, headers = parse_prelude(_json_object(head, "prelude"))
        return status, headers, rest
    try:
        payload = json.loads(invocation.payload)
    except ValueError:
        detail = invocation.payload[:200].decode("utf-8", "replace")
        raise GatewayError(502, "Internal server error", f"function answer is not JSON: {detail!r}") from None
    if not isinstance(payload, dict):
        raise GatewayError(502, "Internal server error", f"function answered a {type(payload).__name__}")
    if "errorType" in payload or "errorMessage" in payload:
        raise GatewayError(502, "Internal server error", f"{payload.get('errorType')}: {payload.get('errorMessage')}")
    unknown = set(payload) - PROXY_RESPONSE_KEYS
    if unknown:
        raise GatewayError(502, "Internal server error", f"malformed proxy answer, unknown keys {sorted(unknown)}")
    status = _status(payload)
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        raise GatewayError(502, "Internal server error", "body is not a string")
    encoded = payload.get("isBase64Encoded", payload.get("base64Encoded", False))
    if isinstance(encoded, str) and encoded.lower() in ("true", "false"):
        encoded = encoded.lower() == "true"
    if not isinstance(encoded, bool):
        raise GatewayError(502, "Internal server error", f"bad isBase64Encoded {encoded!r}")
    try:
        data = base64.b64decode(body or "", validate=True) if encoded else (body or "").encode("utf-8")
    except (binascii.Error, ValueError):
        raise GatewayError(502, "Internal server error", "body is not valid base64") from None
    return status, _headers(payload), data


def parse_prelude(prelude: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers from a streamed answer's prelude, as from a proxy answer (``cookies`` become
    ``Set-Cookie`` headers); GatewayError(502) for a malformed one."""
    unknown = set(prelude) - PRELUDE_KEYS
    if unknown:
        raise GatewayError(502, "Internal server error", f"malformed prelude, unknown keys {sorted(unknown)}")
    cookies = prelude.get("cookies") or []
    if not isinstance(cookies, list):
        raise GatewayError(502, "Internal server error", "the prelude's cookies are not a list")
    return _status(prelude), [*_headers(prelude), *(("Set-Cookie", str(cookie)) for cookie in cookies)]


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise GatewayError(502, "Internal server error", f"{what} is not JSON: {data[:200].decode('utf-8', 'replace')!r}") from None
    if not isinstance(parsed, dict):
        raise GatewayError(502, "Internal server error", f"{what} is a {type(parsed).__name__}, not an object")
    return parsed


def _status(answer: Mapping[str, Any]) -> int:
    status = answer.get("statusCode", 200)
    try:
        status = int(status)
        if not 100 <= status <= 599:
            raise ValueError
    except (TypeError, ValueError):
        raise GatewayError(502, "Internal server error", f"bad statusCode {status!r}") from None
    return status


def _headers(answer: Mapping[str, Any]) -> list[tuple[str, str]]:
    """multiValueHeaders, then each of headers not among them; application/json if neither sets a Content-Type."""
    headers: list[tuple[str, str]] = [
        (str(name), str(value)) for name, values in (answer.get("multiValueHeaders") or {}).items() for value in values
    ]
    for name, value in (answer.get("headers") or {}).items():
        if (str(name), str(value)) not in headers:
            headers.append((str(name), str(value)))
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    front: ApiGatewayFront


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY each answer stalls ~40 ms on loopback.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _handle logs each request once, with its request id

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        self.server.front.log(f"{self.address_string()} {format % args}")

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise GatewayError(413, "Request Too Long", response_type="REQUEST_TOO_LARGE")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise GatewayError(400, "Bad Request") from None
        if length > limit:
            raise GatewayError(413, "Request Too Long", response_type="REQUEST_TOO_LARGE")
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        front = self.server.front
        started = time.monotonic()
        request_id = "-"
        try:
            request_headers = list(self.headers.items())
            front.authorize(self.command, self.path, request_headers)  # before the body: no reading 10 MB for a refusal
            body = self._read_body(front.max_request_bytes)
            identity = front.authenticate(self.command, self.path, request_headers, body)
            event = build_event(
                method=self.command,
                target=self.path,
                headers=request_headers,
                body=body,
                source_ip=self.client_address[0],
                port=front.port,
                stage=front.stage,
                protocol=self.request_version,
                identity=identity,
            )
            request_id = event["requestContext"]["requestId"]
            if front.invoke_stream is None:
                status, headers, data = parse_proxy_response(front.call(json.dumps(event).encode()))
            else:
                with closing(front.stream(json.dumps(event).encode())) as pieces:
                    answer = self._answer_stream(pieces, request_id, started)
                if answer is None:
                    return
                status, headers, data = answer
        except GatewayError as error:
            front.log(f"{request_id} gateway {error}")
            if error.status in (400, 401, 403, 413):
                self.close_connection = True  # the unread body would poison a kept-alive connection
            status, headers = error.status, [("Content-Type", "application/json")]
            data = front.error_body(error)
        except Exception:  # a bug here must still answer, as API Gateway would
            front.log(f"{request_id} front error\n{traceback.format_exc()}")
            status, headers = 500, [("Content-Type", "application/json")]
            data = front.error_body(GatewayError(500, "Internal server error"))
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        front.log(f"{request_id} {self.command} {self.path} -> {status} in {time.monotonic() - started:.3f}s")

    def _answer_stream(
        self, pieces: Iterator[StreamPiece], request_id: str, started: float
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """Relay a streamed answer from its prelude on; None once it is sent. GatewayError while nothing is sent
        (the function failed first, or its prelude is malformed). An answer without a prelude (a /response that
        was not streamed, or a stream of some other content type) comes back whole, read as a proxy answer."""
        first = next(pieces, None)
        if first is None:
            raise GatewayError(502, "Internal server error", "the function's answer ended before it began")
        if first.kind is PieceKind.PRELUDE and first.prelude is not None:
            status, headers = parse_prelude(first.prelude)
            self._relay(pieces, status, headers, request_id, started)
            return None
        if first.kind is PieceKind.FUNCTION_ERROR:
            detail = first.data[:200].decode("utf-8", "replace")
            raise GatewayError(502, "Internal server error", f"function error {first.error_type}: {detail}")
        if first.kind is not PieceKind.BUFFERED and first.kind is not PieceKind.DATA:
            raise GatewayError(502, "Internal server error", f"the function's answer {first.kind}: {first.reason}")
        body = bytearray(first.data)
        if first.kind is PieceKind.DATA:
            for piece in pieces:
                if piece.kind is PieceKind.DATA:
                    body += piece.data
                elif piece.kind is PieceKind.END and piece.error_type is None:
                    break
                else:
                    what = piece.error_type or piece.reason
                    raise GatewayError(502, "Internal server error", f"the function's answer {piece.kind}: {what}")
        return parse_proxy_response(Invocation(200, bytes(body)))

    def _relay(self, pieces: Iterator[StreamPiece], status: int, headers: list[tuple[str, str]], request_id: str, started: float) -> None:
        """Status line and headers now, then each payload piece as one chunk as it comes. An answer that fails or
        is cut off once that is out can only be told by closing the connection before the last chunk."""
        front = self.server.front
        # HTTP/1.0 has no chunked encoding: its client reads the body until the connection closes.
        chunked = self.request_version != "HTTP/1.0"
        send_body = self.command != "HEAD"
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("x-amzn-RequestId", request_id)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
            self.send_header("Connection", "close")
        sent, outcome = 0, ""
        try:
            self.end_headers()
            for piece in pieces:
                if piece.kind is PieceKind.DATA:
                    if send_body and piece.data:
                        self.wfile.write(b"%x\r\n%b\r\n" % (len(piece.data), piece.data) if chunked else piece.data)
                        self.wfile.flush()
                    sent += len(piece.data)
                    continue
                if piece.kind is PieceKind.END and piece.error_type is None:
                    if send_body and chunked:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                    outcome = "complete"
                elif piece.kind is PieceKind.END:
                    outcome = f"function error mid-stream: {piece.error_type}"
                else:
                    outcome = f"{piece.kind} mid-stream: {piece.reason or piece.error_type}"
                break
            else:
                outcome = "the answer ended without its end"
        except GatewayError as error:
            outcome = str(error)
        except OSError as error:
            outcome = f"the client went away ({error!r})"
        except Exception:  # a bug here: the status is out, so all that is left is to cut the answer
            outcome = f"front error\n{traceback.format_exc()}"
        if outcome != "complete":
            self.close_connection = True
        elapsed = time.monotonic() - started
        front.log(f"{request_id} {self.command} {self.path} -> {status} streamed {sent} bytes in {elapsed:.3f}s ({outcome})")


class ApiGatewayFront:
    """``ThreadingHTTPServer`` on ``host:port`` (0 = free port) in a background thread, in front of ``invoke``.

    ``auth_mode`` ``"ApiKey"`` requires one of ``api_keys`` as a Bearer token (none: no auth); ``"IAM"`` requires
    a SigV4 signature for ``execute-api`` in ``region`` by one of ``iam_credentials`` (access key id -> secret),
    and refuses to be built without them.

    With ``invoke_stream`` every answer is relayed as a STREAM route's: within ``stream_timeout`` in all and
    ``stream_idle_timeout`` per piece, instead of ``timeout`` (the 29 s of a buffered answer).
    """

    def __init__(
        self,
        invoke: Invoke,
        *,
        host: str = LOOPBACK,
        port: int = 3000,
        stage: str = "prod",
        timeout: float = INTEGRATION_TIMEOUT,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        error_body: ErrorBody = aws_error_body,
        log_path: Path | None = None,
        api_keys: Collection[str] = (),
        public_routes: Collection[tuple[str, str]] = PUBLIC_ROUTES,
        auth_mode: AuthMode = "ApiKey",
        iam_credentials: Mapping[str, str] | None = None,
        region: str = "us-east-1",
        invoke_stream: InvokeStream | None = None,
        stream_timeout: float = STREAM_TIMEOUT,
        stream_idle_timeout: float = STREAM_IDLE_TIMEOUT,
    ) -> None:
        if auth_mode not in AUTH_MODES:
            raise ValueError(f"auth_mode must be one of {', '.join(AUTH_MODES)}, not {auth_mode!r}")
        if auth_mode == "IAM" and api_keys:
            raise ValueError("API keys apply to auth mode ApiKey only; auth mode IAM checks signatures")
        if auth_mode == "ApiKey" and iam_credentials:
            raise ValueError("IAM credentials apply to auth mode IAM only")
        # Fail here, not at the first request: an IAM gateway nobody may call is a configuration mistake.
        if auth_mode == "IAM" and not iam_credentials:
            raise ValueError("auth mode IAM needs iam_credentials (access key id -> secret access key)")
        self.invoke = invoke
        self.invoke_stream = invoke_stream
        self.stream_timeout = stream_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.auth_mode = auth_mode
        self.api_keys = frozenset(api_keys)
        self.verifier = SigV4Verifier(iam_credentials or {}, region=region) if auth_mode == "IAM" else None
        self.public_routes = frozenset(public_routes)
        self.host = host
        self.requested_port = port
        self.stage = stage
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.error_body = error_body
        self.log_path = log_path
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()

    def _protected(self, method: str, target: str) -> bool:
        return (method, urlsplit(target).path) not in self.public_routes

    def authorize(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> None:
        """The deployed gateway's checks that need no body. ApiKey: the bearer-key authorizer (401) and the usage
        plan (403). IAM: a signature header of the right shape, scope, key and time (403)."""
        if not self._protected(method, target):
            return
        if self.verifier is not None:
            try:
                self.verifier.check(target, headers)
            except SignatureError as error:
                raise GatewayError(403, error.message, response_type=error.response_type) from None
            return
        if not self.api_keys:
            return
        key = bearer_key(next((value for name, value in headers if name.lower() == "authorization"), None))
        if key is None:
            raise GatewayError(401, MISSING_KEY_MESSAGE, response_type="UNAUTHORIZED")
        if key not in self.api_keys:
            raise GatewayError(403, UNKNOWN_KEY_MESSAGE, response_type="INVALID_API_KEY")

    def authenticate(self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes) -> dict[str, str] | None:
        """IAM: the signature over the whole request, body included (403); the caller's ``requestContext.identity``
        fields. None for a public route and in ApiKey mode."""
        if self.verifier is None or not self._protected(method, target):
            return None
        try:
            return self.verifier.verify(method, target, headers, body).identity()
        except SignatureError as error:
            raise GatewayError(403, error.message, response_type=error.response_type) from None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ApiGatewayFront is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, event: bytes) -> Invocation:
        """Invoke the function within the integration timeout, as API Gateway would."""
        try:
            return self.invoke(event, self.timeout)
        except httpx.TimeoutException:
            raise GatewayError(504, "Endpoint request timed out", f"no answer within {self.timeout:.0f} s") from None
        except PoolBusy as exc:
            raise GatewayError(503, "Service Unavailable", str(exc)) from None
        except (httpx.HTTPError, StartupError) as exc:
            raise GatewayError(502, "Internal server error", repr(exc)) from None

    def stream(self, event: bytes) -> Generator[StreamPiece, None, None]:
        """The function's streamed answer piece by piece, within a STREAM route's limits. What ``call`` maps, a piece
        not within ``stream_idle_timeout`` and an answer past ``stream_timeout`` are raised as GatewayError."""
        if self.invoke_stream is None:
            raise RuntimeError("this front has no invoke_stream")
        deadline = time.monotonic() + self.stream_timeout
        pieces: Iterator[StreamPiece] | None = None
        try:
            pieces = self.invoke_stream(event, self.stream_idle_timeout)
            for piece in pieces:
                if time.monotonic() > deadline:
                    raise GatewayError(504, "Endpoint request timed out", f"the answer went on past {self.stream_timeout:.0f} s")
                yield piece
        except TimeoutError:
            detail = f"no piece of the answer within {self.stream_idle_timeout:.0f} s"
            raise GatewayError(504, "Endpoint request timed out", detail) from None
        except PoolBusy as exc:
            raise GatewayError(503, "Service Unavailable", str(exc)) from None
        except (httpx.HTTPError, StartupError) as exc:
            raise GatewayError(502, "Internal server error", repr(exc)) from None
        finally:
            close = getattr(pieces, "close", None)
            if callable(close):
                close()  # the function's instance goes back to its pool only then

    def log(self, line: str) -> None:
        if self.log_path is None:
            return
        with self._log_lock, self.log_path.open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def start(self) -> Self:
        if self._server is not None:
            return self
        try:
            server = _Server((self.host, self.requested_port), _Handler)
        except OSError as exc:
            raise StartupError(f"HTTP front: cannot listen on {self.host}:{self.requested_port}: {exc}") from exc
        server.front = self
        self._server = server
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=server.serve_forever, name="api-gateway-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
