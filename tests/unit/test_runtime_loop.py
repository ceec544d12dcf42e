"""The streaming runtime loop (functions/api/runtime.py) against a fake Runtime API that records the exact bytes.

The fake is an http.server request handler on one end of a socketpair per connection (the unit tier opens no
network sockets): it hands out queued invocations on GET /next, answers 500 once they are gone (which ends the
loop, as a broken Runtime API does), and records each request's raw body, chunk framing and trailers included.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from functions.api import runtime
from functions.api.runtime import LambdaContext, RuntimeApiClient, StreamingResponse, serve

pytestmark = pytest.mark.unit

API = "/2018-06-01/runtime"
STREAM_HEADERS = {
    "Lambda-Runtime-Function-Response-Mode": "streaming",
    "Transfer-Encoding": "chunked",
    "Content-Type": "application/vnd.awslambda.http-integration-response",
    "Trailer": "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
}
NUL8 = b"\0" * 8


@dataclass
class Recorded:
    """One request as the fake read it: ``raw`` is the body byte for byte as sent, framing included."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks) if self.headers.get("Transfer-Encoding") == "chunked" else self.raw


class FakeRuntimeApi:
    def __init__(self, *invocations: tuple[Mapping[str, str], bytes]) -> None:
        self._invocations = deque(invocations)
        self.requests: list[Recorded] = []
        self.chunks_seen = 0
        self.changed = threading.Condition()

    def connect(self) -> http.client.HTTPConnection:
        ours, theirs = socket.socketpair()
        threading.Thread(target=_FakeHandler, args=(theirs, ("fake", 0), self), daemon=True).start()
        connection = http.client.HTTPConnection("runtime-api.invalid")
        connection.sock = ours
        return connection

    def client(self) -> RuntimeApiClient:
        return RuntimeApiClient("runtime-api.invalid:9001", connect=self.connect)

    def posts(self) -> list[Recorded]:
        return [request for request in self.requests if request.method == "POST"]

    def wait_for_chunks(self, count: int, timeout: float = 2.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.chunks_seen >= count, timeout)


class _FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeRuntimeApi  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(Recorded("GET", self.path, dict(self.headers.items())))
        if not self.server._invocations:
            self._answer(500, b'{"errorType":"Fake.NoMoreInvocations"}')
            return
        headers, event = self.server._invocations.popleft()
        self._answer(200, event, headers)

    def do_POST(self) -> None:
        request = Recorded("POST", self.path, dict(self.headers.items()))
        self.server.requests.append(request)
        if self.headers.get("Transfer-Encoding") == "chunked":
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    break
                data = self.rfile.read(size + 2)
                raw += data
                request.chunks.append(data[:-2])
                with self.server.changed:
                    self.server.chunks_seen += 1
                    self.server.changed.notify_all()
            while (line := self.rfile.readline()) != b"\r\n":
                raw += line
                name, value = line.decode().split(":", 1)
                request.trailers[name] = value.strip()
            request.raw = bytes(raw + line)
        else:
            request.raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(202, b'{"status":"OK"}')

    def _answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def invocation(request_id: str, event: object = None, **headers: str) -> tuple[dict[str, str], bytes]:
    base = {
        "Lambda-Runtime-Aws-Request-Id": request_id,
        "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 5000),
        "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:api",
    }
    return base | headers, json.dumps(event if event is not None else {}).encode()


def run_loop(api: FakeRuntimeApi, handler: Any) -> None:
    """Run the loop until the fake runs out of invocations (its 500 on /next must end the loop)."""
    with pytest.raises(runtime.RuntimeApiError, match="answered 500"):
        runtime.run(api.client(), handler)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def test_a_proxy_dict_is_posted_streamed_as_prelude_delimiter_and_its_decoded_body() -> None:
    png = b"\x89PNG\r\n\x1a\n\0\0binary"
    api = FakeRuntimeApi(invocation("req-1"))

    def handler(event: Any, context: Any) -> dict[str, Any]:
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "image/png"},
            "body": base64.b64encode(png).decode(),
            "isBase64Encoded": True,
        }

    run_loop(api, handler)

    [post] = api.posts()
    assert post.path == f"{API}/invocation/req-1/response"
    assert {name: post.headers.get(name) for name in STREAM_HEADERS} == STREAM_HEADERS
    assert "Content-Length" not in post.headers
    prelude = b'{"statusCode":200,"headers":{"Content-Type":"image/png"}}' + NUL8
    assert post.raw == chunk(prelude) + chunk(png) + b"0\r\n\r\n"


