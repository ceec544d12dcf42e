"""``stream: true`` end to end against the real S3 server: the API handler in-process with the openai SDK reading its
answers, then the real function under the real RIE through functions/api/bootstrap and runtime.py, with the stream
tap between them (as tests/integration/test_streaming_runtime.py starts them) and the local provider.

Under the RIE the function is loaded as Lambda loads it (task root functions/api, handler ``app.lambda_handler``,
imagegen from the layer's directory), so the flag is the one runtime.py's main() sets, nothing of the tests'. The
local provider draws each partial in milliseconds, so what the tap's timestamps can show is the order and the count
of the events (each its own chunk, the partials no later than the completed one), not that a partial arrives while
the provider is still drawing: tests/unit/test_api_streaming.py shows that with a provider that takes its time.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.types import ImageGenCompletedEvent, ImageGenPartialImageEvent

from devtools.procs import LOOPBACK, ManagedProcess, free_port
from devtools.rie import INVOKE_PATH, find_rie
from devtools.s3server import S3Server
from devtools.stream_tap import PieceKind, StreamPiece, StreamTap
from functions.api.runtime import PRELUDE_DELIMITER, STREAMING_RUNTIME_ENV, StreamingResponse
from imagegen.providers.local import draw
from tests.conftest import load_event
from tests.unit.test_api_streaming import decoded, sdk_over_handler

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TASK_ROOT = ROOT / "functions" / "api"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
INPUT_PNG = draw("the input", 64, 64)


def keys_of(s3: Any, bucket: str, request_id: str) -> dict[str, list[str]]:
    """The keys under inputs/ and images/ that carry ``request_id``."""
    found: dict[str, list[str]] = {}
    for prefix in ("inputs/", "images/"):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        found[prefix] = sorted(obj["Key"] for page in pages for obj in page.get("Contents", []) if f"/{request_id}/" in obj["Key"])
    return found


# --- the handler in-process, the SDK reading it ---


@pytest.fixture
def streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STREAMING_RUNTIME_ENV, "1")


def test_a_streamed_generation_is_stored_and_its_url_serves_the_streamed_image(streaming, local_s3, s3, lambda_context) -> None:
    events: list[dict[str, Any]] = []
    answers: list[Any] = []
    client = sdk_over_handler(lambda_context, answers, edit=events.append)
    received = list(client.images.generate(prompt="a fox", model="local", size="256x256", stream=True, partial_images=2))

    assert [type(event) for event in received] == [ImageGenPartialImageEvent] * 2 + [ImageGenCompletedEvent]
    assert isinstance(answers[0], StreamingResponse)
    completed = received[-1].model_dump()
    image = base64.b64decode(completed["b64_json"])
    fetched = httpx.get(completed["url"], timeout=10)  # our field, ignored by the SDK's model but kept in its extras
    assert fetched.status_code == 200 and fetched.content == image
    request_id = events[0]["requestContext"]["requestId"]
    stored = keys_of(s3, local_s3.bucket, request_id)
    assert stored["inputs/"] == [] and len(stored["images/"]) == 1
    assert s3.get_object(Bucket=local_s3.bucket, Key=stored["images/"][0])["Body"].read() == image


def test_a_streamed_edit_stores_its_input_and_its_image(streaming, local_s3, s3, lambda_context) -> None:
    events: list[dict[str, Any]] = []
    client = sdk_over_handler(lambda_context, edit=events.append)
    received = list(client.images.edit(image=("in.png", INPUT_PNG, "image/png"), prompt="p", model="local", stream=True, partial_images=1))

    assert [event.type for event in received] == ["image_edit.partial_image", "image_edit.completed"]
    stored = keys_of(s3, local_s3.bucket, events[0]["requestContext"]["requestId"])
    assert len(stored["inputs/"]) == 1 and len(stored["images/"]) == 1
    assert s3.get_object(Bucket=local_s3.bucket, Key=stored["inputs/"][0])["Body"].read() == INPUT_PNG
    image = s3.get_object(Bucket=local_s3.bucket, Key=stored["images/"][0])["Body"].read()
    assert base64.b64decode(received[-1].b64_json) == image


# --- the function under the RIE and the streaming runtime ---


@dataclass
class Answer:
    """One invoke: the RIE's answer to the invoker, and what the tap saw of the runtime's response."""

    status: int = 0
    payload: bytes = b""
    pieces: list[StreamPiece] = field(default_factory=list)

    def kinds(self) -> list[PieceKind]:
        return [piece.kind for piece in self.pieces]

    def data(self) -> list[StreamPiece]:
        return [piece for piece in self.pieces if piece.kind is PieceKind.DATA]

    def prelude(self) -> dict[str, Any]:
        assert self.pieces and self.pieces[0].kind is PieceKind.PRELUDE, self.kinds()
        assert self.pieces[0].prelude is not None
        return dict(self.pieces[0].prelude)


class ApiFunction:
    """The API function under the RIE, started through the bootstrap wrapper, with the tap as its Runtime API."""

    def __init__(self, log_path: Path, s3_server: S3Server) -> None:
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
            env_tool,  # the RIE sets AWS_LAMBDA_RUNTIME_API to its own address: env(1) repoints it at the tap
            f"AWS_LAMBDA_RUNTIME_API={self.tap.address}",
            str(TASK_ROOT / "bootstrap"),
            sys.executable,
            "/var/runtime/bootstrap.py",
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LAMBDA_TASK_ROOT": str(TASK_ROOT),
            "_HANDLER": "app.lambda_handler",  # as template.yaml names it: app.py is the top-level module "app"
            "PYTHONPATH": str(ROOT / "layers" / "common"),  # the layer's python/ directory
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_FUNCTION_NAME": "imagegen-api",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "60",
            "POWERTOOLS_SERVICE_NAME": "imagegen",
            "POWERTOOLS_METRICS_NAMESPACE": "ImageGen",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            **s3_server.env(),
            "IMAGES_BUCKET": s3_server.bucket,
        }
        self.process = ManagedProcess("RIE (API function, streaming runtime)", argv, log_path=log_path, env=env, cwd=TASK_ROOT)
        self.process.start()
        self.process.wait_until(self._accepts, 15.0, f"listening on {LOOPBACK}:{self.invoke_port}")
        self.http = httpx.Client(timeout=None)

    def _accepts(self) -> bool:
        with socket.create_connection((LOOPBACK, self.invoke_port), timeout=0.5):
            return True

    def invoke(self, event: dict[str, Any], timeout: float = 60.0) -> Answer:
        """Invoke the RIE (in a thread) while reading the tap; returns when both are done."""
        answer = Answer()

        def call() -> None:
            response = self.http.post(f"http://{LOOPBACK}:{self.invoke_port}{INVOKE_PATH}", json=event, timeout=timeout)
            answer.status, answer.payload = response.status_code, response.content

        caller = threading.Thread(target=call)
        caller.start()
        try:
            answer.pieces.extend(self.tap.next_response(timeout=timeout))
        finally:
            caller.join(timeout)
        assert answer.status, f"the RIE did not answer: {self.process.tail()}"
        return answer

    def close(self) -> None:
        self.http.close()
        self.process.stop(grace=5.0)
        self.tap.stop()


@pytest.fixture(scope="module")
def function(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[ApiFunction]:
    started = ApiFunction(tmp_path_factory.mktemp("api-stream-rie") / "rie.log", s3_server)
    try:
        yield started
    finally:
        started.close()


def generation_event(**fields: Any) -> dict[str, Any]:
    event = load_event("api_generate_b64.json")
    event["body"] = json.dumps({"prompt": "a fox", "model": "local", "size": "256x256", **fields})
    return event


def sdk_reading(body: bytes) -> openai.OpenAI:
    """The SDK reading ``body`` as the server's answer, each event validated strictly with its own models."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=SSE_HEADERS, content=body)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.example.com/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        _strict_response_validation=True,
    )


