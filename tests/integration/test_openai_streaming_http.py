"""The OpenAI provider's stream over real HTTP against the fake OpenAI server on loopback: what it asks for
(generations, edits, Azure), partials yielded as they arrive, the completed images as the result, errors before and
within the stream, and the deadline over the whole stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from imagegen.deadline import Deadline
from imagegen.errors import ContentPolicyError, ImageGenError, ProviderError, ProviderTimeoutError, RateLimitError
from imagegen.options import ImageEditOptions, ImageGenerationRequest
from imagegen.pictures import inspect
from imagegen.planning import GenerationPlan, InputPictures, plan_edit
from imagegen.providers.base import ProviderPartial, ProviderResult
from imagegen.providers.openai import OpenAIProvider, azure_endpoint
from imagegen.registry import build_registry
from imagegen.specs import catalog
from tests.fakes.openai_server import STREAM_USAGE, FakeOpenAI, png

pytestmark = pytest.mark.integration

REGISTRY = build_registry(openai_enabled=True, default_model=None, azure_deployments={"gpt-image-1.5": "img"})


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.requests.clear()
    return fake_openai


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


def provider(client: httpx.Client, fake: FakeOpenAI, **options: Any) -> OpenAIProvider:
    return OpenAIProvider(client, base_url=fake.base_url, api_key=lambda: "sk-test", sleep=lambda _: None, **options)


def generation(**fields: Any) -> GenerationPlan:
    fields = {"prompt": "a fox", "model": "gpt-image-1.5", "size": "1024x1024", "stream": True, **fields}
    return REGISTRY.plan(ImageGenerationRequest.model_validate(fields))


def timed(items: Iterator[ProviderPartial | ProviderResult]) -> list[tuple[float, ProviderPartial | ProviderResult]]:
    started = time.monotonic()
    return [(time.monotonic() - started, item) for item in items]


def test_partials_are_yielded_as_they_arrive_then_the_images(client, fake) -> None:
    started = time.monotonic()
    items = timed(provider(client, fake).stream(generation(prompt="slow-partials:0.5", partial_images=3), Deadline.after(20)))
    assert time.monotonic() - started >= 2.0  # four events, each 0.5 s after the one before
    times = [at for at, _ in items]
    partials = [item for _, item in items[:3]]
    assert [item.index for item in partials] == [0, 1, 2]  # type: ignore[union-attr]
    assert [item.data for item in partials] == [png(1024, 1024, 100 + index) for index in range(3)]  # type: ignore[union-attr]
    # Each arrives about when it is sent (0.5, 1.0, 1.5 s), not all at once at the end (2.0 s).
    for index, at in enumerate(times[:3]):
        assert 0.5 * (index + 1) - 0.1 <= at <= 0.5 * (index + 1) + 0.35, times
    result = items[3][1]
    assert isinstance(result, ProviderResult) and [image.data for image in result.images] == [png(1024, 1024, 0)]
    (sent,) = fake.requests
    assert sent["json"] == {
        "model": "gpt-image-1.5",
        "prompt": "slow-partials:0.5",
        "n": 1,
        "size": "1024x1024",
        "output_format": "png",
        "stream": True,
        "partial_images": 3,
    }


def test_several_images_are_one_completed_event_each_with_its_usage(client, fake) -> None:
    *partials, result = provider(client, fake).stream(generation(n=2, partial_images=1), Deadline.after(20))
    assert len(partials) == 1
    assert isinstance(result, ProviderResult)
    assert [image.data for image in result.images] == [png(1024, 1024, 0), png(1024, 1024, 1)]
    assert [image.usage for image in result.images] == [STREAM_USAGE, STREAM_USAGE]
    assert result.usage == {
        "input_tokens": 20,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 20},
        "output_tokens": 200,
        "total_tokens": 220,
    }


def test_zero_partial_images_is_the_final_image_alone(client, fake) -> None:
    (result,) = provider(client, fake).stream(generation(), Deadline.after(20))
    assert isinstance(result, ProviderResult) and len(result.images) == 1
    assert fake.requests[0]["json"]["partial_images"] == 0


def test_an_edit_streams_with_the_sdks_form_fields(client, fake) -> None:
    picture = inspect(png(64, 64, 3), param="image")
    planned = plan_edit(
        catalog()["gpt-image-1.5"],
        ImageEditOptions(prompt="slow-partials:0", stream=True, partial_images=2),
        InputPictures(images=(picture,)),
    )
    *partials, result = provider(client, fake).stream(planned, Deadline.after(20))
    assert [item.index for item in partials] == [0, 1]  # type: ignore[union-attr]
    assert isinstance(result, ProviderResult) and len(result.images) == 1
    (sent,) = fake.requests
    assert sent["path"] == "/v1/images/edits"
    assert (sent["fields"]["stream"], sent["fields"]["partial_images"]) == ("true", "2")
    assert [part["name"] for part in sent["files"]] == ["image"]


def test_azure_streams_from_the_deployment(client, fake) -> None:
    azure = OpenAIProvider(
        client, endpoint=azure_endpoint(fake.origin, "2025-04-01-preview"), api_key=lambda: "azure-key", sleep=lambda _: None
    )
    *partials, result = azure.stream(generation(model="azure/gpt-image-1.5", partial_images=2), Deadline.after(20))
    assert len(partials) == 2 and isinstance(result, ProviderResult)
    (sent,) = fake.requests
    assert sent["path"] == "/openai/deployments/img/images/generations?api-version=2025-04-01-preview"
    assert sent["headers"]["api-key"] == "azure-key" and "model" not in sent["json"]
    assert (sent["json"]["stream"], sent["json"]["partial_images"]) == (True, 2)


@pytest.mark.parametrize(("prompt", "error"), [("fail:429", RateLimitError), ("fail:moderation", ContentPolicyError)])
def test_a_refusal_before_the_stream_is_our_error_at_the_first_item(client, fake, prompt, error) -> None:
    items = provider(client, fake, max_retries=0).stream(generation(prompt=prompt, partial_images=2), Deadline.after(20))
    with pytest.raises(error) as caught:
        next(items)
    if error is RateLimitError:
        assert caught.value.headers["Retry-After"] == "1"


def test_a_failure_before_the_stream_is_retried_like_a_generation(client, fake) -> None:
    *partials, result = provider(client, fake).stream(generation(prompt="flaky:1:stream", partial_images=1), Deadline.after(20))
    assert len(fake.requests) == 2 and len(partials) == 1 and isinstance(result, ProviderResult)


def test_an_error_event_mid_stream_is_our_error_after_the_partial_before_it(client, fake) -> None:
    items = provider(client, fake).stream(generation(prompt="fail:mid-stream", partial_images=2), Deadline.after(20))
    assert isinstance(next(items), ProviderPartial)
    with pytest.raises(ProviderError) as caught:
        next(items)
    assert caught.value.code == "provider_error" and caught.value.status_code == 502
    assert len(fake.requests) == 1  # a stream that has begun is never retried


def test_a_stream_cut_short_is_a_bad_response(client, fake) -> None:
    items = provider(client, fake).stream(generation(prompt="fail:stream-cut", partial_images=2), Deadline.after(20))
    assert isinstance(next(items), ProviderPartial)
    with pytest.raises(ProviderError) as caught:
        next(items)
    assert caught.value.code == "provider_bad_response"


def test_the_deadline_bounds_the_whole_stream(client, fake) -> None:
    """Events every 0.6 s, a deadline at 1.0 s: the read waiting for the second event is cut at the deadline, not
    after a whole read timeout (which counts from the start of each read)."""
    started = time.monotonic()
    items = provider(client, fake).stream(generation(prompt="slow-partials:0.6", partial_images=3), Deadline.after(1.0))
    received: list[ProviderPartial | ProviderResult] = []
    with pytest.raises(ProviderTimeoutError):
        for item in items:
            received.append(item)
    elapsed = time.monotonic() - started
    assert len(received) == 1 and 0.95 <= elapsed < 1.3, elapsed


def test_a_stream_left_early_can_be_closed_and_the_client_serves_the_next(client, fake) -> None:
    items = provider(client, fake).stream(generation(prompt="slow-partials:0.3", partial_images=3), Deadline.after(20))
    assert isinstance(next(items), ProviderPartial)
    items.close()  # type: ignore[attr-defined]
    (result,) = provider(client, fake).stream(generation(), Deadline.after(20))
    assert isinstance(result, ProviderResult)


def test_every_error_is_one_of_ours(client, fake) -> None:
    for prompt in ("fail:500", "fail:401", "fail:mid-stream", "fail:stream-cut"):
        with pytest.raises(ImageGenError):
            list(provider(client, fake, max_retries=0).stream(generation(prompt=prompt, partial_images=1), Deadline.after(20)))
