"""A Lambda handler for the streaming runtime's integration test: the event's ``mode`` picks what it answers.

It runs under the real RIE through functions/api/bootstrap and functions/api/runtime.py, imported as
``tests.fakes.stream_handler`` (the repository root is on PYTHONPATH there).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

from functions.api.runtime import StreamingResponse

CHUNK_GAP_SECONDS = 0.5
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _events(count: int, gap: float) -> Iterator[bytes]:
    for index in range(count):
        if index:
            time.sleep(gap)
        yield f"event: tick\ndata: {json.dumps({'index': index, 'sent': time.time()})}\n\n".encode()


def _crash_after_one() -> Iterator[bytes]:
    yield b"event: tick\ndata: {}\n\n"
    raise RuntimeError("the provider went away mid-stream")


def _crash_before_any() -> Iterator[bytes]:
    yield from ()  # a generator, so the failure comes from the body's first item, not from the handler call
    raise LookupError("nothing to stream")


def _slow() -> Iterator[bytes]:
    yield b"event: tick\ndata: {}\n\n"
    time.sleep(60)
    yield b"never sent"


def _big(mebibytes: int) -> Iterator[bytes]:
    for index in range(mebibytes):
        yield bytes([ord("a") + index]) * (1024 * 1024)


def handler(event: dict[str, Any], context: Any) -> object:
    mode = event.get("mode")
    if mode == "stream":
        return StreamingResponse(200, SSE_HEADERS, _events(3, CHUNK_GAP_SECONDS))
    if mode == "dict":
        body = {"remaining_ms": context.get_remaining_time_in_millis(), "request_id": context.aws_request_id}
        return {
            "statusCode": 201,
            "headers": {"Content-Type": "application/json"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "isBase64Encoded": True,
        }
    if mode == "crash-mid-stream":
        return StreamingResponse(200, SSE_HEADERS, _crash_after_one())
    if mode == "crash-first":
        return StreamingResponse(200, SSE_HEADERS, _crash_before_any())
    if mode == "slow":
        return StreamingResponse(200, SSE_HEADERS, _slow())
    if mode == "big":
        return StreamingResponse(200, {"Content-Type": "application/octet-stream"}, _big(int(event["mebibytes"])))
    raise ValueError(f"unknown mode {mode!r}")
