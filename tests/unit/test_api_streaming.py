"""``stream: true`` through the API handler: served only under the streaming runtime (runtime.py sets
IMAGEGEN_STREAMING_RUNTIME), as a StreamingResponse whose body the openai SDK reads with its own SSE decoder and
models; refused by name otherwise, with a queue (Prefer: respond-async) or with Idempotency-Key. Errors before the
first event are the usual JSON answers; after it, an ``error`` event ends the stream (api_error for a bug, counted).

The unit tier has no sockets: the service stores into an in-memory store here (tests/integration/
test_api_streaming_runtime.py runs the same against the real S3 server and under the real RIE)."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai._streaming import SSEDecoder
from openai.types import ImageEditCompletedEvent, ImageEditPartialImageEvent, ImageGenCompletedEvent, ImageGenPartialImageEvent

from functions.api import app, runtime
from functions.api.runtime import STREAMING_RUNTIME_ENV, StreamingResponse
from imagegen.errors import ProviderError
from imagegen.observability import INTERNAL_ERRORS_METRIC
from imagegen.providers import get_provider
from imagegen.providers.base import ProviderPartial
from imagegen.providers.local import LocalProvider, draw
from imagegen.registry import deployment_registry
from imagegen.service import ImageService
from imagegen.settings import get_settings
from tests.conftest import load_event
from tests.fakes.memory_store import InMemoryStore

SDK_MODELS: dict[str, type[Any]] = {
    "image_generation.partial_image": ImageGenPartialImageEvent,
    "image_generation.completed": ImageGenCompletedEvent,
    "image_edit.partial_image": ImageEditPartialImageEvent,
    "image_edit.completed": ImageEditCompletedEvent,
}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
INPUT_PNG = draw("the input", 64, 64)


class MemoryStore(InMemoryStore):
    """The in-memory store with the real store's ``deadline`` keyword."""

    def put_all(self, objects: Any, metadata: Any, *, deadline: Any = None) -> None:
        super().put_all(objects, metadata)


class ScriptedProvider:
    """A streaming provider yielding ``items`` (an exception is raised there); records its deadline and its closing."""

    def __init__(self, *items: Any) -> None:
        self.items = items
        self.closed = False
        self.deadline_seconds: float | None = None

    def generate(self, plan: Any, deadline: Any) -> Any:
        raise AssertionError("a streaming provider is streamed")

    def stream(self, plan: Any, deadline: Any) -> Iterator[Any]:
        self.deadline_seconds = deadline.remaining()
        try:
            for item in self.items:
                if isinstance(item, BaseException):
                    raise item
                yield item
            if not self.items:
                yield from LocalProvider().stream(plan, deadline)
        finally:
            self.closed = True


@pytest.fixture
def streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """What runtime.py's main() sets before it imports the handler."""
    monkeypatch.setenv(STREAMING_RUNTIME_ENV, "1")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    """The API's service with the deployment's registry and providers, storing in memory."""
    memory = MemoryStore()
    settings = get_settings()
    service = ImageService(registry=deployment_registry(settings), provider_for=get_provider, store=memory, settings=settings)
    monkeypatch.setattr(app, "get_service", lambda: service)
    return memory


def use_provider(monkeypatch: pytest.MonkeyPatch, provider: Any) -> None:
    """Every model of the (already patched) service drawn by ``provider``."""
    service = app.get_service()
    monkeypatch.setattr(service, "provider_for", lambda name: provider)


def api_event(request: httpx2.Request) -> dict[str, Any]:
    """``request`` as API Gateway's REST proxy event (binary bodies base64-encoded, as the binary media types do)."""
    event = load_event("api_generate_b64.json")
    path = request.url.path
    event["path"] = event["resource"] = event["requestContext"]["resourcePath"] = path
    event["requestContext"]["path"] = f"/prod{path}"
    body = request.read()
    multipart = request.headers.get("content-type", "").startswith("multipart/")
    event["body"] = base64.b64encode(body).decode() if multipart else body.decode()
    event["isBase64Encoded"] = multipart
    headers = {name.title(): value for name, value in request.headers.items() if name.lower() not in ("content-length", "host")}
    event["headers"] = headers
    event["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
    return event


def http_answer(answer: dict[str, Any] | StreamingResponse) -> httpx2.Response:
    """What API Gateway sends for the handler's answer: a proxy dict whole, a StreamingResponse as its body goes."""
    if isinstance(answer, StreamingResponse):
        return httpx2.Response(answer.status_code, headers=dict(answer.headers), content=iter(answer.body))
    headers = {name: ", ".join(values) for name, values in answer["multiValueHeaders"].items()}
    body = base64.b64decode(answer["body"]) if answer["isBase64Encoded"] else answer["body"].encode()
    return httpx2.Response(answer["statusCode"], headers=headers, content=body)


def sdk_over_handler(
    lambda_context: Any, seen: list[dict[str, Any] | StreamingResponse] | None = None, edit: Callable[[dict[str, Any]], None] | None = None
) -> openai.OpenAI:
    """The openai SDK whose every request goes through app.lambda_handler as API Gateway would pass it, validating
    each answer (every event of a stream) strictly with its own models; ``seen`` collects the handler's answers."""

    def transport(request: httpx2.Request) -> httpx2.Response:
        event = api_event(request)
        if edit is not None:
            edit(event)
        answer = app.lambda_handler(event, lambda_context)
        if seen is not None:
            seen.append(answer)
        return http_answer(answer)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.example.com/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(transport)),
        _strict_response_validation=True,
    )


