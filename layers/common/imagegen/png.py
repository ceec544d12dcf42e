"""PNG in the standard library alone: the header and chunks read the way :func:`imagegen.pictures.inspect` needs them,
a decoder of every colour type, bit depth, filter and Adam7 interlacing, and 8-bit encoders (pixels, already filtered
scanlines, a flat colour streamed row by row), each able to carry tEXt chunks."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from imagegen.errors import InvalidRequestError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel by PNG colour type, and the bit depths the specification allows for each.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_MASK_WITHOUT_ALPHA = "the mask must be a PNG with an alpha channel: its fully transparent pixels (alpha 0) mark where to edit"


def _invalid(param: str, problem: str, code: str = "invalid_image") -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {problem}.", param=param, code=code)


@dataclass(frozen=True, slots=True)
class PngHeader:
    """The IHDR chunk, checked against the specification."""

    width: int
    height: int
    depth: int
    color_type: int
    interlace: int

    @property
    def has_alpha_channel(self) -> bool:
        """Grey or truecolour with alpha (colour types 4 and 6); a tRNS chunk gives the other types transparency."""
        return self.color_type in (4, 6)


def read_header(data: bytes, *, param: str) -> PngHeader:
    """The IHDR of a PNG (``data`` starts with :data:`SIGNATURE`); a 400 naming ``param`` when it is truncated or corrupt."""
    if len(data) < 33:
        raise _invalid(param, "truncated PNG header")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if length != 13 or kind != b"IHDR" or zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise _invalid(param, "corrupt PNG header (the IHDR chunk is missing or damaged)")
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth not in _DEPTHS.get(color_type, ()) or compression != 0 or filtering != 0 or interlace > 1:
        raise _invalid(param, f"corrupt PNG header (colour type {color_type}, bit depth {depth} is not a valid PNG)")
    return PngHeader(width, height, depth, color_type, interlace)


def _chunks(data: bytes, param: str, *, verify: bool) -> list[tuple[bytes, bytes]]:
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


def has_transparency_chunk(data: bytes, *, param: str) -> bool:
    """Whether a tRNS chunk comes before the image data: it walks every chunk up to the first IDAT, so a PNG cut short
    in its header is a 400 naming ``param`` whatever its colour type."""
    return any(kind == b"tRNS" for kind, _ in _chunks(data, param, verify=False))


# --- decoding --------------------------------------------------------------------------------------------------------


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
    that is corrupt, truncated, without pixels or over ``max_pixels`` is a 400 naming ``param``."""
    if not data.startswith(SIGNATURE):
        raise _invalid(param, "not a PNG image")
    header = read_header(data, param=param)
    width, height, depth, color_type = header.width, header.height, header.depth, header.color_type
    if width <= 0 or height <= 0:
        raise _invalid(param, f"the PNG image is {width}x{height} pixels; both sides must be at least 1")
    if width * height > max_pixels:
        raise _invalid(param, f"the PNG image is {width}x{height} pixels; at most {max_pixels:,} pixels can be decoded", "image_too_large")
    chunks = _chunks(data, param, verify=True)
    palette = next((payload for kind, payload in chunks if kind == b"PLTE"), b"")
    if color_type == 3 and not palette:
        raise _invalid(param, "corrupt PNG (a palette image without a PLTE chunk)")
    image_format = _PngFormat(depth, color_type, palette, next((payload for kind, payload in chunks if kind == b"tRNS"), None))
    bits_per_pixel = _CHANNELS[color_type] * depth
    bpp = max(1, bits_per_pixel // 8)
    passes = []
    for x0, y0, dx, dy in _ADAM7 if header.interlace else ((0, 0, 1, 1),):
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
    if not header.interlace:
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


def alpha_plane(mask_png: bytes, *, param: str) -> tuple[int, int, bytes]:
    """OpenAI's mask -> its width, height and alpha plane (one byte a pixel, row-major). OpenAI edits where alpha is 0,
    so anything but a PNG with alpha (colour type 4 or 6, or a tRNS chunk) is a 400 naming ``param``."""
    if not mask_png.startswith(SIGNATURE):
        raise _invalid(param, "the mask must be a PNG image")
    if not read_header(mask_png, param=param).has_alpha_channel and not has_transparency_chunk(mask_png, param=param):
        raise _invalid(param, _MASK_WITHOUT_ALPHA)
    width, height, rgba = decode_png(mask_png, param=param)
    return width, height, rgba[3::4]


# --- encoding --------------------------------------------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _assemble(width: int, height: int, color_type: int, idat: bytes, text: Mapping[str, str] | None) -> bytes:
    texts = b"".join(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")) for key, value in (text or {}).items())
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + texts + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encode_scanlines(width: int, height: int, color_type: int, scanlines: bytes, *, text: Mapping[str, str] | None = None) -> bytes:
    """An 8-bit PNG of ``color_type`` (2 RGB, 6 RGBA, ...) around already filtered scanlines (each row: its filter byte,
    then the row's samples), zlib level 6, with a tEXt chunk per entry of ``text`` (Latin-1)."""
    stride = width * _CHANNELS[color_type]
    if width <= 0 or height <= 0 or len(scanlines) != (1 + stride) * height:
        raise ValueError(
            f"{len(scanlines)} bytes are not the scanlines of a {width}x{height} image of {_CHANNELS[color_type]} bytes per pixel"
        )
    return _assemble(width, height, color_type, zlib.compress(scanlines, 6), text)


def _encode_pixels(width: int, height: int, color_type: int, pixels: bytes, text: Mapping[str, str] | None) -> bytes:
    stride = width * _CHANNELS[color_type]
    if width <= 0 or height <= 0 or len(pixels) != stride * height:
        raise ValueError(f"{len(pixels)} bytes are not a {width}x{height} image of {_CHANNELS[color_type]} bytes per pixel")
    view = memoryview(pixels)
    scanlines = b"".join(part for row in range(height) for part in (b"\x00", view[row * stride : (row + 1) * stride]))
    return encode_scanlines(width, height, color_type, scanlines, text=text)


def encode_png_rgba(width: int, height: int, rgba: bytes, *, text: Mapping[str, str] | None = None) -> bytes:
    """8-bit RGBA pixels, row-major -> PNG (filter 0, zlib level 6), with ``text`` as tEXt chunks."""
    return _encode_pixels(width, height, 6, rgba, text)


def encode_png_rgb(width: int, height: int, rgb: bytes, *, text: Mapping[str, str] | None = None) -> bytes:
    """8-bit RGB pixels, row-major -> PNG (filter 0, zlib level 6), with ``text`` as tEXt chunks."""
    return _encode_pixels(width, height, 2, rgb, text)


def encode_flat_rgb(width: int, height: int, colour: bytes, *, text: Mapping[str, str] | None = None) -> bytes:
    """An RGB PNG of one ``colour`` (3 bytes), with ``text`` as tEXt chunks. One row is compressed ``height`` times
    through a stream, so even a 100-megapixel flat image needs one row of memory."""
    if width <= 0 or height <= 0 or len(colour) != 3:
        raise ValueError(f"a flat {width}x{height} RGB image needs both sides at least 1 and a 3-byte colour, not {len(colour)} bytes")
    compressor = zlib.compressobj(6)
    line = b"\x00" + colour * width
    return _assemble(width, height, 2, b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush(), text)
