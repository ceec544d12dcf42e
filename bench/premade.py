"""A provider that answers pre-made bytes, so benchmarks time this project's code and S3, not image drawing."""

from __future__ import annotations

import random

from imagegen.deadline import Deadline
from imagegen.planning import GenerationPlan
from imagegen.png import encode_scanlines
from imagegen.providers.base import ProviderImage, ProviderResult


def noise_png(target_bytes: int, seed: int = 7) -> bytes:
    """A valid, incompressible RGB PNG of about ``target_bytes`` (a photo-like payload; zlib cannot shrink noise)."""
    side = max(1, int((target_bytes / 3) ** 0.5))
    rng = random.Random(seed)
    scanlines = b"".join(b"\x00" + rng.randbytes(3 * side) for _ in range(side))
    return encode_scanlines(side, side, 2, scanlines)


class PremadeProvider:
    """Answers ``plan.n`` copies of ``data`` (which may be swapped between requests) and counts its calls."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls = 0

    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        self.calls += 1
        return ProviderResult(images=tuple(ProviderImage(self.data) for _ in range(plan.n)))
