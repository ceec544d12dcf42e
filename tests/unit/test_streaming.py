"""Streaming's pure parts: the events against the installed openai SDK's own models and stream reader, the SSE
encoding and parser (the SSE spec's line and field rules), planning's stream rules, the local provider's partials,
and the service's stream with in-memory fakes. The API's streams are in test_api_streaming.py."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)
from PIL import Image as PILImage

from imagegen.deadline import Deadline
from imagegen.errors import ContentPolicyError, InvalidRequestError, ProviderError, ProviderTimeoutError
from imagegen.options import ImageGenerationRequest
from imagegen.planning import plan
from imagegen.providers.base import ProviderImage, ProviderPartial, ProviderResult
from imagegen.providers.local import LocalProvider, draw, mosaic
from imagegen.providers.openai import OpenAIProvider
from imagegen.registry import build_registry
from imagegen.service import ImageService
from imagegen.settings import Settings
from imagegen.specs import GifRule, catalog
from imagegen.streaming import (
    CompletedEvent,
    ErrorEvent,
    EventUsage,
    PartialImageEvent,
    StreamEvent,
    iter_sse,
    split_lines,
    sse,
)
from tests.fakes.memory_store import InMemoryStore as _InMemoryStore

PNG = draw("a fox", 16, 16)
B64 = base64.b64encode(PNG).decode()
SETTINGS: dict[str, Any] = {
    "background": "auto",
    "output_format": "png",
    "quality": "high",
    "size": "1024x1024",
    "created_at": 1_700_000_000,
}
USAGE = EventUsage.of(
    {"input_tokens": 10, "input_tokens_details": {"image_tokens": 2, "text_tokens": 8}, "output_tokens": 90, "total_tokens": 100}
)
NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)


def sent(event: StreamEvent) -> dict[str, Any]:
    """The JSON of ``event`` as :func:`sse` sends it."""
    head, data, _ = sse(event).split(b"\n", 2)
    return dict(json.loads(data.removeprefix(b"data: ")))


def partial(kind: str = "image_generation", index: int = 0) -> PartialImageEvent:
    return PartialImageEvent.model_validate({"type": f"{kind}.partial_image", "b64_json": B64, "partial_image_index": index, **SETTINGS})


def completed(kind: str = "image_generation", **extra: Any) -> CompletedEvent:
    return CompletedEvent.model_validate({"type": f"{kind}.completed", "b64_json": B64, "usage": USAGE, **SETTINGS, **extra})


# --- the events, checked by the SDK ---


@pytest.mark.parametrize(
    ("ours", "sdk"),
    [
        (PartialImageEvent, ImageGenPartialImageEvent),
        (PartialImageEvent, ImageEditPartialImageEvent),
        (CompletedEvent, ImageGenCompletedEvent),
        (CompletedEvent, ImageEditCompletedEvent),
    ],
)
def test_the_events_have_exactly_the_sdks_fields_and_our_url(ours: type, sdk: type) -> None:
    assert set(ours.model_fields) - {"url"} == set(sdk.model_fields)
    for name, field in sdk.model_fields.items():
        assert ours.model_fields[name].is_required() == field.is_required(), name


def test_each_event_validates_with_the_sdks_own_models() -> None:
    for kind, partial_model, completed_model in (
        ("image_generation", ImageGenPartialImageEvent, ImageGenCompletedEvent),
        ("image_edit", ImageEditPartialImageEvent, ImageEditCompletedEvent),
    ):
        parsed = partial_model.model_validate(sent(partial(kind, 2)))
        assert (parsed.type, parsed.partial_image_index, parsed.b64_json) == (f"{kind}.partial_image", 2, B64)
        done = completed(kind, url="https://bucket.example/0.png", safety_identifier="user-hash")
        data = sent(done)
        assert data["url"] == "https://bucket.example/0.png"
        parsed_done = completed_model.model_validate(data)
        assert parsed_done.usage.input_tokens_details.image_tokens == 2 and parsed_done.safety_identifier == "user-hash"
    # Optional fields are omitted, not null, as OpenAI sends them.
    assert "safety_identifier" not in sent(completed())


def test_unknown_usage_is_zeros_the_sdk_accepts() -> None:
    usage = EventUsage.of(None)
    assert usage.model_dump() == {
        "input_tokens": 0,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
        "output_tokens": 0,
        "total_tokens": 0,
    }
    partly = EventUsage.of({"input_tokens": 3, "output_tokens": True, "total_tokens": "9"})
    assert (partly.input_tokens, partly.output_tokens, partly.total_tokens) == (3, 0, 0)
    assert ImageGenCompletedEvent.model_validate({**completed().model_dump(), "usage": usage.model_dump()}).usage.total_tokens == 0


def sdk_client(body: bytes) -> openai.OpenAI:
    """The SDK reading ``body`` as a server's answer, validating every event strictly with its own models."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://sdk.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        _strict_response_validation=True,
    )


