"""Input images for /v1/images/edits and /v1/images/variations, recognised by their header (format, size, alpha)
before any provider is called: PNG (through :mod:`imagegen.png`), JPEG, WebP and GIF, in the standard library alone."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from imagegen import png
from imagegen.errors import InvalidRequestError, PayloadTooLargeError

InputFormat = Literal["png", "jpeg", "webp", "gif"]

MAX_SIDE = 16_384
MAX_PIXELS = 100_000_000

_CONTENT_TYPES: Mapping[InputFormat, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
_NAMES: Mapping[InputFormat, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF"}
# JPEG markers 0xC0..0xCF that are not frame headers: DHT, JPG (reserved) and DAC.
_NOT_SOF = (0xC4, 0xC8, 0xCC)
# Formats people send by mistake, named in the error so they know what they sent.
_OTHER_FORMATS = ((b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"))


@dataclass(frozen=True, slots=True)
class Picture:
    """An input image, recognised from its header only (no pixel was decoded)."""

    data: bytes = field(repr=False)
    format: InputFormat
    width: int
    height: int
    has_alpha: bool  # PNG colour type 4/6 or a tRNS chunk; WebP VP8L alpha bit or VP8X alpha flag; GIF transparent index

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.format]


def _invalid(param: str, problem: str, code: str = "invalid_image") -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {problem}.", param=param, code=code)


def inspect(data: bytes, *, param: str, max_bytes: int | None = None) -> Picture:
    """Format, size and alpha of an input image from its header; a 400 naming ``param`` for anything else (an unknown
    format, a truncated or corrupt header, a zero or absurd size), a 413 when it is larger than ``max_bytes``."""
    if max_bytes is not None and len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"Invalid '{param}': the file is {len(data)} bytes; at most {max_bytes} bytes are allowed.", param=param, code="image_too_large"
        )
    if data.startswith(png.SIGNATURE):
        header = png.read_header(data, param=param)
        # The chunks are walked to the image data even when the colour type decides: a cut-short header is a 400.
        has_trns = png.has_transparency_chunk(data, param=param)
        picture = Picture(data, "png", header.width, header.height, header.has_alpha_channel or has_trns)
    elif data.startswith(b"\xff\xd8"):
        width, height = _jpeg_size(data, param)
        picture = Picture(data, "jpeg", width, height, False)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        width, height, alpha = _webp_header(data, param)
        picture = Picture(data, "webp", width, height, alpha)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        width, height, alpha = _gif_header(data, param)
        picture = Picture(data, "gif", width, height, alpha)
    else:
        raise _invalid(param, f"not a PNG, JPEG, WebP or GIF image ({_what_else(data)})")
    _check_size(picture.width, picture.height, param, _NAMES[picture.format])
    return picture


def _what_else(data: bytes) -> str:
    if not data:
        return "the file is empty"
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return f"it is {name}"
    if data[4:8] == b"ftyp":
        return "it is an ISO media file such as HEIC or AVIF"
    if data.lstrip()[:5].lower() in (b"<?xml", b"<svg ", b"<svg>"):
        return "it is SVG or XML text"
    return "its first bytes match no image format"


def _check_size(width: int, height: int, param: str, kind: str) -> None:
    if width <= 0 or height <= 0:
        raise _invalid(param, f"the {kind} image is {width}x{height} pixels; both sides must be at least 1")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise _invalid(
            param, f"the {kind} image is {width}x{height} pixels; sides up to {MAX_SIDE} and up to {MAX_PIXELS:,} pixels are accepted"
        )


def _jpeg_size(data: bytes, param: str) -> tuple[int, int]:
    """Walk the marker segments after SOI to the first frame header (SOF0..SOF15)."""
    position = 2
    while True:
        if position + 2 > len(data):
            raise _invalid(param, "truncated JPEG header (no frame header before the end of the file)")
        if data[position] != 0xFF:
            raise _invalid(param, "corrupt JPEG header (a segment does not start with a marker)")
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before the marker
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM and RSTn stand alone, without a length
            position += 2
            continue
        if marker in (0xD9, 0xDA):
            raise _invalid(param, "corrupt JPEG header (the image data starts before any frame header)")
        if marker in (0x00, 0xD8):
            raise _invalid(param, f"corrupt JPEG header (unexpected marker 0xFF{marker:02X})")
        if position + 4 > len(data):
            raise _invalid(param, "truncated JPEG header")
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2:
            raise _invalid(param, "corrupt JPEG header (a segment length is below 2)")
        if 0xC0 <= marker <= 0xCF and marker not in _NOT_SOF:
            if length < 8 or position + 9 > len(data):
                raise _invalid(param, "truncated JPEG header (the frame header is cut short)")
            height, width = struct.unpack_from(">HH", data, position + 5)
            return width, height
        position += 2 + length


def _webp_header(data: bytes, param: str) -> tuple[int, int, bool]:
    """The first chunk after ``RIFF....WEBP``: VP8 (lossy), VP8L (lossless) or VP8X (extended)."""
    if len(data) < 20:
        raise _invalid(param, "truncated WebP header")
    kind, size = struct.unpack_from("<4sI", data, 12)
    payload = data[20 : 20 + size]
    if kind == b"VP8 ":
        if len(payload) < 10:
            raise _invalid(param, "truncated WebP header (the VP8 frame header is cut short)")
        if payload[0] & 1 or payload[3:6] != b"\x9d\x01\x2a":
            raise _invalid(param, "corrupt WebP header (the VP8 data does not start with a key frame)")
        width, height = struct.unpack_from("<HH", payload, 6)
        return width & 0x3FFF, height & 0x3FFF, False
    if kind == b"VP8L":
        if len(payload) < 5:
            raise _invalid(param, "truncated WebP header (the VP8L header is cut short)")
        (bits,) = struct.unpack_from("<I", payload, 1)
        if payload[0] != 0x2F or bits >> 29:
            raise _invalid(param, "corrupt WebP header (bad VP8L signature or version)")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    if kind == b"VP8X":
        if len(payload) < 10:
            raise _invalid(param, "truncated WebP header (the VP8X header is cut short)")
        width = int.from_bytes(payload[4:7], "little") + 1
        height = int.from_bytes(payload[7:10], "little") + 1
        return width, height, bool(payload[0] & 0x10)
    raise _invalid(param, f"corrupt WebP header (its first chunk is {kind!r}, not VP8, VP8L or VP8X)")


def _gif_header(data: bytes, param: str) -> tuple[int, int, bool]:
    """The logical screen, and whether a graphic control extension before the first image sets a transparent index."""
    if len(data) < 13:
        raise _invalid(param, "truncated GIF header")
    width, height, packed = struct.unpack_from("<HHB", data, 6)
    position = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    transparent = False
    while True:
        if position >= len(data):
            raise _invalid(param, "truncated GIF (it ends before its first image)")
        introducer = data[position]
        if introducer in (0x2C, 0x3B):  # an image descriptor or the trailer: the header is over
            return width, height, transparent
        if introducer != 0x21 or position + 2 > len(data):
            raise _invalid(param, f"corrupt GIF (unexpected block 0x{introducer:02X} before the first image)")
        label, position = data[position + 1], position + 2
        if label == 0xF9 and position + 2 <= len(data):
            transparent = transparent or bool(data[position + 1] & 1)
        while position < len(data) and data[position]:  # sub-blocks up to the zero-length terminator
            position += data[position] + 1
        position += 1
