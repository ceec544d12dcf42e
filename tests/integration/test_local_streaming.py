"""The local stack's streaming wiring: the front, a FunctionPool and the real RIE running a function under its
streaming runtime (``FunctionConfig.streaming``: functions/api/bootstrap and runtime.py behind a StreamTap).

The handler is tests/fakes/front_stream_handler.py (tests/fakes/stream_handler.py's modes by path). Checked over
real HTTP with httpx: chunks reach the client as the function writes them (0.5 s apart), a proxy dict is the same
HTTP answer as from a front without streaming, a failure before the first byte is a 502 and one after it a closed
connection, the warm runtime serves again (also after a client left mid-stream), a STREAM route's limits instead
of 29 s; the runtime started both through the bootstrap wrapper and through the AWS-call recorder; and
``LocalStack(stream_api=True)`` serving the real API function.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools import aws_calls
from devtools.front import ApiGatewayFront, GatewayError, build_event, parse_proxy_response
from devtools.local import LocalStack
from devtools.procs import LOOPBACK, session_members
from devtools.rie import FunctionConfig, FunctionPool, Invocation, RieProcess
from devtools.stream_tap import PieceKind, StreamPiece
from tests.fakes.front_stream_handler import DICT_ANSWER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
API_DIR = ROOT / "functions" / "api"
HANDLER = "tests.fakes.front_stream_handler.handler"
FUNCTION_TIMEOUT = 8
# Headers that frame or stamp one answer, not what the function said.
FRAMING = {"content-length", "transfer-encoding", "date", "x-amzn-requestid", "connection", "server"}


def function_config(streaming: bool) -> FunctionConfig:
    return FunctionConfig(
        code_dir=API_DIR,
        name="front-stream",
        handler=HANDLER,
        layer_dirs=[ROOT],  # the fake and functions.api.runtime import from the repository root
        timeout=FUNCTION_TIMEOUT,
        env={"IMAGES_BUCKET": "imagegen-stream-test"},
        streaming=streaming,
    )


@dataclass
class Served:
    """A front in front of a one-process pool."""

    front: ApiGatewayFront
    pool: FunctionPool

    @property
    def url(self) -> str:
        return self.front.base_url

    def runtime_pids(self, marker: bytes = b"") -> set[int]:
        """The pids of the worker's runtime processes (their command line holds ``marker``)."""
        pid = self.pool.workers[0].pid
        assert pid is not None
        return {member for member in session_members(pid) if marker in _cmdline(member) and b"aws-lambda-rie" not in _cmdline(member)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _serve(stack: ExitStack, root: Path, streaming: bool, **front_options: float) -> Served:
    config = function_config(streaming)
    pool = stack.enter_context(FunctionPool(lambda i: RieProcess(config, log_path=root / f"rie-{i}.log"), size=1))
    invoke_stream = pool.invoke_stream if streaming else None
    front = ApiGatewayFront(pool.invoke, invoke_stream=invoke_stream, port=0, log_path=root / "front.log", **front_options)
    stack.enter_context(front)
    return Served(front, pool)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with ExitStack() as stack:
        yield _serve(stack, tmp_path_factory.mktemp("streamed"), streaming=True)


@pytest.fixture(scope="module")
def buffered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The same function under awslambdaric, behind a front without streaming (today's local stack)."""
    with ExitStack() as stack:
        yield _serve(stack, tmp_path_factory.mktemp("buffered"), streaming=False)


def read_events(response: httpx.Response) -> list[tuple[float, bytes]]:
    """Each SSE event with the time it was complete at the client."""
    events, pending = [], b""
    for data in response.iter_raw():
        pending += data
        while b"\n\n" in pending:
            event, pending = pending.split(b"\n\n", 1)
            events.append((time.monotonic(), event))
    assert pending == b""
    return events


def test_the_client_gets_each_chunk_as_the_function_writes_it(streamed: Served) -> None:
    with httpx.stream("GET", f"{streamed.url}/stream", timeout=30) as response:
        headers_at = time.monotonic()
        events = read_events(response)

    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
    assert response.headers["content-type"] == "text/event-stream" and response.headers["cache-control"] == "no-cache"
    assert [json.loads(event.split(b"data: ", 1)[1])["index"] for _, event in events] == [0, 1, 2]
    # The handler sleeps 0.5 s between events: each must arrive then, not all at the end (a buffered relay would
    # deliver them within milliseconds of each other, after the headers' 1 s wait).
    times = [at for at, _ in events]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert all(0.3 < gap < 1.5 for gap in gaps), gaps
    assert times[0] - headers_at < 0.4, "the first event comes with the headers"
    assert times[-1] - headers_at > 0.7, "the headers came before the body was complete"


def test_a_proxy_dict_is_the_same_http_answer_as_without_streaming(streamed: Served, buffered: Served) -> None:
    answers = [httpx.get(f"{served.url}/dict", timeout=30) for served in (streamed, buffered)]

    def said(response: httpx.Response) -> list[tuple[str, str]]:
        return [(name.lower(), value) for name, value in response.headers.multi_items() if name.lower() not in FRAMING]

    with_stream, without = answers
    assert (with_stream.status_code, said(with_stream), with_stream.content) == (without.status_code, said(without), without.content)
    assert with_stream.status_code == 201 and with_stream.json() == {"answer": "fixed", "bytes": "\u00e9\u2603"}
    assert ("set-cookie", "a=1") in said(with_stream) and ("set-cookie", "b=2") in said(with_stream)
    assert ("x-mode", "dict") in said(with_stream)
    assert with_stream.headers["transfer-encoding"] == "chunked" and without.headers["content-length"] == str(len(without.content))


def test_a_failure_before_the_first_byte_is_a_502(streamed: Served) -> None:
    response = httpx.get(f"{streamed.url}/crash-first", timeout=30)

    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}
    assert "content-length" in response.headers, "nothing was streamed"
    assert httpx.get(f"{streamed.url}/dict", timeout=30).status_code == 201, "the runtime lives on"


def test_a_failure_mid_stream_closes_the_connection(streamed: Served) -> None:
    received = b""
    with httpx.stream("GET", f"{streamed.url}/crash-mid-stream", timeout=30) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for data in response.iter_raw():
                received += data
    assert received == b"event: tick\ndata: {}\n\n", "the event before the failure arrived, then the body was cut"
    assert httpx.get(f"{streamed.url}/dict", timeout=30).status_code == 201, "the runtime lives on"


def test_a_second_request_is_served_by_the_warm_runtime(streamed: Served) -> None:
    first = httpx.get(f"{streamed.url}/pid", timeout=30).json()["pid"]
    second = httpx.get(f"{streamed.url}/pid", timeout=30).json()["pid"]

    assert first == second
    assert first in streamed.runtime_pids(), "the handler runs in the RIE's runtime process"


def test_a_client_leaving_mid_stream_leaves_the_runtime_warm(streamed: Served) -> None:
    before = httpx.get(f"{streamed.url}/pid", timeout=30).json()["pid"]
    rie = streamed.pool.workers[0].pid
    with httpx.stream("GET", f"{streamed.url}/stream", timeout=30) as response:
        first = next(response.iter_raw())
    assert first.startswith(b"event: tick")

    # The one instance is busy until the stream the client left has ended; then it serves again, not replaced.
    started = time.monotonic()
    after = httpx.get(f"{streamed.url}/pid", timeout=30)
    assert after.status_code == 200 and after.json()["pid"] == before
    assert streamed.pool.workers[0].pid == rie
    assert time.monotonic() - started < 10


def test_a_stream_route_has_no_29_s_limit_but_an_idle_one(tmp_path: Path) -> None:
    with ExitStack() as stack:
        # A buffered answer's limit far below the stream's length; an idle limit between its pieces and the sleep.
        served = _serve(stack, tmp_path, streaming=True, timeout=0.5, stream_idle_timeout=2.0)
        with httpx.stream("GET", f"{served.url}/stream", timeout=30) as response:
            events = read_events(response)
        assert response.status_code == 200 and len(events) == 3

        started = time.monotonic()
        stalled = httpx.get(f"{served.url}/sleep", timeout=30)
        assert stalled.status_code == 504 and stalled.json() == {"message": "Endpoint request timed out"}
        assert 1.8 < time.monotonic() - started < 10
        # The stalled instance was replaced: the next request is served (by a new runtime).
        assert httpx.get(f"{served.url}/dict", timeout=30).status_code == 201


def test_the_runtime_starts_through_the_bootstrap_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(aws_calls.ENV_VAR, raising=False)  # the test session records AWS calls; not this time
    event = json.dumps(build_event(method="GET", target="/pid", headers=[], body=b"", source_ip=LOOPBACK, port=1, stage="prod"))
    with RieProcess(function_config(True), log_path=tmp_path / "rie.log") as rie:
        # A buffered invoke gets the RIE's whole answer, in the streamed format, and claims what the tap saw of it.
        status, headers, body = parse_proxy_response(rie.invoke(event.encode(), 30))
        pid = json.loads(body)["pid"]
        pieces = list(rie.invoke_stream(json.dumps({"path": "/stream"}).encode(), 30))
        again = list(rie.invoke_stream(event.encode(), 30))
        assert rie.pid is not None
        runtime = [_cmdline(member) for member in session_members(rie.pid) if member == pid]

    assert status == 200 and ("Content-Type", "application/json") in headers
    assert [piece.kind for piece in pieces] == [PieceKind.PRELUDE, *[PieceKind.DATA] * 3, PieceKind.END]
    assert [piece.kind for piece in again] == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.END]
    assert json.loads(again[1].data) == {"pid": pid}, "the warm runtime answered, and nothing stale was taken for it"
    assert runtime and b"functions/api/runtime.py" in runtime[0] and b"aws_calls" not in runtime[0], runtime


