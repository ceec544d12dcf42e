"""Input images recognised by their header: PNG, JPEG, WebP and GIF (format, size, alpha), and the 400s and 413 for
anything else. The image helpers here are shared with the PNG codec's tests."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from imagegen.errors import InvalidRequestError, PayloadTooLargeError
from imagegen.pictures import Picture, inspect

WIDTH, HEIGHT = 37, 21  # not square, not a multiple of 8: a swapped side or an off-by-one in a pass shows


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


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(width: int, height: int, color_type: int, depth: int, scanlines: bytes, *extra: bytes, interlace: int = 0) -> bytes:
    """A PNG around already filtered scanlines (each with its filter byte), written independently of the module."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(extra) + chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b"")


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
