"""Input images: header inspection of PNG/JPEG/WebP/GIF, the pure-stdlib PNG codec checked against Pillow, the
Bedrock black-and-white mask, and the offline provider's deterministic edit."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw

from imagegen.errors import InvalidRequestError, PayloadTooLargeError
from imagegen.pictures import (
    Picture,
    alpha_mask_to_black_white,
    check_mask,
    decode_png,
    encode_png_rgb,
    encode_png_rgba,
    inspect,
    transform_for_local,
)

WIDTH, HEIGHT = 37, 21  # not square, not a multiple of 8: a swapped side or an off-by-one in a pass shows
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(mode: str, seed: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    rng = random.Random(seed)
    per_pixel = 2 if mode == "I;16" else len(Image.new(mode, (1, 1)).getbands())
    image = Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * per_pixel))
    if mode == "P":
        image.putpalette(rng.randbytes(768))
    return image


def pillow_rgba(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGBA").tobytes()


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(width: int, height: int, color_type: int, depth: int, scanlines: bytes, *extra: bytes, interlace: int = 0) -> bytes:
    """A PNG around already filtered scanlines (each with its filter byte), written independently of the module."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(extra) + chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b"")


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


def refused(data: bytes, param: str = "image") -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        inspect(data, param=param)
    error = caught.value
    assert (error.status_code, error.param, error.code) == (400, param, "invalid_image")
    assert f"'{param}'" in error.message
    return error


# --- inspect -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "options", "alpha"),
    [
        ("1", {}, False),
        ("L", {}, False),
        ("L", {"transparency": 7}, True),
        ("LA", {}, True),
        ("RGB", {}, False),
        ("RGB", {"transparency": (1, 2, 3)}, True),
        ("RGBA", {}, True),
        ("P", {}, False),
        ("P", {"transparency": 3}, True),
        ("I;16", {}, False),
    ],
)
def test_inspect_png_of_every_colour_type(mode: str, options: dict[str, object], alpha: bool) -> None:
    data = saved(noise(mode, 1), "PNG", **options)
    picture = inspect(data, param="image")
    assert (picture.format, picture.width, picture.height, picture.has_alpha) == ("png", WIDTH, HEIGHT, alpha)
    assert picture.content_type == "image/png"
    assert picture.data is data


def test_inspect_jpeg_baseline_and_progressive() -> None:
    image = noise("RGB", 2)
    for options in ({}, {"progressive": True}):
        data = saved(image, "JPEG", **options)
        assert (inspect(data, param="image").format, inspect(data, param="image").width, inspect(data, param="image").height) == (
            "jpeg",
            WIDTH,
            HEIGHT,
        )
    progressive = saved(image, "JPEG", progressive=True)
    assert b"\xff\xc2" in progressive  # SOF2, so the walk really met a progressive frame header
    grey = inspect(saved(noise("L", 2), "JPEG"), param="image")
    assert (grey.width, grey.height, grey.has_alpha, grey.content_type) == (WIDTH, HEIGHT, False, "image/jpeg")


def test_inspect_jpeg_walks_past_exif_and_tables_before_the_frame() -> None:
    exif = Image.Exif()
    exif[0x010E] = "x" * 3000  # ImageDescription: a long APP1 segment before SOF
    data = saved(noise("RGB", 3), "JPEG", exif=exif.tobytes())
    assert data.index(b"\xff\xe1") < data.index(b"\xff\xc0")
    assert (inspect(data, param="image").width, inspect(data, param="image").height) == (WIDTH, HEIGHT)
    # A DHT (0xC4) segment and fill bytes before the frame: DHT is in the SOF range but is not a frame header.
    fake_sizes = b"\x08\x7f\xff\x7f\xff\x03"
    tables = b"\xff\xff\xff\xc4" + struct.pack(">H", 2 + len(fake_sizes)) + fake_sizes
    walked = inspect(data[:2] + tables + data[2:], param="image")
    assert (walked.width, walked.height) == (WIDTH, HEIGHT)


