"""OpenAI's mask (alpha 0 = edit) turned into the black-and-white mask Bedrock's INPAINTING takes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagegen.errors import InvalidRequestError
from imagegen.providers.bedrock import alpha_mask_to_black_white
from tests.unit.test_pictures import HEIGHT, WIDTH, noise, saved
from tests.unit.test_png import in_hole, openai_mask


@pytest.mark.parametrize("edit_is_black", [True, False])
def test_alpha_mask_to_black_white(edit_is_black: bool) -> None:
    image = Image.open(io.BytesIO(alpha_mask_to_black_white(openai_mask(), edit_is_black=edit_is_black)))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (WIDTH, HEIGHT))
    assert "transparency" not in image.info
    edit, keep = ((0, 0, 0), (255, 255, 255)) if edit_is_black else ((255, 255, 255), (0, 0, 0))
    for y in range(HEIGHT):
        for x in range(WIDTH):
            assert image.getpixel((x, y)) == (edit if in_hole(x, y) else keep), (x, y)


def test_alpha_mask_from_a_palette_png_with_trns() -> None:
    mask = Image.new("P", (8, 4), 1)
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.putpixel((2, 1), 0)
    image = Image.open(io.BytesIO(alpha_mask_to_black_white(saved(mask, "PNG", transparency=0), edit_is_black=True)))
    assert [(x, y) for y in range(4) for x in range(8) if image.getpixel((x, y)) == (0, 0, 0)] == [(2, 1)]


def test_alpha_mask_must_be_a_png_with_alpha() -> None:
    for data in (saved(noise("RGB", 19), "PNG"), saved(noise("RGB", 19), "JPEG")):
        with pytest.raises(InvalidRequestError) as caught:
            alpha_mask_to_black_white(data, edit_is_black=True)
        assert (caught.value.param, caught.value.code) == ("mask", "invalid_image")
