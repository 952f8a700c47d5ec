"""Structural checks of encoded camera frames, before any pixel is decoded.

The DALI backend decodes a whole batch at once and fails every request of the batch when
one sample is bad, so the ``validate`` model runs these checks first: a frame that is
empty, not a JPEG/PNG, truncated, or whose header claims more pixels than allowed is
refused with a clear error for its own request only. Only headers and trailers are read
(microseconds per frame); pixel data is never touched here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from camdet.steps.validate.jpeg_headers import JpegHeaderError, read_headers

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"
# Encoders and cameras may pad after the end marker; look for it this far from the end.
_TRAILER_SLACK = 64


class ImageCheckError(ValueError):
    """An encoded frame that must not be decoded; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an encoded frame says.

    Attributes:
        format: ``"jpeg"`` or ``"png"``.
        height: Frame height in pixels.
        width: Frame width in pixels.
    """

    format: str
    height: int
    width: int


def check_encoded_image(data: bytes, max_pixels: int, max_side: int) -> ImageInfo:
    """Check that ``data`` is a complete JPEG or PNG of acceptable dimensions.

    Args:
        data: The encoded frame.
        max_pixels: Largest accepted ``height * width``.
        max_side: Largest accepted height or width, in pixels.

    Returns:
        The format and dimensions from the header.

    Raises:
        ImageCheckError: If the frame is empty, of another format, truncated, has a
            broken header, or claims dimensions outside the limits.
    """
    if not data:
        raise ImageCheckError("empty image: the request carried 0 bytes")
    if data.startswith(JPEG_SOI):
        info = _jpeg_info(data)
    elif data.startswith(PNG_SIGNATURE):
        info = _png_info(data)
    else:
        raise ImageCheckError(
            f"not a JPEG or PNG image (first bytes {data[:4].hex()}, {len(data)} bytes)"
        )
    if info.height <= 0 or info.width <= 0:
        raise ImageCheckError(f"corrupt {info.format} header: size {info.width}x{info.height}")
    if max(info.height, info.width) > max_side or info.height * info.width > max_pixels:
        raise ImageCheckError(
            f"image too large: header claims {info.width}x{info.height} pixels, limits are "
            f"{max_side} per side and {max_pixels} in all"
        )
    return info


def _jpeg_info(data: bytes) -> ImageInfo:
    """Check the trailer and the headers a decoder reads (:mod:`.jpeg_headers`)."""
    if JPEG_EOI not in data[-_TRAILER_SLACK:]:
        raise ImageCheckError(f"truncated JPEG: no end-of-image marker ({len(data)} bytes)")
    try:
        headers = read_headers(data)
    except JpegHeaderError as error:
        raise ImageCheckError(f"corrupt JPEG: {error}") from None
    return ImageInfo("jpeg", headers.height, headers.width)


def _png_info(data: bytes) -> ImageInfo:
    """Read the IHDR chunk and check that the IEND chunk closes the file."""
    if PNG_IEND not in data[-_TRAILER_SLACK:]:
        raise ImageCheckError(f"truncated PNG: no IEND chunk ({len(data)} bytes)")
    header = data[len(PNG_SIGNATURE) : len(PNG_SIGNATURE) + 16]
    if len(header) < 16 or header[4:8] != b"IHDR":
        raise ImageCheckError("corrupt PNG: the first chunk is not IHDR")
    _check_png_chunks(data)
    width, height = struct.unpack(">II", header[8:16])
    return ImageInfo("png", height, width)


def _check_png_chunks(data: bytes) -> None:
    """Check that every chunk fits in the file and every critical chunk's CRC matches.

    A PNG decoder cannot conceal damage (the pixels are one zlib stream) and nvImageCodec
    fails without a reason; the CRCs say which chunk is damaged, at C speed.
    """
    view, pos = memoryview(data), len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", view[pos : pos + 8])
        name = kind.decode("latin-1")
        if not kind.isalpha():  # chunk types are four ASCII letters; decoders refuse others
            raise ImageCheckError(f"corrupt PNG: invalid chunk type {kind!r} at byte {pos}")
        end = pos + 12 + length
        if end > len(data):
            raise ImageCheckError(f"truncated PNG: chunk {name} at byte {pos} runs past the end")
        (crc,) = struct.unpack(">I", view[end - 4 : end])
        # Ancillary chunks (lower-case first letter) may be skipped by decoders; only
        # damage to critical ones (IHDR, PLTE, IDAT, IEND) makes the frame undecodable.
        if name[:1].isupper() and zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise ImageCheckError(f"corrupt PNG: CRC mismatch in chunk {name} at byte {pos}")
        if kind == b"IEND":
            return
        pos = end
    raise ImageCheckError(f"truncated PNG: no IEND chunk ({len(data)} bytes)")
