"""A request streamed (:meth:`imagegen.service.ImageService.stream`): the provider's partial images as events as
they come, then, once every image is stored, one completed event per image; a failure after the first event is the
stream's last event. The service's own steps (budgets, inputs, storage, usage) are those of a synchronous run."""

from __future__ import annotations

import base64
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from imagegen.deadline import Deadline
from imagegen.errors import ImageGenError, ProviderError
from imagegen.inputs import EditSources
from imagegen.observability import logger
from imagegen.planning import GenerationPlan
from imagegen.providers import ProviderResult
from imagegen.providers.base import StreamingProvider
from imagegen.routing import MIN_FALLBACK_SECONDS, count_fallback, falls_through, fitting
from imagegen.streaming import CompletedEvent, ErrorEvent, EventQuality, EventUsage, PartialImageEvent, StreamEvent

if TYPE_CHECKING:
    from imagegen.service import ImageService

# A plan's quality as the SDK's stream events name it: DALL-E's and Bedrock's names as OpenAI maps them for GPT image
# models (the catalog: standard -> medium, hd -> high), Bedrock's premium as its hd.
_EVENT_QUALITY: dict[str, EventQuality] = {"standard": "medium", "hd": "high", "premium": "high"}


def streamed(
    service: ImageService, plan: GenerationPlan, *, request_id: str, deadline: Deadline, sources: EditSources | None, caller: str
) -> Iterator[StreamEvent]:
    """``plan``'s events. Everything up to the first event happens in this call, so a failure before it raises (and
    is answered as any error); after it, a failure is the stream's last event (an :class:`ErrorEvent`)."""
    events = _events(service, plan, request_id=request_id, deadline=deadline, sources=sources, caller=caller)
    first = next(events)
    return _then_errors_as_events(first, events)


def _then_errors_as_events(first: StreamEvent, events: Generator[StreamEvent, None, None]) -> Iterator[StreamEvent]:
    yield first
    try:
        yield from events
    except ImageGenError as error:
        logger.warning("the stream failed after its first event", extra={"code": error.code, "status": error.status_code})
        yield ErrorEvent.of(error)


def _events(
    service: ImageService, plan: GenerationPlan, *, request_id: str, deadline: Deadline, sources: EditSources | None, caller: str
) -> Generator[StreamEvent, None, None]:
    now = service.clock()
    plan = fitting(plan, deadline)
    service.log_start(plan)
    with (
        service.charged(plan, caller=caller, record_id=request_id) as charge,
        service.stored_inputs(plan, request_id=request_id, deadline=deadline, now=now, sources=sources) as input_keys,
    ):
        plan, result = yield from _partials(service, plan, deadline)
        with service.paid_for(charge, plan, result):
            generation = service.store_images(plan, result, request_id=request_id, deadline=deadline, now=now, input_keys=input_keys)
    service.settle(charge, generation, result)
    operation = "image_edit" if plan.operation == "edit" else "image_generation"
    settings = _event_settings(plan)
    usages = _image_usages(result)
    for obj, image, usage in zip(generation.objects, generation.images, usages, strict=True):
        yield CompletedEvent(
            type=f"{operation}.completed",
            b64_json=_b64(obj.data),
            created_at=int(service.clock().timestamp()),
            usage=EventUsage.of(usage),
            safety_identifier=plan.safety_identifier,
            url=service.store.presign(image.key, service.settings.presign_ttl_seconds),
            **settings,
        )


def _partials(
    service: ImageService, first: GenerationPlan, deadline: Deadline
) -> Generator[StreamEvent, None, tuple[GenerationPlan, ProviderResult]]:
    """The provider's partial images as events, as they come; returns the plan that served them and its images (a
    provider that does not stream: no partials). A route falls to its next model only before its first partial:
    after it, the stream has shown one model's drawing."""
    candidates = first.candidates
    for index, plan in enumerate(candidates):
        started = False
        try:
            for item in _provider_stream(service, plan, deadline):
                if isinstance(item, ProviderResult):
                    return plan, item
                started = True
                yield item
        except ImageGenError as error:
            following = candidates[index + 1] if index + 1 < len(candidates) else None
            if started or following is None or not falls_through(error) or deadline.remaining() < MIN_FALLBACK_SECONDS:
                raise
            count_fallback(plan, following, error)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _provider_stream(service: ImageService, plan: GenerationPlan, deadline: Deadline) -> Iterator[StreamEvent | ProviderResult]:
    """One model's stream: its partials as events, then its result."""
    operation = "image_edit" if plan.operation == "edit" else "image_generation"
    settings = _event_settings(plan)
    provider = service.provider_for(plan.model.provider)
    with service.measured(plan):
        if not isinstance(provider, StreamingProvider):
            yield provider.generate(plan, deadline)
            return
        items = provider.stream(plan, deadline)
        try:
            for item in items:
                if isinstance(item, ProviderResult):
                    yield item
                    return
                yield PartialImageEvent(
                    type=f"{operation}.partial_image",
                    b64_json=_b64(item.data),
                    created_at=int(service.clock().timestamp()),
                    partial_image_index=item.index,
                    **settings,
                )
        finally:
            if isinstance(items, Generator):
                items.close()  # a stream left early (the client went) closes its upstream connection now
        raise ProviderError("The image provider's stream ended without its images.", code="provider_bad_response")


def _event_settings(plan: GenerationPlan) -> dict[str, str]:
    """What every event of a plan's stream reports of it, in the SDK's literals (planning refuses to stream GIF and
    SVG, so the format is PNG, JPEG or WebP)."""
    quality = plan.quality or "auto"
    return {
        "background": plan.background or "auto",
        "output_format": plan.output_format,
        "quality": _EVENT_QUALITY.get(quality, quality),
        "size": plan.size,
    }


def _image_usages(result: ProviderResult) -> list[dict[str, Any] | None]:
    """Each completed event's usage, so that a stream's usages add up to the request's: each image's own when the
    provider streamed them, else the request's on the first image and none (zeros) on the others."""
    if all(image.usage is not None for image in result.images):
        return [image.usage for image in result.images]
    return [result.usage if index == 0 else None for index in range(len(result.images))]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