def test_the_call_recorder_runs_the_streaming_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls"
    monkeypatch.setenv(aws_calls.ENV_VAR, str(calls))  # not the session's directory: this bucket is no template's
    with RieProcess(function_config(True), log_path=tmp_path / "rie.log") as rie:
        pieces = list(rie.invoke_stream(json.dumps({"path": "/presign"}).encode(), 30))
        answer = json.loads(pieces[1].data)
        assert rie.pid is not None
        commands = [_cmdline(member) for member in session_members(rie.pid)]

    assert [piece.kind for piece in pieces] == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.END]
    assert "Signature=" in answer["url"] and "AKIDLOCALTEST" in answer["url"]
    assert any(b"devtools/aws_calls.py --streaming" in command for command in commands), commands
    recorded = aws_calls.read_calls(calls)
    assert [(call.function, call.service, call.operation, call.presign) for call in recorded] == [("api", "s3", "GetObject", True)]
    assert recorded[0].params == {"Bucket": "imagegen-stream-test", "Key": "images/x.png"}
    assert recorded[0].env == {"IMAGES_BUCKET": "imagegen-stream-test"}


def piece(kind: PieceKind, **fields: object) -> StreamPiece:
    return StreamPiece(kind, "request-1", time.monotonic(), **fields)  # type: ignore[arg-type]


