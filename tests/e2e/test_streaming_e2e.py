"""``stream: true`` end to end: the official SDKs read partial images from the local stack running the API function
under its streaming runtime (``LocalStack(stream_api=True)``: the front relays each chunk as the function writes it).

One stack for the module, whose OpenAI models are the fake OpenAI server (tests/fakes/openai_server.py) on loopback;
the ``local`` model needs no provider. The Python SDK validates every event strictly with its own models; the npm
SDK runs tests/e2e/js/stream_e2e.mjs (type-checked against the package, each event checked against its declared
types) and hands its events back here. The relay's timing (issue #14): the fake spaces its events 1 s apart
(``slow-partials:1.0``) and the client must see them that far apart, not all at once at the end. OpenAI failing after
its first partial (the fake's ``fail:mid-stream``) must reach each SDK as that partial, then its APIError, with
nothing of the request left in S3.

This module always starts its own stack (it needs the streaming runtime and the fake), also with E2E_BASE_URL set."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest
from openai import APIError, BadRequestError, OpenAI
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
    ImagesResponse,
)
from PIL import Image as PILImage

from devtools.local import LocalStack
from tests.e2e.conftest import own_stack
from tests.e2e.test_edits_e2e import HEIGHT, WIDTH, assert_edit_of, left_half_mask, picture
from tests.e2e.test_images_e2e import decode
from tests.e2e.test_node_sdk_e2e import INSTALL_HINT, JS_DIR, pinned_sdk_version
from tests.fakes.openai_server import FakeOpenAI

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.e2e

SCRIPT = JS_DIR / "stream_e2e.mjs"
FAKE_MODEL = "gpt-image-2.5-sunburst"  # an OpenAI model: served by the fake, which streams it
SLOW_PAUSE = 1.0  # the fake's wait before each event (prompt slow-partials:1.0)
# The error event the API sends when OpenAI's stream fails after its first partial (the fake's prompt fail:mid-stream,
# a server_error): OpenAI's server errors are ours to word, as for a non-streamed 500.
MID_STREAM_ERROR = {
    "message": "The image provider failed (HTTP 500); try again later.",
    "type": "api_error",
    "param": None,
    "code": "provider_error",
}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def stream_stack(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[LocalStack]:
    stack = own_stack(
        tmp_path_factory,
        "stream-stack",
        workers=1,
        extra_env={"OPENAI_BASE_URL": fake_openai.base_url, "OPENAI_API_KEY": "sk-fake-stream-e2e"},
        async_jobs=False,
        stream_api=True,
    )
    with stack:
        yield stack


@pytest.fixture(scope="module")
def client(stream_stack: LocalStack) -> OpenAI:
    """The Python SDK validating every answer, and every event of a stream, with its own models."""
    return OpenAI(
        base_url=f"{stream_stack.base_url}/v1", api_key="unused-locally", max_retries=0, timeout=60, _strict_response_validation=True
    )


@pytest.fixture(scope="module")
def s3(stream_stack: LocalStack) -> S3Client:
    return stream_stack.s3_client()


def png_of(b64_json: str, size: tuple[int, int]) -> bytes:
    data = base64.b64decode(b64_json, validate=True)
    image = decode(data)
    assert (image.format, image.size) == ("PNG", size)
    return data


def stored_at(url: str, stack: LocalStack, s3: S3Client) -> bytes:
    """The bytes behind a presigned URL, fetched as a client would, and the same object read from S3 directly."""
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200, fetched.text
    bucket, key = urlsplit(url).path.lstrip("/").split("/", 1)
    assert bucket == stack.bucket and key.startswith("images/"), url
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == fetched.content
    return fetched.content


def stored_keys(stack: LocalStack, s3: S3Client, request_id: str = "") -> list[str]:
    """The keys under images/ and inputs/ (of the request ``request_id`` only, when given: its id is a key segment)."""
    keys = []
    for prefix in ("images/", "inputs/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", []) if not request_id or f"/{request_id}/" in obj["Key"]]
    return sorted(keys)


# --- the Python SDK ---


def test_a_streamed_generation_is_two_partials_then_the_stored_image(client: OpenAI, stream_stack: LocalStack, s3: S3Client) -> None:
    stream = client.images.generate(model="local", prompt="a lighthouse at dawn", stream=True, partial_images=2, size="256x256")
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert stream.response.headers["transfer-encoding"] == "chunked" and "content-length" not in stream.response.headers
    events = list(stream)

    assert [type(event) for event in events] == [ImageGenPartialImageEvent, ImageGenPartialImageEvent, ImageGenCompletedEvent]
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    partials, completed = events[:2], events[2]
    assert isinstance(completed, ImageGenCompletedEvent)
    assert [event.partial_image_index for event in partials if isinstance(event, ImageGenPartialImageEvent)] == [0, 1]
    assert {event.size for event in events} == {"256x256"}
    pictures = [png_of(event.b64_json, (256, 256)) for event in events]
    assert len(set(pictures)) == 3, "each partial is a step towards the image, not the image again"
    assert completed.model_extra is not None and isinstance(completed.model_extra.get("url"), str), completed.model_extra
    assert stored_at(completed.model_extra["url"], stream_stack, s3) == pictures[-1]


def test_a_streamed_edit_is_image_edit_events_of_the_upload(client: OpenAI, stream_stack: LocalStack, s3: S3Client) -> None:
    source, mask = picture(b"stream-e2e"), left_half_mask()
    stream = client.images.edit(
        model="local",
        image=("in.png", source, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="invert the left half",
        stream=True,
        partial_images=1,
    )
    events = list(stream)

    assert [type(event) for event in events] == [ImageEditPartialImageEvent, ImageEditCompletedEvent]
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    partial, completed = events
    assert isinstance(partial, ImageEditPartialImageEvent) and partial.partial_image_index == 0
    png_of(partial.b64_json, (WIDTH, HEIGHT))
    data = png_of(completed.b64_json, (WIDTH, HEIGHT))
    assert_edit_of(data, source, mask)
    assert completed.model_extra is not None
    assert stored_at(completed.model_extra["url"], stream_stack, s3) == data


def test_a_bad_size_is_refused_before_any_stream(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.images.generate(model="local", prompt="a red fox", stream=True, partial_images=1, size="640x480")

    assert refused.value.status_code == 400
    assert refused.value.response.headers["content-type"].startswith("application/json")
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "size", refused.value.body
    assert "640x480" in refused.value.message


def test_an_error_after_the_first_partial_raises_the_sdks_api_error_and_stores_nothing(
    client: OpenAI, stream_stack: LocalStack, s3: S3Client, fake_openai: FakeOpenAI
) -> None:
    before = stored_keys(stream_stack, s3)
    fake_openai.requests.clear()
    stream = client.images.generate(model=FAKE_MODEL, prompt="fail:mid-stream", stream=True, partial_images=2, size="1024x1024")
    assert stream.response.status_code == 200 and stream.response.headers["content-type"].startswith("text/event-stream")
    request_id = stream.response.headers["x-amzn-requestid"]
    received = []
    with pytest.raises(APIError) as failed:
        for event in stream:
            received.append(event)

    # The partial OpenAI sent before failing reached the client, strictly validated, then the error event ended it.
    assert [type(event) for event in received] == [ImageGenPartialImageEvent], received
    assert isinstance(received[0], ImageGenPartialImageEvent) and received[0].partial_image_index == 0
    png_of(received[0].b64_json, (1024, 1024))
    error = failed.value
    assert type(error) is APIError, "the SDK's own error for an error event, not a status or connection error"
    assert (error.message, error.type, error.code, error.param) == (
        MID_STREAM_ERROR["message"],
        MID_STREAM_ERROR["type"],
        MID_STREAM_ERROR["code"],
        None,
    )
    assert error.body == MID_STREAM_ERROR
    assert len(fake_openai.requests) == 1, "a stream that has begun is not retried"
    # Nothing of the failed request is in S3, and nothing else appeared.
    assert stored_keys(stream_stack, s3, request_id) == []
    assert stored_keys(stream_stack, s3) == before


def test_a_request_without_stream_answers_json_as_usual(client: OpenAI) -> None:
    response = client.images.generate(model="local", prompt="a red fox", size="256x256", response_format="b64_json")

    assert isinstance(response, ImagesResponse)
    assert response.data is not None and len(response.data) == 1
    assert response.data[0].b64_json is not None and response.data[0].url is None
    png_of(response.data[0].b64_json, (256, 256))


# --- the relay's timing (issue #14 item 5) ---


def test_events_reach_the_client_as_openai_sends_them(client: OpenAI, fake_openai: FakeOpenAI) -> None:
    """The fake waits 1 s before each event; a relay that buffered would deliver all three together at the end."""
    fake_openai.requests.clear()
    started = time.monotonic()
    stream = client.images.generate(model=FAKE_MODEL, prompt=f"slow-partials:{SLOW_PAUSE}", stream=True, partial_images=2, size="1024x1024")
    received: list[tuple[float, str]] = []
    for event in stream:
        received.append((time.monotonic() - started, event.type))

    timeline = ", ".join(f"{kind} at +{at:.2f} s" for at, kind in received)
    assert [kind for _, kind in received] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"], timeline
    times = [at for at, _ in received]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # One pause between consecutive events (the completed one also waits for its S3 write); slack for a loaded machine.
    assert all(0.6 <= gap <= 3.0 for gap in gaps), f"gaps {[round(gap, 2) for gap in gaps]} s; client saw: {timeline}"
    assert 1.2 <= times[-1] - times[0] <= 6.0, f"first partial {times[-1] - times[0]:.2f} s before completed; client saw: {timeline}"
    (request,) = fake_openai.requests
    assert request["path"] == "/v1/images/generations"
    assert (request["json"]["stream"], request["json"]["partial_images"]) == (True, 2), "the API asked OpenAI to stream"


# --- the npm SDK ---


def run_stream_script(base_url: str) -> dict[str, Any]:
    """Run stream_e2e.mjs once against ``base_url`` (the API root, without /v1) and return its report."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node not found on PATH: the npm SDK's e2e tests need Node.js; {INSTALL_HINT}", pytrace=False)
    installed = JS_DIR / "node_modules" / "openai" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != pinned_sdk_version():
        pytest.fail(f"tests/e2e/js/node_modules lacks openai {pinned_sdk_version()}: {INSTALL_HINT}", pytrace=False)
    env = {**os.environ, "IMAGEGEN_BASE_URL": f"{base_url}/v1", "IMAGEGEN_OPENAI_MODEL": FAKE_MODEL}
    result = subprocess.run([node, str(SCRIPT)], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=240, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode not in (0, 1) or not lines:
        pytest.fail(f"node {SCRIPT.name} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}", pytrace=False)
    report: dict[str, Any] = json.loads(lines[-1])
    report["returncode"] = result.returncode
    report["stderr"] = result.stderr
    return report


def checks_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


@pytest.fixture(scope="module")
def node_report(stream_stack: LocalStack) -> dict[str, Any]:
    return run_stream_script(stream_stack.base_url)


def test_the_npm_script_type_checks_and_every_check_passes(node_report: dict[str, Any]) -> None:
    assert node_report["sdk"] == pinned_sdk_version()
    assert node_report["typecheck"] == [], "\n".join(node_report["typecheck"])
    errors = {name: check["errors"] for name, check in checks_of(node_report).items()}
    assert errors == {"generate_stream": [], "edit_stream": [], "error_stream_bad_size": [], "error_mid_stream": []}
    assert node_report["returncode"] == 0, node_report["stderr"]


def test_the_npm_sdk_iterates_two_partials_then_the_stored_image(
    node_report: dict[str, Any], stream_stack: LocalStack, s3: S3Client
) -> None:
    events = checks_of(node_report)["generate_stream"]["events"]

    assert [event["type"] for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [event.get("partial_image_index") for event in events] == [0, 1, None]
    assert {event["size"] for event in events} == {"256x256"}
    pictures = [png_of(event["b64_json"], (256, 256)) for event in events]
    assert stored_at(events[-1]["url"], stream_stack, s3) == pictures[-1]
    # The url is the one field beyond the SDK's declared event types.
    assert checks_of(node_report)["generate_stream"]["extras"] == ["OpenAI.Images.ImageGenCompletedEvent.url"]


def test_the_npm_sdk_streams_an_edit_of_its_upload(node_report: dict[str, Any]) -> None:
    """The script uploads the generated image (256x256) as a multipart form, stream sent as the string "true"."""
    check = checks_of(node_report)["edit_stream"]
    events = check["events"]

    assert [event["type"] for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    source = base64.b64decode(check["input"], validate=True)
    assert_edit_of(png_of(events[-1]["b64_json"], (256, 256)), source, None)
    assert check["extras"] == ["OpenAI.Images.ImageEditCompletedEvent.url"]


def test_the_npm_sdk_raises_bad_request_for_a_bad_size(node_report: dict[str, Any]) -> None:
    check = checks_of(node_report)["error_stream_bad_size"]
    assert (check["status"], check["param"]) == (400, "size")


def test_the_npm_sdks_stream_throws_api_error_after_the_first_partial_and_nothing_is_stored(
    node_report: dict[str, Any], stream_stack: LocalStack, s3: S3Client
) -> None:
    check = checks_of(node_report)["error_mid_stream"]

    assert check["status"] == 200
    assert [event["type"] for event in check["events"]] == ["image_generation.partial_image"]
    png_of(check["events"][0]["b64_json"], (1024, 1024))
    assert check["error"] == {"name": "APIError", "status": None, **MID_STREAM_ERROR}
    assert stored_keys(stream_stack, s3, check["request_id"]) == []
    # The request id is what names a request's keys: the streamed generation's image is under its own.
    generated = checks_of(node_report)["generate_stream"]
    (key,) = stored_keys(stream_stack, s3, generated["request_id"])
    assert urlsplit(generated["events"][-1]["url"]).path.endswith(f"/{key}")


# --- the npm script's checks can fail: the same script against a server streaming what the SDK's types rule out ---

PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


class WrongStreams(BaseHTTPRequestHandler):
    """A generation stream with one partial whose index is a string and no completed event; edits and the bad size
    answered with an empty stream (so no error is raised)."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        events = []
        if self.path.endswith("/images/generations"):
            partial = {"type": "image_generation.partial_image", "b64_json": PNG_1x1, "created_at": 1, "partial_image_index": "0"}
            partial.update({"background": "auto", "output_format": "png", "quality": "auto", "size": "256x256"})
            events.append(partial)
        body = b"".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def wrong_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), WrongStreams)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_npm_checks_fail_on_streams_the_sdk_types_rule_out(wrong_server: str) -> None:
    wrong = run_stream_script(wrong_server)

    assert wrong["returncode"] == 1
    errors = {name: "\n".join(check["errors"]) for name, check in checks_of(wrong).items()}
    assert 'OpenAI.Images.ImageGenPartialImageEvent.partial_image_index: "0" is not number' in errors["generate_stream"]
    assert "event types" in errors["generate_stream"]
    assert "no generated image to upload" in errors["edit_stream"]
    assert "the call succeeded; expected BadRequestError" in errors["error_stream_bad_size"]
    assert "the stream ended without an error; expected APIError" in errors["error_mid_stream"]


def test_the_uploaded_image_is_what_pillow_reads(node_report: dict[str, Any]) -> None:
    """The edit's input is the generated image as the script received it (so the edit check above is of real pixels)."""
    check = checks_of(node_report)
    generated = base64.b64decode(check["generate_stream"]["events"][-1]["b64_json"], validate=True)
    assert base64.b64decode(check["edit_stream"]["input"], validate=True) == generated
    assert PILImage.open(io.BytesIO(generated)).size == (256, 256)