def test_the_sdk_reads_our_stream_of_a_generation() -> None:
    events: list[StreamEvent] = [partial(index=0), partial(index=1), completed(url="https://bucket.example/0.png")]
    client = sdk_client(b"".join(sse(event) for event in events))
    received = list(client.images.generate(prompt="a fox", model="gpt-image-1.5", stream=True, partial_images=2))
    assert [type(event) for event in received] == [ImageGenPartialImageEvent, ImageGenPartialImageEvent, ImageGenCompletedEvent]
    assert [event.partial_image_index for event in received[:2]] == [0, 1]  # type: ignore[union-attr]
    assert base64.b64decode(received[2].b64_json) == PNG


def test_the_sdk_reads_our_stream_of_an_edit() -> None:
    client = sdk_client(sse(partial("image_edit")) + sse(completed("image_edit")))
    received = list(client.images.edit(image=("a.png", PNG, "image/png"), prompt="p", stream=True, partial_images=1))
    assert [event.type for event in received] == ["image_edit.partial_image", "image_edit.completed"]


def test_the_sdk_raises_our_error_event_as_an_api_error() -> None:
    error = ErrorEvent.of(ProviderTimeoutError("No time left to draw the images before the request deadline."))
    assert sent(error) == {
        "type": "error",
        "error": {
            "message": "No time left to draw the images before the request deadline.",
            "type": "api_error",
            "param": None,
            "code": "provider_timeout",
        },
    }
    stream = sdk_client(sse(partial()) + sse(error)).images.generate(prompt="a fox", stream=True)
    assert next(stream).type == "image_generation.partial_image"
    with pytest.raises(openai.APIError) as caught:
        next(stream)
    assert caught.value.message == "No time left to draw the images before the request deadline."
    assert caught.value.code == "provider_timeout"


# --- SSE ---


def test_sse_is_one_event_line_and_one_data_line() -> None:
    encoded = sse(partial())
    head, data, end = encoded.split(b"\n", 2)
    assert head == b"event: image_generation.partial_image" and data.startswith(b"data: {") and end == b"\n"
    assert list(iter_sse(split_lines([encoded]))) == [("image_generation.partial_image", partial().model_dump_json(exclude_none=True))]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_sse_round_trips_through_any_chunking(size: int) -> None:
    events: list[StreamEvent] = [partial(index=0), partial(index=1), completed(), ErrorEvent.of(ProviderError("x"))]
    body = b"".join(sse(event) for event in events)
    chunks = [body[start : start + size] for start in range(0, len(body), size)]
    parsed = list(iter_sse(split_lines(chunks)))
    assert [kind for kind, _ in parsed] == [event.type for event in events]
    assert [json.loads(data) for _, data in parsed] == [sent(event) for event in events]


