"""Input images for /v1/images/edits and /v1/images/variations: recognise them by their header (format, size, alpha)
before any provider is called, and the little pixel work the providers need, in the standard library alone: a PNG
decoder and encoder, OpenAI's alpha mask turned into Bedrock's black-and-white mask, and the offline provider's
deterministic edit."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from imagegen.errors import InvalidRequestError, PayloadTooLargeError

InputFormat = Literal["png", "jpeg", "webp", "gif"]

MAX_SIDE = 16_384
MAX_PIXELS = 100_000_000

_CONTENT_TYPES: Mapping[InputFormat, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
_NAMES: Mapping[InputFormat, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel by PNG colour type, and the bit depths the specification allows for each.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# JPEG markers 0xC0..0xCF that are not frame headers: DHT, JPG (reserved) and DAC.
_NOT_SOF = (0xC4, 0xC8, 0xCC)
# Formats people send by mistake, named in the error so they know what they sent.
_OTHER_FORMATS = ((b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"))
INPUT_SHA256_KEY = "imagegen:input-sha256"


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
    if data.startswith(_PNG_SIGNATURE):
        width, height, _, color_type, _ = _png_header(data, param)
        has_trns = _png_has_trns(data, param)  # walks the chunks to the image data even when the colour type decides
        picture = Picture(data, "png", width, height, color_type in (4, 6) or has_trns)
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


def _png_header(data: bytes, param: str) -> tuple[int, int, int, int, int]:
    """IHDR -> width, height, bit depth, colour type, interlace method."""
    if len(data) < 33:
        raise _invalid(param, "truncated PNG header")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if length != 13 or kind != b"IHDR" or zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise _invalid(param, "corrupt PNG header (the IHDR chunk is missing or damaged)")
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth not in _DEPTHS.get(color_type, ()) or compression != 0 or filtering != 0 or interlace > 1:
        raise _invalid(param, f"corrupt PNG header (colour type {color_type}, bit depth {depth} is not a valid PNG)")
    return width, height, depth, color_type, interlace


def _png_chunks(data: bytes, param: str, *, verify: bool) -> list[tuple[bytes, bytes]]:
    """The chunks after IHDR up to IEND (or, without ``verify``, up to the first IDAT, which ends the header)."""
    chunks: list[tuple[bytes, bytes]] = []
    position = 33
    while True:
        if position + 8 > len(data):
            raise _invalid(param, "truncated PNG (it ends before its image data)" if not verify else "truncated PNG image")
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IDAT" and not verify:
            return chunks
        end = position + 8 + length
        if length > 0x7FFFFFFF or end + 4 > len(data):
            raise _invalid(param, f"truncated PNG (the {kind.decode('latin-1')!r} chunk runs past the end of the file)")
        payload = data[position + 8 : end]
        if verify and zlib.crc32(kind + payload) != struct.unpack_from(">I", data, end)[0]:
            raise _invalid(param, f"corrupt PNG (the {kind.decode('latin-1')!r} chunk fails its checksum)")
        if kind == b"IEND":
            return chunks
        chunks.append((kind, payload))
        position = end + 4


def _png_has_trns(data: bytes, param: str) -> bool:
    return any(kind == b"tRNS" for kind, _ in _png_chunks(data, param, verify=False))


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


# --- PNG decoding ----------------------------------------------------------------------------------------------------


@cache
def _lane_masks(length: int) -> tuple[int, int]:
    """0x7f7f... and 0x8080... of ``length`` bytes, for adding bytes lane by lane inside one big integer."""
    return int.from_bytes(b"\x7f" * length, "big"), int.from_bytes(b"\x80" * length, "big")


def _add_lanes(x: int, y: int, low: int, high: int) -> int:
    # Each byte of x plus the same byte of y, mod 256: the low 7 bits cannot carry out of their byte, and the top bit
    # is the carry into it xor the two top bits.
    return ((x & low) + (y & low)) ^ ((x ^ y) & high)


def _unfilter_up(line: bytes, prior: bytes | bytearray) -> bytes:
    low, high = _lane_masks(len(line))
    return _add_lanes(int.from_bytes(line, "big"), int.from_bytes(prior, "big"), low, high).to_bytes(len(line), "big")


def _unfilter_sub(line: bytes, bpp: int) -> bytes:
    # A running sum of each byte and the byte bpp to its left is a prefix sum along the row: log2(row) doubling steps
    # (each adds the row shifted by 1, 2, 4, ... pixels) instead of one step per byte.
    size = len(line)
    low, high = _lane_masks(size)
    value, shift = int.from_bytes(line, "big"), 8 * bpp
    while shift < 8 * size:
        value = _add_lanes(value, value >> shift, low, high)
        shift *= 2
    return value.to_bytes(size, "big")


def _unfilter_average(line: bytes, prior: bytes | bytearray, bpp: int) -> bytearray:
    out = bytearray(len(line))
    for lane in range(bpp):  # the channels of a pixel do not depend on each other
        a = 0
        out[lane::bpp] = [a := (x + ((a + b) >> 1)) & 255 for x, b in zip(line[lane::bpp], prior[lane::bpp], strict=True)]
    return out


def _unfilter_paeth(line: bytes, prior: bytes | bytearray, bpp: int) -> bytes | bytearray:
    if prior[bpp:] == prior[:-bpp]:
        # A row above of one colour makes the upper-left and upper neighbours equal, so the predictor is the left
        # neighbour (the upper one for the first pixel): Sub once the first pixel has the row above added. Encoders
        # pick Paeth for gradients and flat masks, where this is the common case.
        head = _unfilter_up(line[:bpp], prior[:bpp])
        return _unfilter_sub(head + line[bpp:], bpp)
    out = bytearray(len(line))
    for lane in range(bpp):
        a = c = 0
        values: list[int] = []
        append = values.append
        for x, b in zip(line[lane::bpp], prior[lane::bpp], strict=True):
            pa, pb = b - c, a - c  # |p - a| and |p - b| for p = a + b - c, before their sign is dropped
            pc = pa + pb
            if pa < 0:
                pa = -pa
            if pb < 0:
                pb = -pb
            if pc < 0:
                pc = -pc
            if pa <= pb and pa <= pc:
                a = (x + a) & 255
            elif pb <= pc:
                a = (x + b) & 255
            else:
                a = (x + c) & 255
            append(a)
            c = b
        out[lane::bpp] = values
    return out


def _unfilter(raw: bytes, start: int, rows: int, stride: int, bpp: int, param: str) -> bytes:
    """The filtered scanlines of one (sub)image from ``raw[start:]`` -> their bytes, without the filter bytes."""
    lines: list[bytes | bytearray] = []
    prior: bytes | bytearray = bytes(stride)
    position = start
    for _ in range(rows):
        kind, line = raw[position], raw[position + 1 : position + 1 + stride]
        position += 1 + stride
        if kind == 0:
            current: bytes | bytearray = line
        elif kind == 1:
            current = _unfilter_sub(line, bpp)
        elif kind == 2:
            current = _unfilter_up(line, prior)
        elif kind == 3:
            current = _unfilter_average(line, prior, bpp)
        elif kind == 4:
            current = _unfilter_paeth(line, prior, bpp)
        else:
            raise _invalid(param, f"corrupt PNG (unknown scanline filter type {kind})")
        lines.append(current)
        prior = current
    return b"".join(lines)


def _key_alpha(lanes: Sequence[bytes], key: Sequence[int]) -> bytes:
    """0 where every lane equals its key byte (a tRNS colour key), 255 elsewhere: one translate per lane, OR-ed."""
    size = len(lanes[0])
    combined = 0
    for lane, value in zip(lanes, key, strict=True):
        combined |= int.from_bytes(lane.translate(bytes(0 if byte == value else 255 for byte in range(256))), "big")
    return combined.to_bytes(size, "big")


def _unpack_low_depth(data: bytes, width: int, rows: int, stride: int, depth: int) -> bytes:
    """1, 2 or 4-bit samples (one channel; each row padded to a byte) -> one byte per sample."""
    per_byte, top = 8 // depth, (1 << depth) - 1
    table = [bytes((byte >> (8 - depth * (index + 1))) & top for index in range(per_byte)) for byte in range(256)]
    return b"".join(b"".join(map(table.__getitem__, data[row * stride : (row + 1) * stride]))[:width] for row in range(rows))


def _interleave(width: int, height: int, channels: Sequence[bytes]) -> bytes:
    out = bytearray(4 * width * height)
    for index, channel in enumerate(channels):
        out[index::4] = channel
    return bytes(out)


@dataclass(frozen=True, slots=True)
class _PngFormat:
    depth: int
    color_type: int
    palette: bytes
    transparency: bytes | None

    def to_rgba(self, data: bytes, width: int, height: int, stride: int) -> bytes:
        """Unfiltered scanlines of a (sub)image -> RGBA8, row-major. 16-bit samples keep their high byte, except
        that a tRNS colour key is compared at full precision as the specification requires."""
        if self.depth < 8:
            data = _unpack_low_depth(data, width, height, stride, self.depth)
        if self.color_type == 3:
            palette = (self.palette + bytes(768))[:768]
            alphas = (self.transparency or b"") + b"\xff" * 256
            return _interleave(width, height, [data.translate(palette[index::3]) for index in range(3)] + [data.translate(alphas[:256])])
        lanes = [data[index::2] for index in range(2)] if self.depth == 16 else [data]
        channels = _CHANNELS[self.color_type]
        samples = [lane[index::channels] for lane in lanes for index in range(channels)]
        high = samples[:channels]  # per channel, its most significant byte
        if self.depth < 8:
            scale = bytes(value * 255 // ((1 << self.depth) - 1) if value < 1 << self.depth else 0 for value in range(256))
            high = [high[0].translate(scale)]
        if self.color_type == 6:
            return _interleave(width, height, high) if self.depth == 16 else data
        if self.color_type == 4:
            return _interleave(width, height, [high[0], high[0], high[0], high[1]])
        alpha = b"\xff" * (width * height)
        if self.transparency is not None and len(self.transparency) >= 2 * channels:
            key = struct.unpack(f">{channels}H", self.transparency[: 2 * channels])
            # Samples are ordered high bytes of each channel, then low bytes; the key splits the same way.
            key_bytes = [value >> 8 for value in key] + [value & 255 for value in key] if self.depth == 16 else list(key)
            alpha = _key_alpha(samples, key_bytes)
        colour = high * 3 if self.color_type == 0 else high
        return _interleave(width, height, [*colour, alpha])


def decode_png(data: bytes, *, max_pixels: int = 16_777_216, param: str = "image") -> tuple[int, int, bytes]:
    """A PNG -> (width, height, RGBA8 pixels row-major), every colour type and bit depth, interlaced or not. A PNG
    that is corrupt, truncated or over ``max_pixels`` is a 400 naming ``param``."""
    if not data.startswith(_PNG_SIGNATURE):
        raise _invalid(param, "not a PNG image")
    width, height, depth, color_type, interlace = _png_header(data, param)
    _check_size(width, height, param, "PNG")
    if width * height > max_pixels:
        raise _invalid(param, f"the PNG image is {width}x{height} pixels; at most {max_pixels:,} pixels can be decoded", "image_too_large")
    chunks = _png_chunks(data, param, verify=True)
    palette = next((payload for kind, payload in chunks if kind == b"PLTE"), b"")
    if color_type == 3 and not palette:
        raise _invalid(param, "corrupt PNG (a palette image without a PLTE chunk)")
    image_format = _PngFormat(depth, color_type, palette, next((payload for kind, payload in chunks if kind == b"tRNS"), None))
    bits_per_pixel = _CHANNELS[color_type] * depth
    bpp = max(1, bits_per_pixel // 8)
    passes = []
    for x0, y0, dx, dy in _ADAM7 if interlace else ((0, 0, 1, 1),):
        pass_width, pass_height = max(0, (width - x0 + dx - 1) // dx), max(0, (height - y0 + dy - 1) // dy)
        if pass_width and pass_height:  # an empty pass has no scanlines at all, not even filter bytes
            passes.append((x0, y0, dx, dy, pass_width, pass_height, (pass_width * bits_per_pixel + 7) // 8))
    expected = sum(rows * (1 + stride) for *_, rows, stride in passes)
    inflater = zlib.decompressobj()
    try:
        # max_length bounds the output to what the header announces: a small file cannot inflate into gigabytes.
        raw = inflater.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"), expected)
    except zlib.error as error:
        raise _invalid(param, f"corrupt PNG image data ({error})") from None
    if len(raw) < expected:
        raise _invalid(param, "truncated PNG image data")
    if not interlace:
        x0, y0, dx, dy, pass_width, pass_height, stride = passes[0]
        return width, height, image_format.to_rgba(_unfilter(raw, 0, height, stride, bpp, param), width, height, stride)
    out, position, row_bytes = bytearray(4 * width * height), 0, 4 * width
    for x0, y0, dx, dy, pass_width, pass_height, stride in passes:
        lines = _unfilter(raw, position, pass_height, stride, bpp, param)
        position += pass_height * (1 + stride)
        rgba = image_format.to_rgba(lines, pass_width, pass_height, stride)
        for row in range(pass_height):
            base, line = (y0 + row * dy) * row_bytes, rgba[row * 4 * pass_width : (row + 1) * 4 * pass_width]
            for channel in range(4):
                out[base + 4 * x0 + channel : base + row_bytes : 4 * dx] = line[channel::4]
    return width, height, bytes(out)


# --- PNG encoding ----------------------------------------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode_png(width: int, height: int, color_type: int, pixels: bytes, text: Mapping[str, str]) -> bytes:
    stride = width * _CHANNELS[color_type]
    if width <= 0 or height <= 0 or len(pixels) != stride * height:
        raise ValueError(f"{len(pixels)} bytes are not a {width}x{height} image of {_CHANNELS[color_type]} bytes per pixel")
    view = memoryview(pixels)
    scanlines = b"".join(part for row in range(height) for part in (b"\x00", view[row * stride : (row + 1) * stride]))
    texts = b"".join(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")) for key, value in text.items())
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + texts + _chunk(b"IDAT", zlib.compress(scanlines, 6)) + _chunk(b"IEND", b"")


def encode_png_rgba(width: int, height: int, rgba: bytes) -> bytes:
    """8-bit RGBA pixels, row-major -> PNG (filter 0, zlib level 6)."""
    return _encode_png(width, height, 6, rgba, {})


def encode_png_rgb(width: int, height: int, rgb: bytes) -> bytes:
    """8-bit RGB pixels, row-major -> PNG (filter 0, zlib level 6)."""
    return _encode_png(width, height, 2, rgb, {})


# --- masks and the offline edit --------------------------------------------------------------------------------------


def _edit_alpha(mask_png: bytes, param: str) -> tuple[int, int, bytes]:
    """The mask's size and its alpha plane; OpenAI edits where alpha is 0, so a mask without alpha is refused."""
    if not mask_png.startswith(_PNG_SIGNATURE):
        raise _invalid(param, "the mask must be a PNG image")
    if not inspect(mask_png, param=param).has_alpha:
        raise _invalid(param, "the mask must be a PNG with an alpha channel: its fully transparent pixels (alpha 0) mark where to edit")
    width, height, rgba = decode_png(mask_png, param=param)
    return width, height, rgba[3::4]


