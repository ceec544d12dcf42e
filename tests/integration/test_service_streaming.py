"""ImageService.stream against the real S3 server (and the fake OpenAI server for a provider that streams over HTTP):
partials as the provider yields them, the completed events only once every image is in S3, their presigned URLs
serving the same bytes, every event valid for the SDK's models, and errors before and after the first event."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types import ImageEditCompletedEvent, ImageEditPartialImageEvent, ImageGenCompletedEvent, ImageGenPartialImageEvent

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError, RateLimitError
from imagegen.inputs import EditSources
from imagegen.options import ImageEditRequest, ImageGenerationRequest
from imagegen.providers.local import draw
from imagegen.service import get_service
from imagegen.streaming import CompletedEvent, ErrorEvent, PartialImageEvent, StreamEvent, sse

pytestmark = pytest.mark.integration

SDK_MODELS = {
    "image_generation.partial_image": ImageGenPartialImageEvent,
    "image_generation.completed": ImageGenCompletedEvent,
    "image_edit.partial_image": ImageEditPartialImageEvent,
    "image_edit.completed": ImageEditCompletedEvent,
}


def sent(event: StreamEvent) -> dict[str, Any]:
    _, data, _ = sse(event).split(b"\n", 2)
    return dict(json.loads(data.removeprefix(b"data: ")))


def keys_of(s3: Any, bucket: str, request_id: str, prefix: str = "images/") -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(obj["Key"] for obj in listed if f"/{request_id}/" in obj["Key"])


def key_of(url: str, bucket: str) -> str:
    return httpx.URL(url).path.split(f"/{bucket}/", 1)[1]


def generate(request_id: str, deadline: float = 20, **fields: Any) -> Iterator[StreamEvent]:
    request = ImageGenerationRequest.model_validate({"prompt": "a lighthouse", "stream": True, "size": "256x256", **fields})
    return get_service().stream(request, request_id=request_id, deadline=Deadline.after(deadline))


def test_completed_events_come_only_once_every_image_is_in_s3(local_s3, s3) -> None:
    request_id = str(uuid.uuid4())
    events = generate(request_id, n=2, partial_images=3)
    seen: list[StreamEvent] = []
    for event in events:
        seen.append(event)
        stored = keys_of(s3, local_s3.bucket, request_id)
        if isinstance(event, PartialImageEvent):
            assert stored == [], "an image was stored before the provider's last partial"
        else:
            assert isinstance(event, CompletedEvent) and event.url is not None
            assert len(stored) == 2 and key_of(event.url, local_s3.bucket) in stored
    assert [event.type for event in seen] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"] * 2
    assert [event.partial_image_index for event in seen[:3]] == [0, 1, 2]  # type: ignore[union-attr]
    for event in seen:
        SDK_MODELS[event.type].model_validate(sent(event))
    for index, event in enumerate(seen[3:]):
        assert isinstance(event, CompletedEvent) and event.url is not None
        image = base64.b64decode(event.b64_json)
        assert image == draw("a lighthouse", 256, 256, index)
        fetched = httpx.get(event.url, timeout=10)
        assert fetched.status_code == 200 and fetched.content == image
        assert key_of(event.url, local_s3.bucket).endswith(f"/{request_id}/{index}.png")


def test_the_local_partials_are_coarse_to_fine_and_the_same_every_time(local_s3) -> None:
    first = [event.b64_json for event in generate(str(uuid.uuid4()), partial_images=3)]
    again = [event.b64_json for event in generate(str(uuid.uuid4()), partial_images=3)]
    assert first == again and len(set(first)) == 4  # three distinct partials, then the final
    sizes = [len(base64.b64decode(data)) for data in first]
    assert sizes[0] < sizes[1] < sizes[2], sizes  # more detail compresses less


def test_an_edit_streams_its_partials_and_stores_its_input(local_s3, s3) -> None:
    request_id = str(uuid.uuid4())
    source = draw("the input", 64, 48)
    request = ImageEditRequest.model_validate(
        {
            "prompt": "invert it",
            "images": [{"image_url": "data:image/png;base64," + base64.b64encode(source).decode()}],
            "stream": True,
            "partial_images": 2,
        }
    )
    events = list(
        get_service().stream(
            request, sources=EditSources.of_edit(request), request_id=request_id, deadline=Deadline.after(20), json_form=True
        )
    )
    assert [event.type for event in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    for event in events:
        SDK_MODELS[event.type].model_validate(sent(event))
    assert keys_of(s3, local_s3.bucket, request_id, prefix="inputs/") != []
    (stored,) = keys_of(s3, local_s3.bucket, request_id)
    completed = events[-1]
    assert isinstance(completed, CompletedEvent)
    assert s3.get_object(Bucket=local_s3.bucket, Key=stored)["Body"].read() == base64.b64decode(completed.b64_json)


def test_an_error_before_the_first_event_raises_and_writes_nothing(openai_env, local_s3, s3) -> None:
    request_id = str(uuid.uuid4())
    with pytest.raises(InvalidRequestError) as caught:
        generate(request_id, size="640x480")
    assert caught.value.param == "size"
    with pytest.raises(RateLimitError):
        generate(request_id, model="gpt-image-1.5", size="1024x1024", prompt="fail:429", partial_images=2)
    assert keys_of(s3, local_s3.bucket, request_id) == []


def test_openai_partials_reach_the_stream_as_openai_sends_them(openai_env, local_s3, s3) -> None:
    request_id = str(uuid.uuid4())
    started = time.monotonic()
    events = generate(request_id, model="gpt-image-1.5", size="1024x1024", prompt="slow-partials:0.5", partial_images=2)
    # The call returns with the first partial (about 0.5 s), well before the stream ends (1.5 s).
    assert time.monotonic() - started < 1.0
    arrivals = [(time.monotonic() - started, event) for event in events]
    assert [event.type for _, event in arrivals] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert arrivals[0][0] < 1.0 <= arrivals[1][0] < 1.4, [at for at, _ in arrivals]
    completed = arrivals[-1][1]
    assert isinstance(completed, CompletedEvent) and completed.usage.total_tokens == 110
    assert len(keys_of(s3, local_s3.bucket, request_id)) == 1


def test_an_error_mid_stream_is_the_last_event_and_nothing_is_stored(openai_env, local_s3, s3) -> None:
    request_id = str(uuid.uuid4())
    events = list(generate(request_id, model="gpt-image-1.5", size="1024x1024", prompt="fail:mid-stream", partial_images=2))
    assert [event.type for event in events] == ["image_generation.partial_image", "error"]
    error = events[-1]
    assert isinstance(error, ErrorEvent) and (error.error.type, error.error.code) == ("api_error", "provider_error")
    assert keys_of(s3, local_s3.bucket, request_id) == []


def test_the_deadline_ends_a_slow_stream_with_an_error_event(openai_env, local_s3, s3) -> None:
    request_id = str(uuid.uuid4())
    events = list(generate(request_id, deadline=0.8, model="gpt-image-1.5", size="1024x1024", prompt="slow-partials:0.5", partial_images=3))
    assert [event.type for event in events] == ["image_generation.partial_image", "error"]
    assert isinstance(events[-1], ErrorEvent) and events[-1].error.code == "provider_timeout"
    assert keys_of(s3, local_s3.bucket, request_id) == []