def decoded(body: Iterator[bytes]) -> list[dict[str, Any]]:
    """The events of a streamed body through the SDK's own SSE decoder, each data checked against its event name."""
    events = []
    for message in SSEDecoder().iter_bytes(body):
        data = message.json()
        assert message.event == data["type"], message
        events.append(data)
    return events


def generation(lambda_context: Any, **fields: Any) -> dict[str, Any] | StreamingResponse:
    body = {"prompt": "x", "model": "local", "stream": True, "size": "256x256", **fields}
    event = load_event("api_generate_b64.json")
    event["body"] = json.dumps({key: value for key, value in body.items() if value is not None})
    result: dict[str, Any] | StreamingResponse = app.lambda_handler(event, lambda_context)
    return result


def error_of(answer: dict[str, Any] | StreamingResponse) -> tuple[int, dict[str, Any]]:
    assert isinstance(answer, dict), answer
    assert answer["multiValueHeaders"]["Content-Type"] == ["application/json"]
    return answer["statusCode"], json.loads(answer["body"])["error"]


# --- the flag ---


def test_the_runtime_sets_the_flag_before_it_imports_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STREAMING_RUNTIME_ENV, "0")  # so that monkeypatch removes what main() sets
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(app.PLAYGROUND_DIR.parent))
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() puts the task root first
    seen: list[str | None] = []

    def serve(client: Any, spec: str, hooks: Any = None) -> int:  # serve() is where the handler is imported
        seen.append(os.environ.get(STREAMING_RUNTIME_ENV))
        return 3

    monkeypatch.setattr(runtime, "serve", serve)
    with pytest.raises(SystemExit) as exited:
        runtime.main()
    assert (exited.value.code, seen) == (3, ["1"])


@pytest.mark.parametrize("prefer", [None, "respond-async"])
def test_without_the_streaming_runtime_stream_is_refused_by_name(lambda_context, store, prefer) -> None:
    event = load_event("api_generate_b64.json", stream=True, partial_images=2)
    if prefer:
        event["headers"]["Prefer"] = prefer
    status, error = error_of(app.lambda_handler(event, lambda_context))
    assert status == 400
    assert (error["param"], error["code"]) == ("stream", "unsupported_parameter")
    assert "streaming is not supported" in error["message"] and "streaming runtime" in error["message"]
    assert store.objects == {}


def test_without_the_streaming_runtime_an_edit_stream_is_refused_by_name(lambda_context, store) -> None:
    client = sdk_over_handler(lambda_context)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=("in.png", INPUT_PNG, "image/png"), prompt="p", model="local", stream=True)
    assert caught.value.param == "stream" and caught.value.code == "unsupported_parameter"
    assert store.objects == {}


def test_without_the_streaming_runtime_a_json_edit_stream_is_refused_by_name(lambda_context, store) -> None:
    event = load_event("api_edit_multipart.json")
    data_url = "data:image/png;base64," + base64.b64encode(INPUT_PNG).decode()
    event["body"] = json.dumps({"prompt": "p", "model": "local", "images": [{"image_url": data_url}], "stream": True})
    event["isBase64Encoded"] = False
    event["headers"]["Content-Type"] = "application/json"
    event["multiValueHeaders"]["Content-Type"] = ["application/json"]
    status, error = error_of(app.lambda_handler(event, lambda_context))
    assert status == 400
    assert (error["param"], error["code"]) == ("stream", "unsupported_parameter")
    assert store.objects == {}


# --- streams ---


