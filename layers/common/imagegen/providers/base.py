"""The small interfaces image providers implement: every provider generates, and one that can stream also yields
its partial images as they come."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from imagegen.deadline import Deadline
from imagegen.planning import GenerationPlan


@dataclass(frozen=True, slots=True)
class ProviderImage:
    data: bytes
    revised_prompt: str | None = None
    # A stream reports usage per completed image; None when only the request's total is known (ProviderResult.usage).
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ProviderResult:
    images: tuple[ProviderImage, ...]
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ProviderPartial:
    """A partial image of a stream: its bytes (in the plan's output format) and its ``partial_image_index``."""

    data: bytes
    index: int


class ImageProvider(Protocol):
    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        """Exactly ``plan.n`` images, or an :class:`imagegen.errors.ImageGenError`."""
        ...


@runtime_checkable
class StreamingProvider(Protocol):
    def stream(self, plan: GenerationPlan, deadline: Deadline) -> Iterator[ProviderPartial | ProviderResult]:
        """At most ``plan.partial_images`` partials as they come, then one result of exactly ``plan.n`` images; or an
        :class:`imagegen.errors.ImageGenError`, raised at the point of the stream where it happened. The deadline
        bounds the whole stream."""
        ...
