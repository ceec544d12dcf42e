"""An offline provider: a deterministic placeholder PNG drawn from the prompt (same prompt, size and index give
the same bytes), and for edits and variations a deterministic transform of the first input image
(:func:`transform_for_local`: the masked area changed, the input's hash in a tEXt chunk), so the whole path works
with no account and no network, and a test can see which input arrived. Streamed, it sends the first image's
partials coarse to fine (:func:`partial_images`) before the final images."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from imagegen.deadline import Deadline
from imagegen.planning import GenerationPlan
from imagegen.png import alpha_plane, decode_png, encode_flat_rgb, encode_png_rgba, encode_scanlines, read_header
from imagegen.providers.base import ProviderImage, ProviderPartial, ProviderResult

if TYPE_CHECKING:
    from imagegen.pictures import Picture

_GRID = 8  # an 8x8, left-right mirrored pattern, like an identicon
INPUT_SHA256_KEY = "imagegen:input-sha256"


def draw(prompt: str, width: int, height: int, seed: int = 0) -> bytes:
    """The placeholder image for ``prompt`` as PNG bytes."""
    digest = hashlib.sha256(f"{seed}\x00{width}x{height}\x00{prompt}".encode()).digest()
    background = bytes(128 + value // 2 for value in digest[0:3])
    foreground = bytes(value // 2 for value in digest[3:6])
    bits = int.from_bytes(digest[6:14], "big")
    half = _GRID // 2
    column_edges = [width * column // _GRID for column in range(_GRID + 1)]
    rows = []
    for grid_row in range(_GRID):
        cells = [(bits >> (grid_row * half + min(column, _GRID - 1 - column))) & 1 for column in range(_GRID)]
        pixels = b"".join(
            (foreground if cell else background) * (column_edges[column + 1] - column_edges[column]) for column, cell in enumerate(cells)
        )
        line = b"\x00" + pixels
        rows.append(line * (height * (grid_row + 1) // _GRID - height * grid_row // _GRID))
    return encode_scanlines(width, height, 2, b"".join(rows))


def transform_for_local(picture: Picture, *, prompt: str, mask: Picture | None) -> bytes:
    """The offline provider's edit: a deterministic PNG of the input's width and height, carrying a tEXt chunk
    ``imagegen:input-sha256`` (the SHA-256 of the input's bytes) so a test sees which input arrived.

    A PNG input is decoded and its RGB inverted where the mask's alpha is 0 (everywhere without a mask); every other
    pixel, and the alpha of all, stays identical. JPEG, WebP and GIF cannot be decoded with the standard library, so
    they become a flat image whose colour is drawn from SHA-256(input bytes + prompt). The mask is the one
    :func:`imagegen.planning.plan_edit` accepted: a PNG with alpha, of the image's width and height."""
    text = {INPUT_SHA256_KEY: hashlib.sha256(picture.data).hexdigest()}
    if picture.format != "png":
        colour = hashlib.sha256(picture.data + prompt.encode()).digest()[:3]
        return encode_flat_rgb(picture.width, picture.height, colour, text=text)
    width, height, rgba = decode_png(picture.data, param="image")
    pixels = width * height
    if mask is None:
        flips = b"\xff\xff\xff\x00" * pixels
    else:
        _, _, alpha = alpha_plane(mask.data, param="mask")
        edited = alpha.translate(b"\xff" + bytes(255))
        selection = bytearray(4 * pixels)
        for channel in range(3):
            selection[channel::4] = edited
        flips = bytes(selection)
    size = 4 * pixels
    inverted = (int.from_bytes(rgba, "big") ^ int.from_bytes(flips, "big")).to_bytes(size, "big")
    return encode_png_rgba(width, height, inverted, text=text)


def mosaic(png: bytes, block_width: int, block_height: int) -> bytes:
    """``png`` at a coarser resolution scaled back up, as an RGBA PNG of its size: each block of ``block_width`` x
    ``block_height`` pixels (smaller at the right and bottom edges) takes the colour of its centre pixel."""
    width, height, rgba = decode_png(png)
    stride = 4 * width
    rows = []
    for top in range(0, height, block_height):
        tall = min(block_height, height - top)
        row = rgba[(top + tall // 2) * stride : (top + tall // 2 + 1) * stride]
        spans = ((left, min(block_width, width - left)) for left in range(0, width, block_width))
        line = b"".join(row[4 * (left + wide // 2) : 4 * (left + wide // 2) + 4] * wide for left, wide in spans)
        rows.append(line * tall)
    return encode_png_rgba(width, height, b"".join(rows))


def partial_images(final: bytes, count: int, *, detail: tuple[int, int]) -> Iterator[bytes]:
    """``count`` partials of ``final``, coarse to fine, at 1/2**count ... 1/4, 1/2 of its ``detail`` (cells per side:
    the placeholder's grid, or an edit's pixels), each scaled up to the final's size."""
    width, height = detail
    header = read_header(final, param="image")
    for index in range(count):
        fraction = 2.0 ** (index - count)
        blocks_x, blocks_y = max(1, math.ceil(width * fraction)), max(1, math.ceil(height * fraction))
        yield mosaic(final, math.ceil(header.width / blocks_x), math.ceil(header.height / blocks_y))


class LocalProvider:
    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        deadline.require("draw the images")
        if plan.inputs is not None:
            image = transform_for_local(plan.inputs.images[0], prompt=plan.prompt, mask=plan.inputs.mask)
            return ProviderResult(images=(ProviderImage(image),) * plan.n)
        return ProviderResult(images=tuple(ProviderImage(draw(plan.prompt, plan.width, plan.height, seed)) for seed in range(plan.n)))

    def stream(self, plan: GenerationPlan, deadline: Deadline) -> Iterator[ProviderPartial | ProviderResult]:
        """``plan.partial_images`` partials of the first image, coarse to fine (of the placeholder's 8x8 grid, or of
        an edit's pixels), then the images ``generate`` makes. Deterministic, as they are."""
        result = self.generate(plan, deadline)
        final = result.images[0].data
        header = read_header(final, param="image")
        detail = (_GRID, _GRID) if plan.inputs is None else (header.width, header.height)
        for index, partial in enumerate(partial_images(final, plan.partial_images, detail=detail)):
            deadline.require("draw the partial images")
            yield ProviderPartial(partial, index)
        yield result