def test_a_stream_leaves_the_function_event_by_event_and_parses_with_the_sdk(function: ApiFunction, s3: Any) -> None:
    answer = function.invoke(generation_event(stream=True, partial_images=2))

    assert answer.kinds() == [PieceKind.PRELUDE] + [PieceKind.DATA] * 3 + [PieceKind.END], answer.kinds()
    assert answer.prelude() == {"statusCode": 200, "headers": SSE_HEADERS}
    assert answer.pieces[-1].trailers == {}
    # Each event is its own chunk, in order: the partials no later than the completed image (see the docstring).
    chunks = answer.data()
    names = [decoded(iter([piece.data]))[0]["type"] for piece in chunks]
    assert names == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    times = [piece.at for piece in chunks]
    assert times == sorted(times) and answer.pieces[0].at <= times[0]
    body = b"".join(piece.data for piece in chunks)
    received = list(sdk_reading(body).images.generate(prompt="a fox", stream=True))
    assert [type(event) for event in received] == [ImageGenPartialImageEvent] * 2 + [ImageGenCompletedEvent]
    completed = received[-1].model_dump()
    assert httpx.get(completed["url"], timeout=10).content == base64.b64decode(completed["b64_json"])
    # The RIE buffers (docs/streaming.md), and still answers with all of it.
    assert answer.status == 200
    assert answer.payload == json.dumps(answer.prelude(), separators=(",", ":")).encode() + PRELUDE_DELIMITER + body