def test_a_generation_streams_its_partials_then_its_stored_image(streaming, store, lambda_context) -> None:
    answer = generation(lambda_context, partial_images=2, size=None)

    assert isinstance(answer, StreamingResponse)
    assert answer.status_code == 200
    assert dict(answer.headers) == SSE_HEADERS
    events = decoded(iter(answer.body))
    assert [event["type"] for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    for event in events:
        SDK_MODELS[event["type"]].model_validate(event, strict=True)
    assert [event["partial_image_index"] for event in events[:2]] == [0, 1]
    completed = events[-1]
    (key,) = store.objects
    assert base64.b64decode(completed["b64_json"]) == store.objects[key][0]
    assert completed["url"] == store.presign(key, get_settings().presign_ttl_seconds)
    assert completed["size"] == "1024x1024"  # the local model's default


def test_the_sdk_reads_a_streamed_generation_as_it_reads_openais(streaming, store, lambda_context) -> None:
    seen: list[Any] = []
    client = sdk_over_handler(lambda_context, seen)
    received = list(client.images.generate(prompt="a fox", model="local", size="256x256", n=2, stream=True, partial_images=1))
    assert [type(event) for event in received] == [ImageGenPartialImageEvent, ImageGenCompletedEvent, ImageGenCompletedEvent]
    assert isinstance(seen[0], StreamingResponse)
    assert sorted(base64.b64decode(event.b64_json) for event in received[1:]) == sorted(data for data, _, _ in store.objects.values())


def test_an_edit_streams_image_edit_events_and_stores_its_input(streaming, store, lambda_context) -> None:
    client = sdk_over_handler(lambda_context)
    received = list(client.images.edit(image=("in.png", INPUT_PNG, "image/png"), prompt="p", model="local", stream=True, partial_images=2))
    assert [type(event) for event in received] == [ImageEditPartialImageEvent] * 2 + [ImageEditCompletedEvent]
    stored = {key.split("/")[0]: data for key, (data, _, _) in store.objects.items()}
    assert stored["inputs"] == INPUT_PNG
    assert base64.b64decode(received[-1].b64_json) == stored["images"]


def test_an_error_before_the_first_event_is_the_usual_json_answer(streaming, store, lambda_context) -> None:
    status, error = error_of(generation(lambda_context, size="640x480", partial_images=1))
    assert status == 400 and error["param"] == "size"
    client = sdk_over_handler(lambda_context)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=("in.png", INPUT_PNG, "image/png"), prompt="p", model="local", stream=True, size="640x480")
    assert caught.value.param == "size"
    assert store.objects == {}


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/images/edits"])
def test_a_stream_cannot_be_queued(streaming, store, lambda_context, path) -> None:
    def queued(event: dict[str, Any]) -> None:
        event["headers"]["Prefer"] = "respond-async"

    client = sdk_over_handler(lambda_context, edit=queued)
    with pytest.raises(openai.BadRequestError) as caught:
        if path.endswith("generations"):
            client.images.generate(prompt="p", model="local", stream=True)
        else:
            client.images.edit(image=("in.png", INPUT_PNG, "image/png"), prompt="p", model="local", stream=True)
    assert caught.value.param == "stream" and "asynchronously" in caught.value.message
    assert store.objects == {}


def test_a_stream_cannot_be_idempotent(streaming, store, lambda_context) -> None:
    client = sdk_over_handler(lambda_context)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="p", model="local", stream=True, extra_headers={"Idempotency-Key": "k-1"})
    assert caught.value.param == "Idempotency-Key" and "stream" in caught.value.message
    assert store.objects == {}


def test_a_provider_error_mid_stream_is_the_last_event(streaming, store, lambda_context, monkeypatch) -> None:
    use_provider(monkeypatch, ScriptedProvider(ProviderPartial(draw("p", 16, 16), 0), ProviderError("The image provider failed.")))
    answer = generation(lambda_context, partial_images=2)
    assert isinstance(answer, StreamingResponse)
    events = decoded(iter(answer.body))
    assert [event["type"] for event in events] == ["image_generation.partial_image", "error"]
    assert events[-1]["error"] == {"message": "The image provider failed.", "type": "api_error", "param": None, "code": "provider_error"}
    assert store.objects == {}
    # The SDK raises it, as it raises OpenAI's own error events.
    client = sdk_over_handler(lambda_context)
    stream = client.images.generate(prompt="a fox", model="local", stream=True, partial_images=2)
    assert next(stream).type == "image_generation.partial_image"
    with pytest.raises(openai.APIError) as caught:
        next(stream)
    assert caught.value.code == "provider_error"


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")


def emitted(output: str) -> set[str]:
    """The metric names of every EMF line printed."""
    names = set()
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names.update(metric["Name"] for metric in directive["Metrics"])
    return names


