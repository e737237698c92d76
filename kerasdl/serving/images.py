"""Image sizes read from encoded headers, to refuse decompression bombs before decoding.

A 379 KB PNG can declare 20000 x 20000 pixels; ``tf.io.decode_image`` inside an exported
``serving_bytes`` signature would allocate all of them (1.6 GB) before the model sees a pixel. The
server reads each string input's header first, the way TensorFlow's ``DecodeImageV2`` op
classifies it (the same magic bytes: JPEG, PNG, GIF, BMP, WebP, JPEG XL), and refuses values that
decode to more pixels than the limit. Reading a header touches a few bytes (a GIF's block list at
most), never the pixel data.

A value whose magic TensorFlow recognizes but whose size cannot be read is refused too (the
decoder would have refused it as well); a value in no image format is left to the signature.

Animated WebP images are refused whatever their size: TensorFlow 2.21's WebP animation decoder
writes RGBA frames into a buffer sized from the header's channel count, so an animation without
alpha decoded with ``channels=0`` corrupts the heap and aborts the process ("corrupted
double-linked list"); kerasdl's own exports ask for 1 or 3 channels and get an error instead, but
the server serves any SavedModel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasdl.serving.errors import invalid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JXL_CODESTREAM = b"\xff\x0a"
JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
# JPEG start-of-frame markers (every SOFn except DHT C4, JPG C8 and DAC CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # TEM, RST0-7, SOI: no length field
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


class UnreadableImage(ValueError):
    """The value starts like an image format but its size cannot be read."""


@dataclass(frozen=True)
class ImageSize:
    """What decoding an image allocates: its format, size and frame count."""

    format: str
    width: int
    height: int
    frames: int = 1
    pixels: int = 0  # width * height, or the sum over an animation's frames when larger
    refused: str = ""  # why the image is refused whatever its size

    def describe(self) -> str:
        frames = f", {self.frames} frames" if self.frames > 1 else ""
        return f"a {self.width}x{self.height} {self.format} image ({self.pixels:,} pixels{frames})"


def _size(
    fmt: str, width: int, height: int, frames: int = 1, pixels: int = 0, refused: str = ""
) -> ImageSize:
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"{fmt} header declares a {width}x{height} image")
    return ImageSize(fmt, width, height, frames, max(pixels, width * height), refused)


def image_size(data: bytes) -> ImageSize | None:
    """The size an encoded image decodes to; ``None`` when ``data`` is in no image format.

    Raises:
        UnreadableImage: ``data`` has an image format's magic bytes but no readable size.
    """
    try:
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data.startswith(PNG_MAGIC):
            return _png(data)
        if data.startswith(b"GIF8"):
            return _gif(data)
        if data.startswith(b"BM"):
            return _bmp(data)
        if data.startswith(b"RIFF") and len(data) > 12 and data[8:12] == b"WEBP":
            return _webp(data)
        if data.startswith(JXL_CODESTREAM) or data.startswith(JXL_CONTAINER):
            return _jxl(data)
    except UnreadableImage:
        raise
    except (struct.error, IndexError, ValueError) as err:
        raise UnreadableImage(f"truncated header ({err})") from err
    return None


def _png(data: bytes) -> ImageSize:
    if data[12:16] != b"IHDR":
        raise UnreadableImage("PNG without an IHDR chunk first")
    width, height = struct.unpack(">II", data[16:24])
    return _size("PNG", width, height)


def _jpeg(data: bytes) -> ImageSize:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker
            i = data.index(b"\xff", i)
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return _size("JPEG", width, height)
        i += 2 + length
    raise UnreadableImage("JPEG without a frame header (SOF) before its scan")


def _skip_sub_blocks(data: bytes, i: int) -> int:
    while True:
        size = data[i]
        i += 1
        if size == 0:
            return i
        i += size


def _gif(data: bytes) -> ImageSize:
    # giflib's DGifSlurp (TensorFlow's GIF decoder) holds every frame's raster at once.
    width, height, flags = struct.unpack("<HHB", data[6:11])
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames, area = 0, 0
    while i < len(data):
        block = data[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            i = _skip_sub_blocks(data, i + 2)
        elif block == 0x2C:  # image descriptor
            fw, fh, fflags = struct.unpack("<HHB", data[i + 5 : i + 10])
            frames += 1
            area += fw * fh
            i += 10 + (3 << ((fflags & 7) + 1) if fflags & 0x80 else 0)
            i = _skip_sub_blocks(data, i + 1)  # LZW minimum code size, then the data
        else:
            break  # giflib stops at an unknown block too
    return _size("GIF", width, height, max(frames, 1), area)


def _bmp(data: bytes) -> ImageSize:
    if len(data) < 32:
        raise UnreadableImage("BMP shorter than its header")
    width, height = struct.unpack("<ii", data[18:26])
    return _size("BMP", width, abs(height))


def _webp(data: bytes) -> ImageSize:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas of an animation, or of a still with extras
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        if data[20] & 0x02:  # the animation flag
            why = "TensorFlow's animated-WebP decoder can overrun its output buffer"
            return _size("animated WebP", w, h, refused=why)
        return _size("WebP", w, h)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise UnreadableImage("WebP lossless without its signature byte")
        bits = int.from_bytes(data[21:25], "little")
        return _size("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise UnreadableImage("WebP lossy without its start code")
        w, h = struct.unpack("<HH", data[26:30])
        return _size("WebP", w & 0x3FFF, h & 0x3FFF)
    raise UnreadableImage(f"WebP with an unknown first chunk {chunk!r}")


class _Bits:
    """JPEG XL's bit reader: least significant bit first."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data[:16], "little")
        self.pos = 0

    def read(self, n: int) -> int:
        out = (self.value >> self.pos) & ((1 << n) - 1)
        self.pos += n
        return out

    def u32(self, *dist: tuple[int, int]) -> int:
        bits, offset = dist[self.read(2)]
        return self.read(bits) + offset


