"""An offline provider: a deterministic placeholder PNG drawn from the prompt (same prompt, size and index give
the same bytes), and for edits and variations a deterministic transform of the first input image
(:func:`imagegen.pictures.transform_for_local`: the masked area changed, the input's hash in a tEXt chunk), so the
whole path works with no account and no network, and a test can see which input arrived."""

from __future__ import annotations

import hashlib
import struct
import zlib

from imagegen.deadline import Deadline
from imagegen.planning import GenerationPlan
from imagegen.providers.base import ProviderImage, ProviderResult

_GRID = 8  # an 8x8, left-right mirrored pattern, like an identicon


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png(width: int, height: int, scanlines: bytes) -> bytes:
    """A truecolour 8-bit PNG from filtered scanlines (each row: filter byte 0 + RGB pixels)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines, 6)) + _chunk(b"IEND", b"")


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
    return encode_png(width, height, b"".join(rows))


class LocalProvider:
    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        deadline.require("draw the images")
        if plan.inputs is not None:
            from imagegen.pictures import transform_for_local

            image = transform_for_local(plan.inputs.images[0], prompt=plan.prompt, mask=plan.inputs.mask)
            return ProviderResult(images=(ProviderImage(image),) * plan.n)
        return ProviderResult(images=tuple(ProviderImage(draw(plan.prompt, plan.width, plan.height, seed)) for seed in range(plan.n)))