@pytest.mark.parametrize(
    ("mode", "options", "first_chunk", "alpha"),
    [
        ("RGB", {"quality": 80}, b"VP8 ", False),
        ("RGB", {"lossless": True}, b"VP8L", False),
        ("RGBA", {"lossless": True}, b"VP8L", True),
        ("RGBA", {"quality": 80}, b"VP8X", True),
    ],
)
def test_inspect_webp_lossy_lossless_and_extended(mode: str, options: dict[str, object], first_chunk: bytes, alpha: bool) -> None:
    data = saved(noise(mode, 4), "WEBP", **options)
    assert data[12:16] == first_chunk
    picture = inspect(data, param="image")
    assert (picture.format, picture.width, picture.height, picture.has_alpha, picture.content_type) == (
        "webp",
        WIDTH,
        HEIGHT,
        alpha,
        "image/webp",
    )


def test_inspect_gif_with_and_without_transparency() -> None:
    image = noise("P", 5)
    plain = inspect(saved(image, "GIF"), param="image")
    transparent = inspect(saved(image, "GIF", transparency=0), param="image")
    assert (plain.format, plain.width, plain.height, plain.has_alpha) == ("gif", WIDTH, HEIGHT, False)
    assert (transparent.has_alpha, transparent.content_type) == (True, "image/gif")


def test_picture_repr_leaves_out_the_bytes() -> None:
    picture = inspect(saved(noise("RGB", 6), "PNG"), param="image")
    assert "data" not in repr(picture) and "width=37" in repr(picture)
    assert Picture(b"x", "gif", 1, 1, False).content_type == "image/gif"


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", "empty"),
        (b"hello, this is not an image at all", "match no image format"),
        (saved(noise("RGB", 7), "BMP"), "BMP"),
        (saved(noise("RGB", 7), "TIFF"), "TIFF"),
        (b"\x00\x00\x00\x1cftypheic" + bytes(40), "HEIC"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ],
)
def test_inspect_names_what_it_found_instead_of_an_image(data: bytes, found: str) -> None:
    error = refused(data, param="image[]")
    assert "not a PNG, JPEG, WebP or GIF image" in error.message and found in error.message


def header_length(data: bytes) -> int:
    """Bytes inspect needs: up to the first IDAT (PNG), through SOF (JPEG), the first chunk header (WebP), the first
    image descriptor (GIF)."""
    if data.startswith(b"\x89PNG"):
        return data.index(b"IDAT") + 4
    if data.startswith(b"\xff\xd8"):
        return data.index(b"\xff\xc0") + 9
    if data.startswith(b"RIFF"):
        return 25 if data[12:16] == b"VP8L" else 30
    descriptor = data.index(b"\x21\xf9\x04") + 8  # after the graphic control extension Pillow writes for transparency
    assert data[descriptor] == 0x2C
    return descriptor


@pytest.mark.parametrize(
    "data",
    [
        saved(noise("RGBA", 8), "PNG"),
        saved(noise("RGB", 8), "JPEG", exif=b"Exif\x00\x00" + bytes(40)),
        saved(noise("RGB", 8), "WEBP", lossless=True),
        saved(noise("RGB", 8), "WEBP", quality=70),
        saved(noise("P", 8), "GIF", transparency=1),
    ],
    ids=["png", "jpeg", "webp-lossless", "webp-lossy", "gif"],
)
def test_every_truncated_header_is_a_400(data: bytes) -> None:
    needed = header_length(data)
    for length in range(2, needed):
        refused(data[:length], param="mask")
    assert inspect(data[: needed + 1] if not data.startswith(b"RIFF") else data, param="mask").width == WIDTH


def test_truncated_png_says_so() -> None:
    assert "truncated PNG header" in refused(saved(noise("RGB", 9), "PNG")[:20]).message


