"""The offline provider: deterministic, valid PNG of the requested size, fast enough to be the default; and its edit,
the input's RGB inverted where the mask is transparent, the input's hash in a tEXt chunk."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError
from imagegen.options import ImageEditOptions, ImageGenerationRequest
from imagegen.pictures import inspect
from imagegen.planning import InputPictures, plan_edit
from imagegen.providers.local import INPUT_SHA256_KEY, LocalProvider, draw, transform_for_local
from imagegen.registry import build_registry
from tests.unit.test_pictures import HEIGHT, WIDTH, noise, saved
from tests.unit.test_png import in_hole, openai_mask


def test_same_prompt_size_and_seed_give_the_same_bytes() -> None:
    assert draw("a fox", 256, 256, 0) == draw("a fox", 256, 256, 0)
    assert draw("a fox", 256, 256, 0) != draw("a fox", 256, 256, 1)
    assert draw("a fox", 256, 256, 0) != draw("a dog", 256, 256, 0)


def test_draws_a_decodable_png_of_the_requested_size() -> None:
    for width, height in [(256, 256), (1792, 1024), (1024, 1792), (1536, 1024)]:
        image = Image.open(io.BytesIO(draw("a fox", width, height)))
        image.load()
        assert (image.format, image.size, image.mode) == ("PNG", (width, height), "RGB")


def test_provider_returns_n_distinct_images() -> None:
    plan = build_registry(openai_enabled=False, default_model=None).plan(ImageGenerationRequest(prompt="a fox", n=3, size="256x256"))
    result = LocalProvider().generate(plan, Deadline.after(10))
    assert len(result.images) == 3
    assert len({image.data for image in result.images}) == 3


# --- edits and variations: the offline transform ----------------------------------------------------------------------


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_local_edit_inverts_only_the_masked_area_of_a_png() -> None:
    source = saved(noise("RGBA", 21), "PNG")
    picture, mask = inspect(source, param="image"), inspect(openai_mask(), param="mask")
    result = opened(transform_for_local(picture, prompt="a fox", mask=mask))
    original = opened(source)
    assert (result.format, result.size) == ("PNG", (WIDTH, HEIGHT))
    for y in range(HEIGHT):
        for x in range(WIDTH):
            r, g, b, a = original.getpixel((x, y))
            expected = (255 - r, 255 - g, 255 - b, a) if in_hole(x, y) else (r, g, b, a)
            assert result.getpixel((x, y)) == expected, (x, y)
    assert result.text["imagegen:input-sha256"] == hashlib.sha256(source).hexdigest()


def test_local_edit_without_mask_inverts_everything_and_is_deterministic() -> None:
    source = saved(noise("RGB", 22), "PNG", optimize=True)
    picture = inspect(source, param="image")
    first = transform_for_local(picture, prompt="a fox", mask=None)
    assert first == transform_for_local(picture, prompt="a fox", mask=None)
    result = opened(first).convert("RGB").tobytes()
    assert result == bytes(255 - value for value in opened(source).tobytes())


def test_local_edit_of_formats_it_cannot_decode_is_a_flat_image_from_input_and_prompt() -> None:
    for source in (saved(noise("RGB", 23), "JPEG"), saved(noise("RGBA", 23), "WEBP"), saved(noise("P", 23), "GIF")):
        picture = inspect(source, param="image")
        one = transform_for_local(picture, prompt="a fox", mask=None)
        image = opened(one)
        assert (image.format, image.size) == ("PNG", (WIDTH, HEIGHT))
        assert image.getcolors() == [(WIDTH * HEIGHT, tuple(hashlib.sha256(source + b"a fox").digest()[:3]))]
        assert image.text["imagegen:input-sha256"] == hashlib.sha256(source).hexdigest()
        assert one == transform_for_local(picture, prompt="a fox", mask=None)
        assert opened(transform_for_local(picture, prompt="a dog", mask=None)).getcolors() != image.getcolors()


def test_the_provider_edits_the_first_image_under_the_mask_and_planning_guards_the_mask() -> None:
    spec = build_registry(openai_enabled=False, default_model=None).get("local")
    source = saved(noise("RGB", 25), "PNG")
    image, mask = inspect(source, param="image"), inspect(openai_mask(), param="mask")
    plan = plan_edit(spec, ImageEditOptions.model_validate({"prompt": "a fox", "n": 2}), InputPictures(images=(image,), mask=mask))
    result = LocalProvider().generate(plan, Deadline.after(10))
    assert len(result.images) == 2 and result.images[0].data == transform_for_local(image, prompt="a fox", mask=mask)
    assert opened(result.images[0].data).text[INPUT_SHA256_KEY] == hashlib.sha256(source).hexdigest()
    # The transform trusts the plan for the mask: a mask of another size, or without alpha, never reaches it.
    for other in (openai_mask((8, 8)), saved(noise("RGB", 25), "PNG")):
        with pytest.raises(InvalidRequestError) as caught:
            plan_edit(
                spec, ImageEditOptions.model_validate({"prompt": "x"}), InputPictures(images=(image,), mask=inspect(other, param="mask"))
            )
        assert caught.value.param == "mask"