def test_the_same_runtime_answers_json_and_errors_before_the_stream_as_preludes(function: ApiFunction) -> None:
    plain = function.invoke(generation_event())
    assert plain.kinds() == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.END]
    assert plain.prelude()["statusCode"] == 200
    assert plain.prelude()["multiValueHeaders"]["Content-Type"] == ["application/json"]
    assert json.loads(plain.data()[0].data)["data"][0]["url"].startswith("http")

    refused = function.invoke(generation_event(stream=True, partial_images=1, size="640x480"))
    assert refused.kinds() == [PieceKind.PRELUDE, PieceKind.DATA, PieceKind.END]
    assert refused.prelude()["statusCode"] == 400
    assert json.loads(refused.data()[0].data)["error"]["param"] == "size"

    queued = generation_event(stream=True)
    queued["headers"]["Prefer"] = "respond-async"
    assert json.loads(function.invoke(queued).data()[0].data)["error"]["param"] == "stream"


def test_several_images_stream_their_partials_then_one_completed_event_each(function: ApiFunction) -> None:
    answer = function.invoke(generation_event(stream=True, partial_images=3, n=2))
    names = [decoded(iter([piece.data]))[0]["type"] for piece in answer.data()]
    assert names == ["image_generation.partial_image"] * 3 + ["image_generation.completed"] * 2
    # The completed events leave only once both images are stored: after every partial.
    times = [piece.at for piece in answer.data()]
    assert max(times[:3]) <= min(times[3:])


def test_a_streamed_edit_failing_after_its_first_partial_keeps_none_of_its_inputs(
    streaming, openai_env, local_s3, s3, lambda_context, monkeypatch
) -> None:
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    events: list[dict[str, Any]] = []
    client = sdk_over_handler(lambda_context, edit=events.append)
    received = []
    stream = client.images.edit(
        image=("in.png", INPUT_PNG, "image/png"),
        prompt="fail:mid-stream",
        model="gpt-image-1-mini",
        size="1024x1024",
        stream=True,
        partial_images=2,
    )
    with pytest.raises(openai.APIError):
        for event in stream:
            received.append(event.type)

    assert received == ["image_edit.partial_image"]
    assert openai_env.requests  # the inputs were written, then the provider called
    assert keys_of(s3, local_s3.bucket, events[0]["requestContext"]["requestId"]) == {"inputs/": [], "images/": []}
