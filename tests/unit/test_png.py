"""The pure-stdlib PNG codec checked against Pillow: header and chunks, decoding of every colour type, depth, filter and
Adam7, the encoders (pixels, filtered scanlines, a flat colour, tEXt), and a mask's alpha plane."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw

from imagegen.errors import InvalidRequestError
from imagegen.png import (
    SIGNATURE,
    alpha_plane,
    decode_png,
    encode_flat_rgb,
    encode_png_rgb,
    encode_png_rgba,
    encode_scanlines,
    has_transparency_chunk,
    read_header,
)
from tests.unit.test_pictures import HEIGHT, WIDTH, chunk, noise, png_file, saved

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def pillow_rgba(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGBA").tobytes()


def random_scanlines(rng: random.Random, width: int, height: int, bits_per_pixel: int, filters: list[int]) -> bytes:
    """Rows of random filtered bytes with the given filter types: any bytes are a valid filtered image, so this reaches
    every filter with every neighbour combination."""
    stride = (width * bits_per_pixel + 7) // 8
    return b"".join(bytes([rng.choice(filters)]) + rng.randbytes(stride) for _ in range(height))


def filter_types(data: bytes) -> set[int]:
    """The filter types used in a non-interlaced PNG (for checking that a test reaches what it claims)."""
    _, _, depth, color_type = struct.unpack_from(">IIBB", data, 16)
    width, height = struct.unpack_from(">II", data, 16)
    stride = (width * CHANNELS[color_type] * depth + 7) // 8
    position, idat = 8, b""
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        if data[position + 4 : position + 8] == b"IDAT":
            idat += data[position + 8 : position + 8 + length]
        position += 12 + length
    raw = zlib.decompress(idat)
    return {raw[row * (stride + 1)] for row in range(height)}


# --- header and chunks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "depth", "color_type", "alpha_channel"),
    [
        ("1", 1, 0, False),
        ("L", 8, 0, False),
        ("LA", 8, 4, True),
        ("RGB", 8, 2, False),
        ("RGBA", 8, 6, True),
        ("P", 8, 3, False),
        ("I;16", 16, 0, False),
    ],
)
def test_read_header(mode: str, depth: int, color_type: int, alpha_channel: bool) -> None:
    data = saved(noise(mode, 1), "PNG")
    assert data.startswith(SIGNATURE)
    header = read_header(data, param="image")
    assert (header.width, header.height, header.depth, header.color_type, header.interlace) == (WIDTH, HEIGHT, depth, color_type, 0)
    assert header.has_alpha_channel is alpha_channel
    assert read_header(saved(noise(mode, 1), "PNG", interlace=1) if mode != "I;16" else data, param="image").width == WIDTH


def test_read_header_refuses_a_truncated_or_corrupt_ihdr_naming_the_param() -> None:
    data = saved(noise("RGB", 2), "PNG")
    damaged = bytearray(data)
    damaged[17] ^= 1  # a width byte, under the IHDR checksum
    for broken, problem in ((data[:32], "truncated PNG header"), (bytes(damaged), "corrupt PNG header")):
        with pytest.raises(InvalidRequestError) as caught:
            read_header(broken, param="mask")
        assert (caught.value.param, caught.value.code) == ("mask", "invalid_image") and problem in caught.value.message


def test_has_transparency_chunk() -> None:
    assert has_transparency_chunk(saved(noise("RGB", 3), "PNG", transparency=(1, 2, 3)), param="image")
    assert has_transparency_chunk(saved(noise("P", 3), "PNG", transparency=0), param="image")
    assert not has_transparency_chunk(saved(noise("RGBA", 3), "PNG"), param="image")  # alpha by colour type, no tRNS
    with_text = saved(noise("RGB", 3), "PNG")
    cut = with_text[: with_text.index(b"IDAT") - 6]  # ends inside the chunks before the image data
    with pytest.raises(InvalidRequestError, match="truncated PNG") as caught:
        has_transparency_chunk(cut, param="image[]")
    assert caught.value.param == "image[]"


# --- decode_png -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGB", "RGBA", "P"])
@pytest.mark.parametrize("options", [{}, {"optimize": True}, {"compress_level": 0}, {"compress_level": 1}, {"compress_level": 9}])
def test_decode_equals_pillow_for_pillow_written_noise(mode: str, options: dict[str, object]) -> None:
    data = saved(noise(mode, 12), "PNG", **options)
    assert decode_png(data) == (WIDTH, HEIGHT, pillow_rgba(data))


def test_pillow_written_images_reach_every_filter_type() -> None:
    images = [noise("RGBA", 13, (64, 64)), Image.linear_gradient("L").convert("RGBA"), Image.radial_gradient("L").convert("RGB")]
    reached: set[int] = set()
    for image in images:
        for options in ({}, {"optimize": True}):
            data = saved(image, "PNG", **options)
            reached |= filter_types(data)
            assert decode_png(data) == (image.width, image.height, pillow_rgba(data))
    assert reached == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    ("mode", "options"),
    [("L", {"transparency": 9}), ("RGB", {"transparency": (5, 6, 7)}), ("P", {"transparency": 2}), ("P", {"bits": 4}), ("P", {"bits": 2})],
)
def test_decode_equals_pillow_with_transparency_and_small_palettes(mode: str, options: dict[str, object]) -> None:
    image = noise(mode, 14)
    if mode == "L":
        image.putpixel((3, 4), 9)  # make sure the colour keys occur
    if mode == "RGB":
        image.putpixel((3, 4), (5, 6, 7))
    if "bits" in options:
        image = image.point(lambda value: value % (1 << int(str(options["bits"]))))
    data = saved(image, "PNG", **options)
    _, _, rgba = decode_png(data)
    assert rgba == pillow_rgba(data)
    if "transparency" in options:
        assert 0 in rgba[3::4]


@pytest.mark.parametrize(
    ("color_type", "depth"),
    [(0, 1), (0, 2), (0, 4), (0, 8), (2, 8), (3, 1), (3, 2), (3, 4), (3, 8), (4, 8), (6, 8), (2, 16), (4, 16), (6, 16)],
)
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]], ids=["none", "sub", "up", "average", "paeth", "mixed"])
def test_decode_equals_pillow_for_every_filter_colour_type_and_depth(color_type: int, depth: int, filters: list[int]) -> None:
    rng = random.Random(f"{color_type}/{depth}/{filters}")
    scanlines = random_scanlines(rng, WIDTH, HEIGHT, CHANNELS[color_type] * depth, filters)
    extra = [chunk(b"PLTE", rng.randbytes(3 * (1 << depth))), chunk(b"tRNS", rng.randbytes(5))] if color_type == 3 else []
    data = png_file(WIDTH, HEIGHT, color_type, depth, scanlines, *extra)
    assert decode_png(data) == (WIDTH, HEIGHT, pillow_rgba(data))


def unfiltered_reference(scanlines: bytes, width: int, height: int, bits_per_pixel: int) -> bytes:
    """A plain per-byte unfilter straight from the PNG specification, for cases Pillow reads differently."""
    stride, bpp = (width * bits_per_pixel + 7) // 8, max(1, bits_per_pixel // 8)
    prior, out = bytearray(stride), bytearray()
    for row in range(height):
        kind, line = scanlines[row * (stride + 1)], scanlines[row * (stride + 1) + 1 : (row + 1) * (stride + 1)]
        current = bytearray(stride)
        for i in range(stride):
            a = current[i - bpp] if i >= bpp else 0
            b, c = prior[i], prior[i - bpp] if i >= bpp else 0
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c
            current[i] = (line[i] + (0, a, b, (a + b) // 2, paeth)[kind]) & 255
        out += current
        prior = current
    return bytes(out)


def test_decode_16_bit_grey_and_16_bit_colour_keys_at_full_precision() -> None:
    # Pillow clips 16-bit grey when converting to RGBA and compares colour keys at 8 bits; the module keeps the high
    # byte and compares keys at 16 bits, as the PNG specification says.
    rng = random.Random(15)
    grey = random_scanlines(rng, WIDTH, HEIGHT, 16, [0, 1, 2, 3, 4])
    samples = unfiltered_reference(grey, WIDTH, HEIGHT, 16)
    key = samples[10:12]
    _, _, rgba = decode_png(png_file(WIDTH, HEIGHT, 0, 16, grey, chunk(b"tRNS", key)))
    high = samples[0::2]
    assert rgba[0::4] == rgba[1::4] == rgba[2::4] == high
    assert rgba[3::4] == bytes(0 if samples[2 * i : 2 * i + 2] == key else 255 for i in range(WIDTH * HEIGHT))
    assert rgba[3::4].count(0) >= 1
    near_miss = bytes([key[0], key[1] ^ 1])  # the same high byte, another low byte: not transparent
    _, _, rgba = decode_png(png_file(WIDTH, HEIGHT, 0, 16, grey, chunk(b"tRNS", near_miss)))
    assert rgba[3::4] == bytes(0 if samples[2 * i : 2 * i + 2] == near_miss else 255 for i in range(WIDTH * HEIGHT))

    colour = random_scanlines(rng, WIDTH, HEIGHT, 48, [1, 4])
    samples = unfiltered_reference(colour, WIDTH, HEIGHT, 48)
    key = samples[60:66]
    _, _, rgba = decode_png(png_file(WIDTH, HEIGHT, 2, 16, colour, chunk(b"tRNS", key)))
    pixels = [samples[6 * i : 6 * i + 6] for i in range(WIDTH * HEIGHT)]
    assert rgba[3::4] == bytes(0 if pixel == key else 255 for pixel in pixels)
    assert rgba[0::4] == bytes(pixel[0] for pixel in pixels) and rgba[2::4] == bytes(pixel[4] for pixel in pixels)


def adam7_scanlines(rng: random.Random, width: int, height: int, bits_per_pixel: int) -> bytes:
    parts = []
    for x0, y0, dx, dy in ADAM7:
        pass_width, pass_height = max(0, (width - x0 + dx - 1) // dx), max(0, (height - y0 + dy - 1) // dy)
        if pass_width and pass_height:
            parts.append(random_scanlines(rng, pass_width, pass_height, bits_per_pixel, [0, 1, 2, 3, 4]))
    return b"".join(parts)


@pytest.mark.parametrize(("width", "height"), [(WIDTH, HEIGHT), (1, 1), (3, 2), (5, 9), (8, 8)])
@pytest.mark.parametrize(("color_type", "depth"), [(6, 8), (2, 8), (0, 1), (3, 4), (4, 16)])
def test_decode_adam7_interlaced_equals_pillow(width: int, height: int, color_type: int, depth: int) -> None:
    rng = random.Random(f"adam7/{width}/{height}/{color_type}/{depth}")
    extra = [chunk(b"PLTE", rng.randbytes(48))] if color_type == 3 else []
    scanlines = adam7_scanlines(rng, width, height, CHANNELS[color_type] * depth)
    data = png_file(width, height, color_type, depth, scanlines, *extra, interlace=1)
    assert decode_png(data) == (width, height, pillow_rgba(data))


def decode_refused(data: bytes, **options: int) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        decode_png(data, param="mask", **options)
    assert (caught.value.status_code, caught.value.param) == (400, "mask")
    return caught.value


def test_decode_refuses_broken_pngs() -> None:
    good = saved(noise("RGBA", 16), "PNG")
    idat = good.index(b"IDAT")
    assert "truncated" in decode_refused(good[: idat + 40]).message
    flipped = bytearray(good)
    flipped[idat + 20] ^= 0xFF
    assert "checksum" in decode_refused(bytes(flipped)).message
    rng = random.Random(16)
    short = png_file(8, 8, 6, 8, random_scanlines(rng, 8, 7, 32, [0]))  # one row missing
    assert "truncated PNG image data" in decode_refused(short).message
    unknown_filter = png_file(8, 8, 6, 8, random_scanlines(rng, 8, 8, 32, [5]))
    assert "filter type 5" in decode_refused(unknown_filter).message
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 6, 0, 0, 0))
    not_zlib = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"not zlib at all") + chunk(b"IEND", b"")
    assert "corrupt PNG image data" in decode_refused(not_zlib).message
    assert "not a PNG" in decode_refused(saved(noise("RGB", 16), "JPEG")).message
    no_palette = png_file(4, 4, 3, 8, random_scanlines(rng, 4, 4, 8, [0]))
    assert "PLTE" in decode_refused(no_palette).message


def test_decode_max_pixels() -> None:
    data = saved(noise("RGB", 17), "PNG")
    assert decode_png(data, max_pixels=WIDTH * HEIGHT)[0] == WIDTH
    assert decode_refused(data, max_pixels=WIDTH * HEIGHT - 1).code == "image_too_large"


def test_decode_does_not_inflate_past_the_announced_size() -> None:
    # 1x1 announced, 50 MB of zeros compressed: only the 5 bytes the header allows are ever inflated.
    bomb = zlib.compress(bytes(50_000_000), 9)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)) + chunk(b"IDAT", bomb) + chunk(b"IEND", b"")
    started = time.perf_counter()
    assert decode_png(data) == (1, 1, bytes(4))
    assert time.perf_counter() - started < 0.5


# --- encode -----------------------------------------------------------------------------------------------------------


def test_encode_round_trips_through_pillow_and_decode() -> None:
    rng = random.Random(18)
    rgba, rgb = rng.randbytes(WIDTH * HEIGHT * 4), rng.randbytes(WIDTH * HEIGHT * 3)
    for data, mode, pixels in ((encode_png_rgba(WIDTH, HEIGHT, rgba), "RGBA", rgba), (encode_png_rgb(WIDTH, HEIGHT, rgb), "RGB", rgb)):
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode, image.size, image.tobytes()) == ("PNG", mode, (WIDTH, HEIGHT), pixels)
        assert filter_types(data) == {0}
    assert decode_png(encode_png_rgba(WIDTH, HEIGHT, rgba)) == (WIDTH, HEIGHT, rgba)
    with pytest.raises(ValueError):
        encode_png_rgb(WIDTH, HEIGHT, rgb[:-1])
    with pytest.raises(ValueError):
        encode_png_rgba(0, 0, b"")


def test_encode_scanlines_keeps_every_filter_and_writes_text() -> None:
    rng = random.Random(19)
    scanlines = b"".join(bytes([row % 5]) + rng.randbytes(3 * WIDTH) for row in range(HEIGHT))
    text = {"imagegen:input-sha256": "ab" * 32, "Comment": "caf\u00e9"}
    data = encode_scanlines(WIDTH, HEIGHT, 2, scanlines, text=text)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.mode, image.size, image.text) == ("RGB", (WIDTH, HEIGHT), text)
    assert image.tobytes() == unfiltered_reference(scanlines, WIDTH, HEIGHT, 24)
    assert filter_types(data) == {0, 1, 2, 3, 4}
    # Without text: exactly IHDR, one IDAT of the scanlines at zlib's default level 6, IEND.
    assert encode_scanlines(WIDTH, HEIGHT, 2, scanlines) == png_file(WIDTH, HEIGHT, 2, 8, scanlines)
    with pytest.raises(ValueError):
        encode_scanlines(WIDTH, HEIGHT, 2, scanlines[:-1])


def test_encode_png_rgba_with_text() -> None:
    rgba = random.Random(20).randbytes(WIDTH * HEIGHT * 4)
    image = Image.open(io.BytesIO(encode_png_rgba(WIDTH, HEIGHT, rgba, text={"k": "v"})))
    image.load()
    assert (image.tobytes(), image.text) == (rgba, {"k": "v"})


def test_encode_flat_rgb() -> None:
    data = encode_flat_rgb(WIDTH, HEIGHT, b"\x01\x80\xff", text={"k": "v"})
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.mode, image.size, image.getcolors(), image.text) == (
        "RGB",
        (WIDTH, HEIGHT),
        [(WIDTH * HEIGHT, (1, 128, 255))],
        {"k": "v"},
    )
    assert decode_png(data) == (WIDTH, HEIGHT, b"\x01\x80\xff\xff" * (WIDTH * HEIGHT))
    assert len(encode_flat_rgb(4096, 4096, b"\x00\x00\x00")) < 100_000  # streamed and compressed, not 48 MB
    for width, height, colour in ((0, 1, b"abc"), (1, 1, b"ab")):
        with pytest.raises(ValueError):
            encode_flat_rgb(width, height, colour)


# --- the mask's alpha plane -------------------------------------------------------------------------------------------

HOLE = (5, 3, 20, 12)  # inclusive box painted fully transparent


def openai_mask(size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    mask = Image.new("RGBA", size, (10, 20, 30, 255))
    draw = ImageDraw.Draw(mask)
    draw.rectangle(HOLE, fill=(0, 0, 0, 0))
    draw.point((30, 15), fill=(0, 0, 0, 128))  # half or nearly transparent is not an edit area
    draw.point((33, 2), fill=(0, 0, 0, 1))
    return saved(mask, "PNG")


def in_hole(x: int, y: int) -> bool:
    return HOLE[0] <= x <= HOLE[2] and HOLE[1] <= y <= HOLE[3]


def test_alpha_plane_is_the_masks_alpha() -> None:
    mask = openai_mask()
    width, height, alpha = alpha_plane(mask, param="mask")
    assert (width, height) == (WIDTH, HEIGHT)
    assert alpha == Image.open(io.BytesIO(mask)).getchannel("A").tobytes()
    assert [(i % WIDTH, i // WIDTH) for i, value in enumerate(alpha) if value == 0] == [
        (x, y) for y in range(HEIGHT) for x in range(WIDTH) if in_hole(x, y)
    ]


def test_alpha_plane_of_a_palette_png_with_trns() -> None:
    mask = Image.new("P", (8, 4), 1)
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.putpixel((2, 1), 0)
    assert alpha_plane(saved(mask, "PNG", transparency=0), param="mask") == (8, 4, bytes(255 if i != 10 else 0 for i in range(32)))


@pytest.mark.parametrize(
    ("data", "problem"),
    [(saved(noise("RGB", 19), "JPEG"), "must be a PNG image"), (saved(noise("RGB", 19), "PNG"), "must be a PNG with an alpha channel")],
)
def test_alpha_plane_refuses_what_is_not_a_png_with_alpha(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        alpha_plane(data, param="mask")
    assert (caught.value.param, caught.value.code) == ("mask", "invalid_image") and problem in caught.value.message


# --- speed (reported, not asserted) -----------------------------------------------------------------------------------


def megapixel_pngs() -> Iterator[tuple[str, bytes]]:
    rng = random.Random(25)
    for name, filters in (("none", [0]), ("sub", [1]), ("up", [2]), ("average", [3]), ("paeth", [4])):
        yield f"noise/{name}", png_file(1024, 1024, 6, 8, random_scanlines(rng, 1024, 1024, 32, filters))
    mask = Image.new("RGBA", (1024, 1024), (0, 0, 0, 255))
    ImageDraw.Draw(mask).ellipse((200, 200, 800, 700), fill=(0, 0, 0, 0))
    yield "pillow mask", saved(mask, "PNG")
    yield "pillow gradient", saved(Image.linear_gradient("L").resize((1024, 1024)).convert("RGBA"), "PNG")


def test_report_decode_speed_of_a_1024_rgba(capsys: pytest.CaptureFixture[str]) -> None:
    lines = []
    for name, data in megapixel_pngs():
        started = time.perf_counter()
        width, height, rgba = decode_png(data)
        elapsed = time.perf_counter() - started
        assert rgba == pillow_rgba(data)
        lines.append(f"decode_png 1024x1024 RGBA {name}: {elapsed * 1000:.0f} ms")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