def test_a_bug_mid_stream_is_counted_and_ends_the_stream_with_an_api_error(
    streaming, store, lambda_context, monkeypatch, metrics_on, capsys
) -> None:
    use_provider(monkeypatch, ScriptedProvider(ProviderPartial(draw("p", 16, 16), 0), KeyError("a bug's secret detail")))
    answer = generation(lambda_context, partial_images=2)
    assert isinstance(answer, StreamingResponse)
    assert INTERNAL_ERRORS_METRIC not in emitted(capsys.readouterr().out), "nothing has failed yet"
    raw = b"".join(answer.body)
    events = decoded(iter([raw]))
    assert [event["type"] for event in events] == ["image_generation.partial_image", "error"]
    assert events[-1]["error"] == {
        "message": "The server had an error while processing your request.",
        "type": "api_error",
        "param": None,
        "code": "internal_error",
    }
    assert b"Traceback" not in raw and b"secret detail" not in raw and b"KeyError" not in raw
    assert INTERNAL_ERRORS_METRIC in emitted(capsys.readouterr().out)
    assert store.objects == {}


def test_the_metrics_of_a_stream_are_flushed_when_it_ends(streaming, store, lambda_context, metrics_on, capsys) -> None:
    answer = generation(lambda_context, partial_images=1)
    assert isinstance(answer, StreamingResponse)
    at_return = emitted(capsys.readouterr().out)
    assert "GenerationRequests" in at_return and "BytesStored" not in at_return
    list(answer.body)
    assert "BytesStored" in emitted(capsys.readouterr().out)


def test_a_stream_left_early_closes_the_providers_stream(streaming, store, lambda_context, monkeypatch) -> None:
    provider = ScriptedProvider()  # the local provider's own partials and image
    use_provider(monkeypatch, provider)
    answer = generation(lambda_context, partial_images=3)
    assert isinstance(answer, StreamingResponse)
    body = iter(answer.body)
    assert next(body).startswith(b"event: image_generation.partial_image\n")
    assert not provider.closed
    body.close()  # type: ignore[attr-defined]  # what the runtime does when the client goes
    assert provider.closed and store.objects == {}


def test_a_stream_has_the_lambdas_time_not_api_gateways_29_seconds(streaming, store, lambda_context, monkeypatch) -> None:
    provider = ScriptedProvider()
    use_provider(monkeypatch, provider)
    lambda_context.remaining_millis = 600_000
    answer = generation(lambda_context, partial_images=1)
    assert isinstance(answer, StreamingResponse)
    list(answer.body)
    margin = get_settings().response_margin_seconds
    assert provider.deadline_seconds is not None
    assert 600 - margin - 5 < provider.deadline_seconds <= 600 - margin


def test_an_answer_replaced_after_the_route_closes_the_stream(streaming, store, lambda_context, monkeypatch, metrics_on, capsys) -> None:
    provider = ScriptedProvider()
    use_provider(monkeypatch, provider)
    original = app.event_stream

    def then_fail(events: Any) -> Any:
        original(events)
        raise RuntimeError("a bug after the stream was stashed")

    monkeypatch.setattr(app, "event_stream", then_fail)
    status, error = error_of(generation(lambda_context, partial_images=2))
    assert (status, error["code"]) == (500, "internal_error")
    assert provider.closed and store.objects == {}
    assert INTERNAL_ERRORS_METRIC in emitted(capsys.readouterr().out)


def test_the_events_arrive_as_the_provider_draws_them(streaming, store, lambda_context, monkeypatch) -> None:
    class SlowPartials(ScriptedProvider):
        def stream(self, plan: Any, deadline: Any) -> Iterator[Any]:
            for item in LocalProvider().stream(plan, deadline):
                time.sleep(0.2)
                yield item

    use_provider(monkeypatch, SlowPartials())
    answer = generation(lambda_context, partial_images=2)
    assert isinstance(answer, StreamingResponse)
    arrivals = []
    for chunk in answer.body:
        arrivals.append((time.monotonic(), chunk.split(b"\n", 1)[0]))
    assert [name for _, name in arrivals] == [b"event: image_generation.partial_image"] * 2 + [b"event: image_generation.completed"]
    # One chunk per event, each as it is drawn (0.2 s apart; generous bounds for a loaded machine).
    gaps = [later - earlier for (earlier, _), (later, _) in zip(arrivals, arrivals[1:], strict=False)]
    assert all(gap >= 0.15 for gap in gaps), gaps


def test_the_json_answer_is_unchanged_under_the_streaming_runtime(streaming, store, lambda_context) -> None:
    answer = app.lambda_handler(load_event("api_generate_b64.json"), lambda_context)
    assert isinstance(answer, dict) and answer["statusCode"] == 200
    body = json.loads(answer["body"])
    assert set(body) >= {"created", "data"} and "b64_json" in body["data"][0]