def alpha_mask_to_black_white(mask_png: bytes, *, edit_is_black: bool) -> bytes:
    """OpenAI's mask (a PNG whose fully transparent pixels, alpha 0, mark where to edit) -> an RGB PNG of the same
    size with no alpha, pure black and pure white only, where the edit area is black if ``edit_is_black``.

    Amazon Bedrock (Nova Canvas, the Amazon Nova user guide, "Masking images"): a mask contains only pure black and pure
    white pixels; for INPAINTING the black area is the masked area that is changed and the rest must be pure white; for
    OUTPAINTING the model changes the white area. An inpainting mask therefore passes ``edit_is_black=True``. The guide
    also allows an alpha channel only without transparent pixels, so the result has none."""
    width, height, alpha = _edit_alpha(mask_png, "mask")
    edit, keep = (0, 255) if edit_is_black else (255, 0)
    grey = alpha.translate(bytes([edit] + [keep] * 255))
    rgb = bytearray(3 * width * height)
    for channel in range(3):
        rgb[channel::3] = grey
    return encode_png_rgb(width, height, bytes(rgb))


def check_mask(image: Picture, mask: Picture) -> None:
    """A mask for ``image`` as OpenAI requires it: a PNG with an alpha channel, of the image's width and height."""
    if mask.format != "png" or not mask.has_alpha:
        raise _invalid("mask", "the mask must be a PNG with an alpha channel: its fully transparent pixels (alpha 0) mark where to edit")
    if (mask.width, mask.height) != (image.width, image.height):
        raise _invalid(
            "mask", f"the mask is {mask.width}x{mask.height} pixels but the image is {image.width}x{image.height}; they must match"
        )


