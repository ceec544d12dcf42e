"""The offline provider: deterministic, valid PNG of the requested size, fast enough to be the default."""

from __future__ import annotations

import io

from PIL import Image as PILImage

from imagegen.deadline import Deadline
from imagegen.options import ImageGenerationRequest
from imagegen.providers.local import LocalProvider, draw
from imagegen.registry import build_registry


def test_same_prompt_size_and_seed_give_the_same_bytes() -> None:
    assert draw("a fox", 256, 256, 0) == draw("a fox", 256, 256, 0)
    assert draw("a fox", 256, 256, 0) != draw("a fox", 256, 256, 1)
    assert draw("a fox", 256, 256, 0) != draw("a dog", 256, 256, 0)


def test_draws_a_decodable_png_of_the_requested_size() -> None:
    for width, height in [(256, 256), (1792, 1024), (1024, 1792), (1536, 1024)]:
        image = PILImage.open(io.BytesIO(draw("a fox", width, height)))
        image.load()
        assert (image.format, image.size, image.mode) == ("PNG", (width, height), "RGB")


def test_provider_returns_n_distinct_images() -> None:
    plan = build_registry(openai_enabled=False, default_model=None).plan(ImageGenerationRequest(prompt="a fox", n=3, size="256x256"))
    result = LocalProvider().generate(plan, Deadline.after(10))
    assert len(result.images) == 3
    assert len({image.data for image in result.images}) == 3