def test_multi_value_headers_and_cookies_go_into_the_prelude_and_an_empty_body_sends_only_the_prelude() -> None:
    api = FakeRuntimeApi(invocation("req-1"))

    def handler(event: Any, context: Any) -> dict[str, Any]:
        return {"statusCode": 204, "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "cookies": ["c=3"], "body": ""}

    run_loop(api, handler)

    [post] = api.posts()
    assert post.chunks == [b'{"statusCode":204,"headers":{},"multiValueHeaders":{"Set-Cookie":["a=1","b=2"]},"cookies":["c=3"]}' + NUL8]
    assert post.raw.endswith(b"\r\n0\r\n\r\n")


def test_a_streaming_response_sends_each_chunk_as_it_is_produced() -> None:
    api = FakeRuntimeApi(invocation("req-1"))
    closed = []

    def body() -> Iterator[bytes]:
        try:
            for index in range(3):
                if index:
                    # The fake must hold chunk `index` (prelude + earlier events) before the next one is produced.
                    assert api.wait_for_chunks(index + 1), f"event {index - 1} was not sent when it was yielded"
                yield f"event: tick\ndata: {index}\n\n".encode()
        finally:
            closed.append(True)

    run_loop(api, lambda event, context: StreamingResponse(200, {"Content-Type": "text/event-stream"}, body()))

    [post] = api.posts()
    prelude = b'{"statusCode":200,"headers":{"Content-Type":"text/event-stream"}}' + NUL8
    events = [f"event: tick\ndata: {index}\n\n".encode() for index in range(3)]
    assert post.chunks == [prelude, *events]
    assert post.raw == chunk(prelude) + b"".join(chunk(event) for event in events) + b"0\r\n\r\n"
    assert post.trailers == {}
    assert closed == [True]


def test_an_empty_first_item_sends_the_prelude_before_any_payload_and_empty_chunks_are_skipped() -> None:
    api = FakeRuntimeApi(invocation("req-1"))

    def body() -> Iterator[bytes]:
        yield b""
        assert api.wait_for_chunks(1), "the prelude was not sent on the empty first item"
        yield b"a"
        yield b""
        yield b"b"

    run_loop(api, lambda event, context: StreamingResponse(201, {}, body()))

    [post] = api.posts()
    assert post.chunks == [b'{"statusCode":201,"headers":{}}' + NUL8, b"a", b"b"]


def test_a_failure_mid_stream_ends_the_body_with_the_error_trailers() -> None:
    api = FakeRuntimeApi(invocation("req-1"), invocation("req-2"))
    closed = []

    def body() -> Iterator[bytes]:
        try:
            yield b"event: one\n\n"
            raise ConnectionError("provider hung up")
        finally:
            closed.append(True)

    def handler(event: Any, context: Any) -> object:
        if context.aws_request_id == "req-1":
            return StreamingResponse(200, {}, body())
        return {"statusCode": 200, "body": "next"}

    run_loop(api, handler)

    first, second = api.posts()
    assert first.chunks == [b'{"statusCode":200,"headers":{}}' + NUL8, b"event: one\n\n"]
    assert first.trailers["Lambda-Runtime-Function-Error-Type"] == "ConnectionError"
    error = json.loads(base64.b64decode(first.trailers["Lambda-Runtime-Function-Error-Body"]))
    assert error["errorType"] == "ConnectionError" and error["errorMessage"] == "provider hung up"
    assert any("in body" in line for line in error["stackTrace"])
    assert not any("runtime.py" in line for line in error["stackTrace"]), "the loop's own frames are cut"
    encoded = base64.b64encode(json.dumps(error).encode())
    assert first.raw.endswith(
        b"0\r\nLambda-Runtime-Function-Error-Type: ConnectionError\r\nLambda-Runtime-Function-Error-Body: " + encoded + b"\r\n\r\n"
    )
    assert closed == [True]
    assert second.path == f"{API}/invocation/req-2/response" and second.chunks[-1] == b"next", "the loop goes on"


def _failing_body() -> Iterator[bytes]:
    yield from ()
    raise KeyError("first item")


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        (lambda: 1 / 0, "ZeroDivisionError"),
        (lambda: StreamingResponse(200, {}, _failing_body()), "KeyError"),
        (lambda: "a string", "TypeError"),
        (lambda: {"statusCode": "200", "body": ""}, "TypeError"),
        (lambda: {"statusCode": 200, "body": "%%%", "isBase64Encoded": True}, "Error"),
        (lambda: StreamingResponse(200, {}, iter(["text, not bytes"])), "TypeError"),
    ],
    ids=["handler-raises", "body-fails-first", "not-a-response", "string-status", "bad-base64", "str-chunk"],
)
def test_a_failure_before_the_first_byte_is_posted_to_error(answer: Any, error_type: str) -> None:
    api = FakeRuntimeApi(invocation("req-1"), invocation("req-2"))

    def handler(event: Any, context: Any) -> object:
        return answer() if context.aws_request_id == "req-1" else {"statusCode": 200, "body": "ok"}

    run_loop(api, handler)

    error_post, ok_post = api.posts()
    assert error_post.path == f"{API}/invocation/req-1/error"
    assert error_post.headers["Lambda-Runtime-Function-Error-Type"] == error_type
    error = json.loads(error_post.raw)
    assert set(error) == {"errorMessage", "errorType", "stackTrace"}
    assert error["errorType"] == error_type and isinstance(error["stackTrace"], list)
    assert ok_post.path == f"{API}/invocation/req-2/response", "a failed invocation does not end the loop"