def _jxl_codestream(data: bytes) -> bytes:
    if data.startswith(JXL_CODESTREAM):
        return data
    i = 0
    while i + 8 <= len(data):  # ISO BMFF boxes; the codestream is in jxlc or the first jxlp
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        head = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[i + 8 : i + 16])
            head = 16
        if kind == b"jxlc":
            return data[i + head :]
        if kind == b"jxlp":
            return data[i + head + 4 :]
        if size == 0 or size < head:
            break
        i += size
    raise UnreadableImage("JPEG XL container without a codestream box")


def _jxl(data: bytes) -> ImageSize:
    stream = _jxl_codestream(data)
    if not stream.startswith(JXL_CODESTREAM):
        raise UnreadableImage("JPEG XL codestream without its signature")
    bits = _Bits(stream[2:])
    dist = ((9, 1), (13, 1), (18, 1), (30, 1))
    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else bits.u32(*dist)
    ratio = bits.read(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio]
        width = height * num // den
    else:
        width = (bits.read(5) + 1) * 8 if small else bits.u32(*dist)
    return _size("JPEG XL", width, height)


def model_input_hw(signatures: dict[str, Any]) -> tuple[int, int] | None:
    """The largest ``H x W`` among the signatures' fixed-size image inputs ``(batch, H, W, C)``."""
    best: tuple[int, int] | None = None
    for sig in signatures.values():
        for info in sig.inputs.values():
            shape = info.shape
            if info.is_string or shape is None or len(shape) != 4:
                continue
            h, w = shape[1], shape[2]
            if h and w and (best is None or h * w > best[0] * best[1]):
                best = (int(h), int(w))
    return best


def check_image_inputs(inputs: dict[str, np.ndarray], string_inputs: list[str], limit: int) -> None:
    """Refuse (400) any encoded image in ``string_inputs`` that decodes to over ``limit`` pixels."""
    for name in string_inputs:
        values: Any = inputs[name].reshape(-1)
        for i, value in enumerate(values):
            if not isinstance(value, bytes | bytearray):
                continue
            try:
                size = image_size(bytes(value))
            except UnreadableImage as err:
                raise invalid(
                    f"Input '{name}' example {i}: cannot read the image's size: {err}."
                ) from err
            if size is not None and size.refused:
                raise invalid(
                    f"Input '{name}' example {i}: {size.describe()} is refused: {size.refused}."
                )
            if size is not None and size.pixels > limit:
                raise invalid(
                    f"Input '{name}' example {i}: {size.describe()} exceeds the limit of "
                    f"{limit:,} pixels (--max-image-pixels)."
                )