def test_the_parser_follows_the_sse_spec() -> None:
    body = (
        b"\xef\xbb\xbf: a comment, then a data line with no space after the colon\r\n"
        b"data:one\r\n"
        b"data: two\r\n"
        b"id: 7\r\n"
        b"retry: 100\r\n"
        b"\r\n"
        b"event: only a type, no data: not dispatched\n"
        b"\n"
        b"event: second\rdata\rdata:  spaced\r\r"
        b'data: {"type": "image_generation.completed"}\n\n'
        b"data: pending at the end is discarded"
    )
    assert list(iter_sse(split_lines([body[i : i + 5] for i in range(0, len(body), 5)]))) == [
        (None, "one\ntwo"),
        ("second", "\n spaced"),
        (None, '{"type": "image_generation.completed"}'),
    ]


def test_split_lines_keeps_a_crlf_split_across_chunks_as_one_line_end() -> None:
    assert list(split_lines([b"a\r", b"\nb\r", b"c\n\r"])) == [b"a", b"b", b"c", b""]


# --- planning ---

ANIMATED = catalog()["gpt-image-2.5-sunburst"].model_copy(
    update={"output_formats": ("png", "jpeg", "webp", "gif", "svg"), "gif": GifRule()}
)


@pytest.mark.parametrize("spec", [spec for spec in catalog().specs if spec.generations], ids=lambda spec: spec.id)
def test_every_model_plans_a_stream_with_its_partial_images(spec) -> None:
    planned = plan(spec, ImageGenerationRequest(prompt="a fox", stream=True, partial_images=3))
    assert (planned.stream, planned.partial_images) == (True, 3)
    assert (
        plan(spec, ImageGenerationRequest(prompt="a fox", stream=True)).partial_images,
        plan(spec, ImageGenerationRequest(prompt="a fox")).stream,
    ) == (0, False)


@pytest.mark.parametrize("stream", [None, False])
def test_partial_images_without_stream_is_a_400_naming_it(stream: bool | None) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        plan(catalog()["local"], ImageGenerationRequest(prompt="a fox", stream=stream, partial_images=1))
    assert caught.value.param == "partial_images" and "need streaming" in caught.value.message