def test_a_streamed_answer_read_whole_is_parsed_from_its_prelude() -> None:
    prelude = {"statusCode": 202, "headers": {"X-A": "1"}, "multiValueHeaders": {"X-B": ["2", "3"]}, "cookies": ["c=1"]}
    status, headers, body = parse_proxy_response(Invocation(200, json.dumps(prelude).encode() + b"\0" * 8 + b"raw\0body"))

    assert (status, body) == (202, b"raw\0body")
    assert headers == [("X-B", "2"), ("X-B", "3"), ("X-A", "1"), ("Content-Type", "application/json"), ("Set-Cookie", "c=1")]
    assert parse_proxy_response(Invocation(200, b"{}" + b"\0" * 8))[:2] == (200, [("Content-Type", "application/json")])
    for malformed in (b"[1]", b"not json", b'{"statusCode": 200, "body": "x"}', b'{"statusCode": 99}', b'{"cookies": "c=1"}'):
        with pytest.raises(GatewayError) as refused:
            parse_proxy_response(Invocation(200, malformed + b"\0" * 8))
        assert refused.value.status == 502, malformed
    # An error or a buffered proxy answer has no NUL: read as today.
    assert parse_proxy_response(Invocation(200, json.dumps(DICT_ANSWER).encode()))[0] == 201


def test_the_local_stack_streams_only_when_asked(tmp_path: Path) -> None:
    plain = LocalStack(data_dir=tmp_path, port=0, s3_port=0, async_jobs=False)
    streaming = LocalStack(data_dir=tmp_path, port=0, s3_port=0, async_jobs=False, stream_api=True)

    assert plain.front.invoke_stream is None and plain.new_rie(0).config.streaming is False
    assert streaming.front.invoke_stream is not None and streaming.new_rie(0).config.streaming is True
    assert streaming.new_rie(0, "worker").config.streaming is False and streaming.new_rie(0, "s3_trigger").config.streaming is False


def test_the_local_stack_serves_the_api_function_under_its_streaming_runtime(tmp_path: Path) -> None:
    with LocalStack(data_dir=tmp_path, port=0, s3_port=0, workers=1, async_jobs=False, passthrough=(), stream_api=True) as stack:
        health = httpx.get(f"{stack.base_url}/health", timeout=30)
        missing = httpx.get(f"{stack.base_url}/no/such/route", timeout=30)
        assert stack.pool is not None and stack.pool.workers[0].config.streaming

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["transfer-encoding"] == "chunked"
    assert missing.status_code == 404 and missing.headers["transfer-encoding"] == "chunked"
