"""The worst-case image sizes a base64 answer is planned with, checked against real encoders: Pillow encodes content
no encoder can compress (uniform random noise; RGBA where the model can draw a transparent background) at each
format's heaviest settings, and every model's bound must hold for it. The local provider is checked against its own
output, for every size it serves."""

from __future__ import annotations

import io
import math
import random
import string
from collections.abc import Callable
from functools import cache

import pytest
from PIL import Image, ImageFile

from imagegen.options import ImageGenerationRequest, OutputFormat
from imagegen.providers.local import draw
from imagegen.registry import build_registry
from imagegen.service import b64_answer_bytes
from imagegen.settings import LAMBDA_SYNC_RESPONSE_LIMIT
from imagegen.specs import IMAGE_OVERHEAD_BYTES, OPAQUE_BYTES_PER_PIXEL, TRANSPARENT_BYTES_PER_PIXEL, ModelSpec, catalog

SIZES = ((64, 64), (256, 256), (320, 192), (1024, 1024))


def noise(width: int, height: int, mode: str, seed: int = 7) -> Image.Image:
    return Image.frombytes(mode, (width, height), random.Random(seed).randbytes(width * height * len(mode)))


def _encoded(image: Image.Image, image_format: str, **options: object) -> int:
    buffer = io.BytesIO()
    previous, ImageFile.MAXBLOCK = ImageFile.MAXBLOCK, 1 << 26  # quality 100 noise outgrows Pillow's default buffer
    try:
        image.save(buffer, format=image_format, **options)
    finally:
        ImageFile.MAXBLOCK = previous
    return len(buffer.getvalue())


# Each format at the settings that make it largest; the heaviest of them is the worst case.
HEAVIEST: dict[OutputFormat, tuple[Callable[[Image.Image], int], ...]] = {
    "png": (lambda image: _encoded(image, "PNG", compress_level=0), lambda image: _encoded(image, "PNG", compress_level=9)),
    "jpeg": (lambda image: _encoded(image.convert("RGB"), "JPEG", quality=100, subsampling=0),),
    "webp": (
        # Least effort is largest: lossless without a search for transforms, lossy at quality 100.
        lambda image: _encoded(image, "WEBP", lossless=True, quality=0, method=0),
        lambda image: _encoded(image, "WEBP", quality=100, method=0),
    ),
}


@cache
def worst_encoded(width: int, height: int, mode: str, image_format: OutputFormat) -> int:
    """The most bytes noise of that size and mode takes in ``image_format`` (cached: several tests ask)."""
    image = noise(width, height, mode)
    return max(encode(image) for encode in HEAVIEST[image_format])


def bound(bytes_per_pixel: float, width: int, height: int) -> int:
    return math.ceil(bytes_per_pixel * width * height) + IMAGE_OVERHEAD_BYTES


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
@pytest.mark.parametrize(("mode", "table"), [("RGB", OPAQUE_BYTES_PER_PIXEL), ("RGBA", TRANSPARENT_BYTES_PER_PIXEL)])
def test_noise_fits_the_format_bound(width: int, height: int, image_format: OutputFormat, mode: str, table) -> None:
    if image_format == "webp" and width * height > 256 * 256:
        pytest.skip("lossless WebP of 1024x1024 noise takes seconds; the bound per pixel is reached at 256x256 already")
    encoded = worst_encoded(width, height, mode, image_format)
    assert encoded <= bound(table[image_format], width, height), (mode, image_format, encoded / (width * height))


def _answers_rgba(spec: ModelSpec) -> bool:
    return "transparent" in spec.backgrounds


@pytest.mark.parametrize("spec", [spec for spec in catalog().specs if spec.provider != "local"], ids=lambda spec: spec.id)
def test_every_models_bound_holds_for_noise_in_each_format_it_answers(spec: ModelSpec) -> None:
    mode = "RGBA" if _answers_rgba(spec) else "RGB"
    for image_format in dict.fromkeys((*spec.output_formats, spec.native_format)):
        encoded = worst_encoded(256, 256, mode, image_format)
        # Per pixel, without the fixed overhead: the bound must hold at any size, not only thanks to the overhead.
        assert encoded / (256 * 256) <= spec.bytes_per_pixel[image_format], (spec.id, image_format)