@pytest.mark.parametrize("output_format", ["gif", "svg"])
def test_gif_and_svg_cannot_stream(output_format: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        plan(ANIMATED, ImageGenerationRequest(prompt="a fox", stream=True, output_format=output_format))
    assert caught.value.param == "stream" and f"'{output_format}' cannot be streamed" in caught.value.message
    assert plan(ANIMATED, ImageGenerationRequest(prompt="a fox", output_format=output_format)).output_format == output_format


# --- the local provider ---


def pixels(png: bytes) -> list[tuple[int, ...]]:
    with PILImage.open(io.BytesIO(png)) as image:
        return list(image.convert("RGB").get_flattened_data())


def distance(a: bytes, b: bytes) -> int:
    return sum(sum(abs(x - y) for x, y in zip(p, q, strict=True)) for p, q in zip(pixels(a), pixels(b), strict=True))


def local_stream(**fields: Any) -> list[ProviderPartial | ProviderResult]:
    planned = plan(catalog()["local"], ImageGenerationRequest.model_validate({"prompt": "a fox", "stream": True, **fields}))
    return list(LocalProvider().stream(planned, Deadline.after(10)))


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_the_local_provider_streams_as_many_partials_as_asked_then_its_images(count: int) -> None:
    *partials, result = local_stream(partial_images=count, size="256x256", n=2)
    assert [item.index for item in partials] == list(range(count))  # type: ignore[union-attr]
    assert isinstance(result, ProviderResult) and [image.data for image in result.images] == [
        draw("a fox", 256, 256, seed) for seed in (0, 1)
    ]


def test_the_local_partials_are_coarse_to_fine_and_deterministic() -> None:
    *partials, result = local_stream(partial_images=3, size="512x512")
    assert isinstance(result, ProviderResult)
    final = result.images[0].data
    errors = [distance(item.data, final) for item in partials]  # type: ignore[union-attr]
    assert errors[0] > errors[1] > errors[2] > 0, errors
    # The first is the placeholder at 1/8 of its 8x8 grid: one colour; the next, 2x2 blocks of 256 pixels.
    assert len(set(pixels(partials[0].data))) == 1  # type: ignore[union-attr]
    assert PILImage.open(io.BytesIO(partials[1].data)).size == (512, 512)  # type: ignore[union-attr]
    again = local_stream(partial_images=3, size="512x512")
    assert [getattr(item, "data", None) for item in again[:3]] == [item.data for item in partials]  # type: ignore[union-attr]


def test_mosaic_takes_each_blocks_centre_pixel() -> None:
    image = PILImage.new("RGB", (5, 3))
    image.putdata([(x * 50, y * 100, 0) for y in range(3) for x in range(5)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    blocks = pixels(mosaic(buffer.getvalue(), 2, 2))
    # Blocks x 0-1 | 2-3 | 4 (centres 1, 3, 4), y 0-1 | 2 (centres 1, 2).
    assert blocks[:5] == [(50, 100, 0)] * 2 + [(150, 100, 0)] * 2 + [(200, 100, 0)]
    assert blocks[10:] == [(50, 200, 0)] * 2 + [(150, 200, 0)] * 2 + [(200, 200, 0)]


# --- the service, with in-memory fakes ---


class InMemoryStore(_InMemoryStore):
    def put_all(self, objects, metadata, *, deadline=None) -> None:
        super().put_all(objects, metadata)


class ScriptedProvider:
    """A streaming provider that yields ``items`` (an exception is raised there) and records whether it was closed."""

    def __init__(self, *items: ProviderPartial | ProviderResult | Exception) -> None:
        self.items = items
        self.closed = False

    def generate(self, plan, deadline):
        raise AssertionError("a streaming provider is streamed")

    def stream(self, plan, deadline):
        try:
            for item in self.items:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed = True


class PlainProvider:
    def generate(self, plan, deadline):
        return ProviderResult(
            images=(ProviderImage(PNG), ProviderImage(PNG)), usage={"input_tokens": 5, "output_tokens": 50, "total_tokens": 55}
        )


def service(provider, store=None) -> ImageService:
    return ImageService(
        registry=build_registry(openai_enabled=False, default_model=None),
        provider_for=lambda name: provider,
        store=store if store is not None else InMemoryStore(),
        settings=Settings(IMAGES_BUCKET="bucket", PRESIGN_TTL_SECONDS=900),
        clock=lambda: NOW,
    )


def stream(svc: ImageService, **fields: Any):
    request = ImageGenerationRequest.model_validate({"prompt": "a fox", "stream": True, "size": "256x256", **fields})
    return svc.stream(request, request_id="req-1", deadline=Deadline.after(10))


def test_a_provider_that_does_not_stream_gives_completed_events_only() -> None:
    events = list(stream(service(PlainProvider()), n=2, partial_images=2))
    assert [event.type for event in events] == ["image_generation.completed"] * 2
    # The request's usage on the first, zeros on the others: a stream's usages add up to the request's.
    assert [event.usage.total_tokens for event in events] == [55, 0]  # type: ignore[union-attr]
    assert [event.url for event in events] == [f"https://bucket.example/images/2026/11/25/req-1/{i}.png?ttl=900" for i in (0, 1)]  # type: ignore[union-attr]


def test_an_error_before_the_first_event_raises_and_stores_nothing() -> None:
    store = InMemoryStore()
    with pytest.raises(ContentPolicyError):
        stream(service(ScriptedProvider(ContentPolicyError("refused", param="prompt")), store))
    assert store.objects == {}
    with pytest.raises(InvalidRequestError):
        stream(service(PlainProvider(), store), size="640x480")


def test_an_error_after_the_first_event_is_the_last_event_and_stores_nothing() -> None:
    store = InMemoryStore()
    provider = ScriptedProvider(ProviderPartial(PNG, 0), ProviderError("The image provider failed (HTTP 500); try again later."))
    events = list(stream(service(provider, store), partial_images=2))
    assert [event.type for event in events] == ["image_generation.partial_image", "error"]
    assert isinstance(events[1], ErrorEvent) and events[1].error.code == "provider_error"
    assert store.objects == {}


def test_a_stream_left_early_closes_the_providers_stream() -> None:
    provider = ScriptedProvider(ProviderPartial(PNG, 0), ProviderPartial(PNG, 1), ProviderResult(images=(ProviderImage(PNG),)))
    events = stream(service(provider), partial_images=2)
    assert next(events).type == "image_generation.partial_image"
    events.close()  # type: ignore[attr-defined]
    assert provider.closed


def test_a_stream_without_its_images_is_an_error_event() -> None:
    events = list(stream(service(ScriptedProvider(ProviderPartial(PNG, 0))), partial_images=1))
    assert isinstance(events[-1], ErrorEvent) and events[-1].error.code == "provider_bad_response"


def test_stream_events_report_the_plan_in_the_sdks_literals() -> None:
    (event,) = list(stream(service(LocalProvider()), quality="hd"))
    assert (event.quality, event.background, event.output_format, event.size) == ("high", "auto", "png", "256x256")
    ImageGenCompletedEvent.model_validate(sent(event))


# --- the OpenAI provider's stream reader, on a mock transport ---


def openai_stream(answer: httpx.Response, **fields: Any) -> list[ProviderPartial | ProviderResult]:
    registry = build_registry(openai_enabled=True, default_model=None)
    planned = registry.plan(ImageGenerationRequest.model_validate({"prompt": "a fox", "model": "gpt-image-1.5", "stream": True, **fields}))
    client = httpx.Client(transport=httpx.MockTransport(lambda request: answer))
    provider = OpenAIProvider(client, base_url="http://openai.invalid/v1", api_key=lambda: "sk-test", max_retries=0)
    return list(provider.stream(planned, Deadline.after(10)))


def event_stream(*lines: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content="".join(lines).encode())


def test_a_server_that_answers_json_instead_of_a_stream_is_read_as_a_generation() -> None:
    (result,) = openai_stream(httpx.Response(200, json={"created": 0, "data": [{"b64_json": B64}]}), partial_images=2)
    assert isinstance(result, ProviderResult) and result.images[0].data == PNG


def test_done_ends_the_stream_and_data_only_events_are_read() -> None:
    partial_data = json.dumps({"type": "image_generation.partial_image", "b64_json": B64, "partial_image_index": 0})
    completed_data = json.dumps({"type": "image_generation.completed", "b64_json": B64})
    items = openai_stream(
        event_stream(f"data: {partial_data}\n\n", f"data: {completed_data}\n\n", "data: [DONE]\n\n", "data: {not json\n\n")
    )
    assert [type(item) for item in items] == [ProviderPartial, ProviderResult]


def test_an_error_object_in_the_data_is_mapped_through_the_status_table() -> None:
    error = {
        "message": "Your request was rejected by the safety system.",
        "type": "image_generation_user_error",
        "code": "moderation_blocked",
    }
    with pytest.raises(ContentPolicyError) as caught:
        openai_stream(event_stream(f"data: {json.dumps({'error': error})}\n\n"))
    assert caught.value.code == "moderation_blocked" and "safety system" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        'data: {"type": "image_generation.partial_image", "b64_json": "!!", "partial_image_index": 0}\n\n',
        'data: {"type": "image_generation.partial_image", "b64_json": ""}\n\n',
        "data: [1, 2]\n\n",
        "data: {not json\n\n",
        "",
    ],
)
def test_a_malformed_stream_is_a_bad_response(body: str) -> None:
    with pytest.raises(ProviderError) as caught:
        openai_stream(event_stream(body))
    assert caught.value.code == "provider_bad_response"
