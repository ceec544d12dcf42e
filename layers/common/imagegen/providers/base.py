"""The one small interface every image provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from imagegen.deadline import Deadline
from imagegen.planning import GenerationPlan


@dataclass(frozen=True, slots=True)
class ProviderImage:
    data: bytes
    revised_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderResult:
    images: tuple[ProviderImage, ...]
    usage: dict[str, Any] | None = None


class ImageProvider(Protocol):
    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        """Exactly ``plan.n`` images, or an :class:`imagegen.errors.ImageGenError`."""
        ...