def _flat_png(width: int, height: int, colour: bytes, text: Mapping[str, str]) -> bytes:
    # One row compressed height times through a stream, so even a 100-megapixel flat image needs one row of memory.
    compressor = zlib.compressobj(6)
    line = b"\x00" + colour * width
    body = b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush()
    texts = b"".join(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")) for key, value in text.items())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + texts + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def transform_for_local(picture: Picture, *, prompt: str, mask: Picture | None) -> bytes:
    """The offline provider's edit: a deterministic PNG of the input's width and height, carrying a tEXt chunk
    ``imagegen:input-sha256`` (the SHA-256 of the input's bytes) so a test sees which input arrived.

    A PNG input is decoded and its RGB inverted where the mask's alpha is 0 (everywhere without a mask); every other
    pixel, and the alpha of all, stays identical. JPEG, WebP and GIF cannot be decoded with the standard library, so
    they become a flat image whose colour is drawn from SHA-256(input bytes + prompt)."""
    text = {INPUT_SHA256_KEY: hashlib.sha256(picture.data).hexdigest()}
    if mask is not None:
        check_mask(picture, mask)
    if picture.format != "png":
        colour = hashlib.sha256(picture.data + prompt.encode()).digest()[:3]
        return _flat_png(picture.width, picture.height, colour, text)
    width, height, rgba = decode_png(picture.data, param="image")
    pixels = width * height
    if mask is None:
        flips = b"\xff\xff\xff\x00" * pixels
    else:
        _, _, alpha = _edit_alpha(mask.data, "mask")
        edited = alpha.translate(b"\xff" + bytes(255))
        selection = bytearray(4 * pixels)
        for channel in range(3):
            selection[channel::4] = edited
        flips = bytes(selection)
    size = 4 * pixels
    inverted = (int.from_bytes(rgba, "big") ^ int.from_bytes(flips, "big")).to_bytes(size, "big")
    return _encode_png(width, height, 6, inverted, text)
