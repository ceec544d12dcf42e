"""The streaming runtime loop under the real RIE (the one aws-sam-cli ships), with the stream tap in between.

One RIE process runs ``functions/api/bootstrap`` (as ``AWS_LAMBDA_EXEC_WRAPPER`` would on Lambda) with
``AWS_LAMBDA_RUNTIME_API`` pointed at a StreamTap that forwards to the RIE's Runtime API; the handler is
tests/fakes/stream_handler.py. Checked: chunks reach the tap as they are written (0.5 s apart), the RIE still
answers every invoke (with the whole body, as it buffers), the process stays warm across invocations, a proxy
dict is streamed as prelude + body, failures before and after the first byte, the 6 MiB cap, and the RIE's
timeout killing a runtime mid-stream.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.procs import LOOPBACK, ManagedProcess, free_port
from devtools.rie import INVOKE_PATH, find_rie
from devtools.stream_tap import MAX_RESPONSE_BYTES, PieceKind, StreamPiece, StreamTap
from functions.api.runtime import PRELUDE_DELIMITER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TASK_ROOT = ROOT / "functions" / "api"
TIMEOUT_SECONDS = 4
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass
class Answer:
    """One invoke: the RIE's answer to the invoker, and what the tap saw of the runtime's response."""

    started: float
    status: int = 0
    payload: bytes = b""
    answered: float = 0.0
    pieces: list[StreamPiece] = field(default_factory=list)

    def kinds(self) -> list[PieceKind]:
        return [piece.kind for piece in self.pieces]

    def data(self) -> list[bytes]:
        return [piece.data for piece in self.pieces if piece.kind is PieceKind.DATA]


class Stack:
    """The RIE, the runtime under it through the bootstrap wrapper, and the tap between them."""

    def __init__(self, log_path: Path) -> None:
        self.invoke_port, api_port = free_port(), free_port()
        self.tap = StreamTap(f"{LOOPBACK}:{api_port}")
        self.tap.start()
        env_tool = shutil.which("env")
        assert env_tool, "no env(1) on PATH"
        argv = [
            str(find_rie()),
            "--runtime-interface-emulator-address",
            f"{LOOPBACK}:{self.invoke_port}",
            "--runtime-api-address",
            f"{LOOPBACK}:{api_port}",
            # The RIE sets the runtime's AWS_LAMBDA_RUNTIME_API to its own address: env(1) repoints it at the tap.
            env_tool,
            f"AWS_LAMBDA_RUNTIME_API={self.tap.address}",
            str(TASK_ROOT / "bootstrap"),
            sys.executable,  # what the managed runtime passes the wrapper: its interpreter, then its bootstrap.py
            "/var/runtime/bootstrap.py",
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LAMBDA_TASK_ROOT": str(TASK_ROOT),
            "_HANDLER": "tests.fakes.stream_handler.handler",
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_FUNCTION_NAME": "stream-test",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(TIMEOUT_SECONDS),
            "AWS_REGION": "us-east-1",
        }
        self.process = ManagedProcess("RIE (streaming runtime)", argv, log_path=log_path, env=env, cwd=TASK_ROOT)
        self.process.start()
        self.process.wait_until(self._accepts, 15.0, f"listening on {LOOPBACK}:{self.invoke_port}")
        self.http = httpx.Client(timeout=None)

    def _accepts(self) -> bool:
        with socket.create_connection((LOOPBACK, self.invoke_port), timeout=0.5):
            return True

    def invoke(self, event: dict[str, Any], timeout: float = 20.0) -> Answer:
        """Invoke the RIE (in a thread) while reading the tap; returns when both are done."""
        answer = Answer(started=time.monotonic())

        def call() -> None:
            response = self.http.post(f"http://{LOOPBACK}:{self.invoke_port}{INVOKE_PATH}", json=event, timeout=timeout)
            answer.status, answer.payload, answer.answered = response.status_code, response.content, time.monotonic()

        caller = threading.Thread(target=call)
        caller.start()
        try:
            answer.pieces.extend(self.tap.next_response(timeout=timeout))
        finally:
            caller.join(timeout)
        assert answer.answered, f"the RIE did not answer {event}: {self.process.tail()}"
        return answer

    def close(self) -> None:
        self.http.close()
        self.process.stop(grace=5.0)
        self.tap.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stream-rie") / "rie.log")
    try:
        yield stack
    finally:
        stack.close()


def prelude_of(answer: Answer) -> dict[str, Any]:
    assert answer.pieces[0].kind is PieceKind.PRELUDE, answer.kinds()
    assert answer.pieces[0].prelude is not None
    return dict(answer.pieces[0].prelude)


def test_chunks_reach_the_tap_as_they_are_written_and_the_rie_still_answers(stack: Stack) -> None:
    answer = stack.invoke({"mode": "stream"})

    assert answer.kinds() == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.DATA, PieceKind.DATA, PieceKind.END]
    assert prelude_of(answer) == {"statusCode": 200, "headers": SSE_HEADERS}
    events = [json.loads(chunk.decode().split("data: ", 1)[1]) for chunk in answer.data()]
    assert [event["index"] for event in events] == [0, 1, 2]
    # The handler sleeps 0.5 s between events: the tap must see each one then, not all at the end.
    times = [piece.at for piece in answer.pieces if piece.kind is PieceKind.DATA]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert all(0.4 < gap < 0.8 for gap in gaps), gaps
    assert answer.pieces[0].at <= times[0] + 0.05, "the prelude goes out with the first event"
    assert answer.pieces[-1].trailers == {}
    # The RIE answers once the body is complete, with all of it: prelude, delimiter, events.
    assert answer.status == 200
    assert answer.payload == json.dumps(prelude_of(answer), separators=(",", ":")).encode() + PRELUDE_DELIMITER + b"".join(answer.data())
    assert answer.answered >= times[-1]


def test_a_warm_runtime_serves_the_next_invocations(stack: Stack) -> None:
    stack.invoke({"mode": "stream"})
    pid_before = _runtime_pids(stack)
    second = stack.invoke({"mode": "stream"})
    third = stack.invoke({"mode": "dict"})

    assert second.kinds()[-1] is PieceKind.END and third.kinds()[-1] is PieceKind.END
    assert _runtime_pids(stack) == pid_before, "the same runtime process served every invocation"
    assert second.pieces[0].request_id != third.pieces[0].request_id


def test_a_proxy_dict_is_streamed_as_prelude_and_its_decoded_body(stack: Stack) -> None:
    answer = stack.invoke({"mode": "dict"})

    assert answer.kinds() == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.END]
    assert prelude_of(answer) == {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
    }
    body = json.loads(answer.data()[0])
    assert body["request_id"] == answer.pieces[0].request_id
    # The context's remaining time follows the RIE's deadline (the function's timeout).
    assert 0 < body["remaining_ms"] <= TIMEOUT_SECONDS * 1000
    assert answer.status == 200 and answer.payload.endswith(PRELUDE_DELIMITER + answer.data()[0])


def test_a_failure_mid_stream_ends_the_body_with_the_error_trailers(stack: Stack) -> None:
    answer = stack.invoke({"mode": "crash-mid-stream"})

    assert answer.kinds() == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.END]
    end = answer.pieces[-1]
    assert end.error_type == "RuntimeError"
    error = json.loads(base64.b64decode(end.trailers["Lambda-Runtime-Function-Error-Body"]))
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "the provider went away mid-stream"
    assert any("_crash_after_one" in line for line in error["stackTrace"])
    assert answer.status == 200  # the RIE drops the trailers (docs/streaming.md): only the tap sees the failure
    assert stack.invoke({"mode": "dict"}).kinds()[-1] is PieceKind.END, "the runtime lives on"


def test_a_failure_before_the_first_byte_is_a_function_error(stack: Stack) -> None:
    answer = stack.invoke({"mode": "crash-first"})

    assert answer.kinds() == [PieceKind.FUNCTION_ERROR]
    assert answer.pieces[0].error_type == "LookupError"
    error = json.loads(answer.pieces[0].data)
    assert error["errorType"] == "LookupError" and error["errorMessage"] == "nothing to stream"
    # The RIE reports it to the invoker as the function's error.
    assert json.loads(answer.payload)["errorType"] == "LookupError"
    assert stack.invoke({"mode": "dict"}).kinds()[-1] is PieceKind.END


def test_a_body_over_6_mib_is_cut_at_the_tap_and_refused_by_the_rie(stack: Stack) -> None:
    answer = stack.invoke({"mode": "big", "mebibytes": 7})

    assert answer.kinds()[0] is PieceKind.PRELUDE
    assert answer.kinds()[-1] is PieceKind.ABORTED
    assert "Function.ResponseSizeTooLarge" in answer.pieces[-1].reason
    assert sum(len(chunk) for chunk in answer.data()) <= MAX_RESPONSE_BYTES
    assert b"ResponseSizeTooLarge" in answer.payload, answer.payload[:300]
    assert stack.invoke({"mode": "dict"}).kinds()[-1] is PieceKind.END, "the runtime took the RIE's 413 and lives on"


def test_the_rie_still_enforces_the_function_timeout_mid_stream(stack: Stack) -> None:
    answer = stack.invoke({"mode": "slow"})

    assert answer.kinds() == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.ABORTED]
    assert "broke off" in answer.pieces[-1].reason
    elapsed = answer.answered - answer.started
    assert TIMEOUT_SECONDS - 0.5 < elapsed < TIMEOUT_SECONDS + 3, elapsed
    assert b"Task timed out" in answer.payload or b"Timedout" in answer.payload, answer.payload[:300]
    # The RIE starts a new runtime for the next invocation (a cold start), through the tap again.
    assert stack.invoke({"mode": "stream"}).kinds()[-1] is PieceKind.END


def _runtime_pids(stack: Stack) -> set[int]:
    """Pids of runtime.py processes in the RIE's session."""
    from devtools.procs import session_members

    assert stack.process.pid is not None
    pids = set()
    for pid in session_members(stack.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"runtime.py" in cmdline:
            pids.add(pid)
    return pids