def test_bounds_are_not_loose_beyond_a_few_percent() -> None:
    """Tight enough to be useful: within 2% of what noise takes at 1024x1024 for PNG and JPEG (a loose bound refuses
    answers that would fit)."""
    for mode, table in (("RGB", OPAQUE_BYTES_PER_PIXEL), ("RGBA", TRANSPARENT_BYTES_PER_PIXEL)):
        png = worst_encoded(1024, 1024, mode, "png") / (1024 * 1024)
        assert png <= table["png"] <= png * 1.02
    jpeg = worst_encoded(1024, 1024, "RGB", "jpeg") / (1024 * 1024)
    assert jpeg <= OPAQUE_BYTES_PER_PIXEL["jpeg"] <= jpeg * 1.05


def _prompts(count: int) -> list[str]:
    rng = random.Random(11)
    return ["", "a fox", *("".join(rng.choices(string.printable, k=rng.randint(1, 200))) for _ in range(count))]


@pytest.mark.parametrize("size", list(catalog()["local"].sizes))
def test_local_output_fits_its_bound_for_every_size(size: str) -> None:
    registry = build_registry(openai_enabled=False, default_model=None)
    plan = registry.plan(ImageGenerationRequest(prompt="x", model="local", size=size))
    largest = max(len(draw(prompt, plan.width, plan.height, seed)) for prompt in _prompts(12) for seed in range(3))
    assert largest <= plan.max_image_bytes


REGISTRY = build_registry(openai_enabled=True, default_model=None, bedrock_enabled=True)


def worst_b64_answer(**fields: object) -> int:
    plan = REGISTRY.plan(ImageGenerationRequest.model_validate({"prompt": "x", "response_format": "b64_json", **fields}))
    return b64_answer_bytes([plan.max_image_bytes] * plan.n)


@pytest.mark.parametrize("model", ["gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "gpt-image-2.5-sunburst"])
def test_one_1024_png_of_a_gpt_image_model_fits_a_synchronous_answer(model: str) -> None:
    assert worst_b64_answer(model=model, size="1024x1024") <= LAMBDA_SYNC_RESPONSE_LIMIT
    assert worst_b64_answer(model=model, size="1024x1024", output_format="jpeg") <= LAMBDA_SYNC_RESPONSE_LIMIT


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "gpt-image-1.5", "size": "1536x1024"},
        {"model": "gpt-image-1.5", "size": "auto"},  # "auto" may pick 1536x1024
        {"model": "gpt-image-1.5", "size": "1024x1024", "n": 2},
        {"model": "gpt-image-2", "size": "2048x1152"},
        {"model": "gpt-image-2.5-sunburst", "size": "1536x1024"},
    ],
)
def test_what_cannot_fit_at_worst(fields: dict[str, object]) -> None:
    assert worst_b64_answer(**fields) > LAMBDA_SYNC_RESPONSE_LIMIT


def test_auto_is_planned_with_the_largest_size_it_may_pick() -> None:
    auto = REGISTRY.plan(ImageGenerationRequest(prompt="x", model="gpt-image-1.5", size="auto"))
    landscape = REGISTRY.plan(ImageGenerationRequest(prompt="x", model="gpt-image-1.5", size="1536x1024"))
    assert auto.max_image_bytes == landscape.max_image_bytes


def test_stability_is_planned_at_its_own_resolution_not_the_size_asked() -> None:
    small = REGISTRY.plan(ImageGenerationRequest(prompt="x", model="stability.sd3-5-large-v1:0", size="1280x720"))
    assert small.max_pixels == 1536 * 1024 > 1280 * 720


def test_a_model_drawing_transparent_backgrounds_cannot_be_given_rgb_bounds() -> None:
    spec = catalog()["gpt-image-1.5"]
    with pytest.raises(ValueError, match="must be RGBA's"):
        ModelSpec.model_validate({**spec.model_dump(), "bytes_per_pixel": OPAQUE_BYTES_PER_PIXEL})
    with pytest.raises(ValueError, match="no worst-case bytes per pixel for \\['webp'\\]"):
        ModelSpec.model_validate({**spec.model_dump(), "bytes_per_pixel": {"png": 4.05, "jpeg": 4.2}})