def test_corrupt_headers_are_a_400() -> None:
    png = bytearray(saved(noise("RGB", 10), "PNG"))
    png[17] ^= 1  # a width byte, under the IHDR checksum
    assert "corrupt PNG header" in refused(bytes(png)).message
    bad_depth = png_file(4, 4, 2, 4, b"")  # truecolour at 4 bits is not a PNG
    assert "bit depth 4" in refused(bad_depth).message
    jpeg = saved(noise("RGB", 10), "JPEG")
    refused(jpeg[:2] + b"\x00\x11" + jpeg[2:])  # no marker where a segment should start
    refused(b"\xff\xd8\xff\xda\x00\x08" + bytes(20))  # scan data before any frame header
    webp = bytearray(saved(noise("RGB", 10), "WEBP", lossless=True))
    webp[20] = 0x2E  # not the VP8L signature
    refused(bytes(webp))
    refused(b"RIFF\x20\x00\x00\x00WEBPABCD\x10\x00\x00\x00" + bytes(16))  # an unknown first chunk
    refused(b"GIF89a\x05\x00\x05\x00\x00\x00\x00\x99" + bytes(10))  # an unknown block before the image


def ihdr_only(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", b"")


def jpeg_frame(width: int, height: int) -> bytes:
    return b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + bytes(9)


@pytest.mark.parametrize(
    "data",
    [
        ihdr_only(0, 10),
        ihdr_only(10, 0),
        ihdr_only(16_385, 1),
        ihdr_only(1, 16_385),
        ihdr_only(12_000, 12_000),  # both sides allowed, 144 million pixels are not
        jpeg_frame(640, 0),  # height 0 (defined later by a DNL marker) is not accepted
        jpeg_frame(20_000, 10),
        b"GIF89a\x00\x00\x05\x00\x00\x00\x00\x3b",
        b"RIFF\x20\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x10\x00\x00\x00" + (20_000).to_bytes(3, "little") + (9).to_bytes(3, "little"),
    ],
)
def test_zero_or_absurd_dimensions_are_a_400(data: bytes) -> None:
    message = refused(data).message
    assert "pixels" in message


def test_largest_accepted_dimensions() -> None:
    picture = inspect(ihdr_only(16_384, 6_103), param="image")
    assert (picture.width, picture.height) == (16_384, 6_103)


def test_max_bytes_is_a_413() -> None:
    data = saved(noise("RGB", 11), "PNG")
    assert inspect(data, param="image", max_bytes=len(data)).width == WIDTH
    with pytest.raises(PayloadTooLargeError) as caught:
        inspect(data, param="image", max_bytes=len(data) - 1)
    assert (caught.value.status_code, caught.value.param) == (413, "image")
    assert str(len(data)) in caught.value.message


# --- decode_png ----------------------------------------------------------------------------------------------------


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


# --- encode --------------------------------------------------------------------------------------------------------


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


# --- masks ---------------------------------------------------------------------------------------------------------

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


def test_check_mask() -> None:
    image = inspect(saved(noise("RGB", 20), "JPEG"), param="image")
    check_mask(image, inspect(openai_mask(), param="mask"))
    for mask in (openai_mask((WIDTH, HEIGHT + 1)), saved(noise("RGB", 20), "PNG"), saved(noise("RGBA", 20), "WEBP")):
        with pytest.raises(InvalidRequestError) as caught:
            check_mask(image, inspect(mask, param="mask"))
        assert caught.value.param == "mask"
    with pytest.raises(InvalidRequestError, match="38x21"):
        check_mask(image, inspect(openai_mask((WIDTH + 1, HEIGHT)), param="mask"))


# --- the offline edit ----------------------------------------------------------------------------------------------


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


def test_local_edit_refuses_a_mask_of_another_size() -> None:
    picture = inspect(saved(noise("RGB", 24), "PNG"), param="image")
    with pytest.raises(InvalidRequestError) as caught:
        transform_for_local(picture, prompt="x", mask=inspect(openai_mask((8, 8)), param="mask"))
    assert caught.value.param == "mask"


# --- speed (reported, not asserted) --------------------------------------------------------------------------------


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