def test_the_context_has_what_powertools_reads_and_the_remaining_time_follows_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "imagegen-api")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    monkeypatch.setenv("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/imagegen-api")
    monkeypatch.setenv("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/02/[$LATEST]abc")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "left over")
    deadline = int(time.time() * 1000) + 5000
    client_context = json.dumps({"client": {"installation_id": "i-1"}, "custom": {"k": "v"}, "env": {"e": "1"}})
    api = FakeRuntimeApi(
        invocation(
            "req-1",
            {"path": "/v1/models"},
            **{
                "Lambda-Runtime-Deadline-Ms": str(deadline),
                "Lambda-Runtime-Trace-Id": "Root=1-abc;Parent=def;Sampled=1",
                "Lambda-Runtime-Client-Context": client_context,
                "Lambda-Runtime-Cognito-Identity": json.dumps({"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}),
            },
        ),
        invocation("req-2"),
    )
    seen: list[tuple[Any, LambdaContext, int, str | None]] = []

    def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
        seen.append((event, context, context.get_remaining_time_in_millis(), os.environ.get("_X_AMZN_TRACE_ID")))
        return {"statusCode": 200, "body": ""}

    run_loop(api, handler)

    (event, context, remaining, trace), (_, _, _, second_trace) = seen
    assert event == {"path": "/v1/models"}
    assert context.aws_request_id == "req-1"
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:api"
    assert (context.function_name, context.function_version, context.memory_limit_in_mb) == ("imagegen-api", "$LATEST", "1024")
    assert (context.log_group_name, context.log_stream_name) == ("/aws/lambda/imagegen-api", "2026/12/02/[$LATEST]abc")
    assert 4000 < remaining <= 5000
    assert context.client_context is not None and context.client_context.client.installation_id == "i-1"
    assert context.client_context.custom == {"k": "v"}
    assert (context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id) == ("id-1", "pool-1")
    assert trace == "Root=1-abc;Parent=def;Sampled=1"
    assert second_trace is None, "an invocation without a trace id must not inherit the previous one's"


def test_the_remaining_time_never_goes_below_zero() -> None:
    context = LambdaContext(aws_request_id="r", invoked_function_arn="arn", deadline_ms=int(time.time() * 1000) - 10)
    assert context.get_remaining_time_in_millis() == 0


def _write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(source)


@pytest.mark.parametrize(
    ("module_source", "spec", "error_type", "message"),
    [
        ("import no_such_module_here\n", "broken_import.handler", "Runtime.ImportModuleError", "Unable to import module 'broken_import'"),
        ("def handler(:\n", "broken_syntax.handler", "Runtime.UserCodeSyntaxError", "Syntax error in module 'broken_syntax'"),
        ("x = 1\n", "no_handler.handler", "Runtime.HandlerNotFound", "Handler 'handler' missing on module 'no_handler'"),
        ("raise RuntimeError('no config')\n", "raises_at_import.handler", "RuntimeError", "no config"),
        ("", "nodot", "Runtime.MalformedHandlerName", "Bad handler 'nodot'"),
    ],
    ids=["import-error", "syntax-error", "handler-missing", "module-raises", "malformed-name"],
)
def test_a_handler_that_cannot_load_is_posted_to_init_error_and_the_runtime_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module_source: str, spec: str, error_type: str, message: str
) -> None:
    _write_module(tmp_path, spec.split(".")[0], module_source)
    monkeypatch.syspath_prepend(str(tmp_path))
    api = FakeRuntimeApi(invocation("never-fetched"))

    assert serve(api.client(), spec) == 1

    [request] = api.requests
    assert (request.method, request.path) == ("POST", f"{API}/init/error")
    assert request.headers["Lambda-Runtime-Function-Error-Type"] == error_type
    error = json.loads(request.raw)
    assert error["errorType"] == error_type and message in error["errorMessage"]
    assert set(error) == {"errorMessage", "errorType", "stackTrace"}


def test_a_loaded_handler_serves_until_the_runtime_api_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(
        tmp_path, "good_handler", "def handler(event, context):\n    return {'statusCode': 200, 'body': context.aws_request_id}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    api = FakeRuntimeApi(invocation("req-1"), invocation("req-2"))

    assert serve(api.client(), "good_handler.handler") == 1

    assert [request.path for request in api.requests] == [
        f"{API}/invocation/next",
        f"{API}/invocation/req-1/response",
        f"{API}/invocation/next",
        f"{API}/invocation/req-2/response",
        f"{API}/invocation/next",
    ]
    assert [post.chunks[-1] for post in api.posts()] == [b"req-1", b"req-2"]


def test_an_unreachable_runtime_api_is_fatal() -> None:
    def refuse() -> http.client.HTTPConnection:
        raise ConnectionRefusedError(111, "Connection refused")

    assert serve(RuntimeApiClient("127.0.0.1:9", connect=refuse), "functions.api.runtime.main") == 1


def test_the_sys_path_puts_the_task_root_then_the_layer_first_as_the_managed_runtime_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setattr(sys, "path", ["/usr/lib/python"])
    runtime.set_sys_path("/var/task")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert sys.path[:4] == ["/var/task", f"/opt/python/lib/python{version}/site-packages", "/opt/python", "/usr/lib/python"]

    monkeypatch.setenv("PYTHONPATH", "/layers")
    monkeypatch.setattr(sys, "path", ["/layers"])
    runtime.set_sys_path("/var/task")
    assert sys.path[:2] == ["/var/task", "/layers"]
    assert not any(path.startswith("/opt/") for path in sys.path), "with PYTHONPATH set the runtime leaves /opt alone"


def test_the_bootstrap_wrapper_runs_runtime_py_with_the_interpreter_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "runtime.py").write_text("import sys\nprint(sys.executable, sys.argv[1:])\n")
    bootstrap = Path(runtime.__file__).with_name("bootstrap")
    assert os.access(bootstrap, os.X_OK), "the exec wrapper must be executable (the zip keeps the mode)"

    result = subprocess.run(
        [str(bootstrap), sys.executable, "/var/runtime/bootstrap.py"],
        env={"PATH": os.environ.get("PATH", ""), "LAMBDA_TASK_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert result.stdout.strip() == f"{sys.executable} []"
