"""The header checks JPEG decoders make before decoding, made without decoding.

The production DALI backend decodes a batch at once and fails every request of the batch
when the decoder refuses one frame. Most refusals are decided by the headers alone (the
fuzz of issue #12 found each of these in bit-flipped and doctored camera frames): a
segment length that cannot be, a coding process the decoders do not implement, a
quantization or Huffman table that is malformed or used without being defined. Reading
the segments before the first scan finds them in microseconds, so ``validate`` refuses
such a frame for its own request. The rules are libjpeg-turbo's (``jdmarker.c``,
``jdhuff.c``), which nvJPEG follows for the baseline and progressive processes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

SUPPORTED_PROCESSES = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
"""Start-of-frame markers the decoders implement (Huffman coding, 8/12-bit DCT)."""
_OTHER_SOF = frozenset(range(0xC3, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Lossless, hierarchical and arithmetic-coded frames: no camera sends them."""
_STANDARD_HUFFMAN_IDS = frozenset({0, 1})
"""Tables libjpeg-turbo supplies when a frame defines none (Motion-JPEG frames omit them)."""
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
"""Markers without a length field (TEM, RSTn)."""


class JpegHeaderError(ValueError):
    """A JPEG header the decoders refuse; the message says which and where."""


@dataclass
class JpegHeaders:
    """What the segments before the first scan define.

    Attributes:
        process: The start-of-frame marker (0xC0 baseline, 0xC2 progressive, ...).
        height: Frame height from the SOF, pixels.
        width: Frame width from the SOF, pixels.
        components: ``{component id: quantization table id}`` from the SOF.
        quant_tables: Quantization table ids defined (DQT).
        huffman_tables: ``(class, id)`` of Huffman tables defined (DHT; class 0 DC, 1 AC).
    """

    process: int | None = None
    height: int = 0
    width: int = 0
    components: dict[int, int] = field(default_factory=dict)
    quant_tables: set[int] = field(default_factory=set)
    huffman_tables: set[tuple[int, int]] = field(default_factory=set)


def read_headers(data: bytes) -> JpegHeaders:
    """Read and check the segments from SOI to the first scan's header (SOS).

    Args:
        data: A JPEG starting with its SOI marker.

    Returns:
        The headers, once every check passed.

    Raises:
        JpegHeaderError: The first problem a decoder would refuse the frame for.
    """
    headers = JpegHeaders()
    readers = {0xC4: _read_dht, 0xDB: _read_dqt, 0xDA: _check_scan}
    for marker, pos, segment in segments(data):
        if marker == 0xCC:
            raise JpegHeaderError(f"arithmetic-coding conditioning (DAC) at byte {pos}")
        if marker in SUPPORTED_PROCESSES or marker in _OTHER_SOF:
            _read_sof(headers, marker, segment, pos)
        elif marker in readers:
            readers[marker](headers, segment, pos)
        if marker == 0xDA:
            return headers
    raise JpegHeaderError("no image data (SOS) after the headers")


def segments(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(marker, byte offset, payload)`` of each segment up to and including the SOS.

    The image data starts right after the SOS's payload, at ``offset + 4 + len(payload)``.

    Raises:
        JpegHeaderError: Where a marker should start and none does, at an end marker
            before any image data, or at a segment length that cannot be.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise JpegHeaderError(f"expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            raise JpegHeaderError(f"end of image at byte {pos} before any image data")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise JpegHeaderError(f"segment 0x{marker:02X} at byte {pos} has length {length}")
        yield marker, pos, data[pos + 4 : pos + 2 + length]
        pos += 2 + length


def _read_sof(headers: JpegHeaders, marker: int, segment: bytes, pos: int) -> None:
    if headers.process is not None:
        raise JpegHeaderError(f"a second frame header (SOF) at byte {pos}")
    if marker not in SUPPORTED_PROCESSES:
        raise JpegHeaderError(
            f"unsupported JPEG process (SOF 0x{marker:02X}): decoders take baseline, "
            "extended or progressive Huffman-coded JPEG"
        )
    count = segment[5] if len(segment) >= 6 else 0
    if not 1 <= count <= 4 or len(segment) < 6 + 3 * count:
        raise JpegHeaderError(f"frame header at byte {pos} has {count} components")
    headers.process = marker
    headers.height, headers.width = struct.unpack(">HH", segment[1:5])
    for i in range(count):
        component, sampling, table = segment[6 + 3 * i : 9 + 3 * i]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 0x0F <= 4) or table > 3:
            raise JpegHeaderError(
                f"frame header at byte {pos}: component {component} has sampling "
                f"{sampling >> 4}x{sampling & 0x0F} and quantization table {table}"
            )
        headers.components[component] = table


def _read_dqt(headers: JpegHeaders, segment: bytes, pos: int) -> None:
    offset = 0
    while offset < len(segment):
        precision, table = segment[offset] >> 4, segment[offset] & 0x0F
        size = 64 * (precision + 1)
        if precision > 1 or table > 3 or offset + 1 + size > len(segment):
            raise JpegHeaderError(
                f"quantization table at byte {pos}: precision {precision}, id {table}"
            )
        headers.quant_tables.add(table)
        offset += 1 + size


def _read_dht(headers: JpegHeaders, segment: bytes, pos: int) -> None:
    """Each table of a DHT segment, as ``jpeg_make_d_derived_tbl`` checks it.

    A table is its class/id byte, 16 code counts (codes of 1..16 bits) and the symbols:
    the counts must fit the segment, at most 256 symbols, and be a prefix code (after the
    codes of each length, no more codes than that length can hold).
    """
    offset = 0
    while offset < len(segment):
        where = f"Huffman table at byte {pos}"
        if offset + 17 > len(segment):
            raise JpegHeaderError(f"{where} is cut short")
        table_class, table = segment[offset] >> 4, segment[offset] & 0x0F
        if table_class > 1 or table > 3:
            raise JpegHeaderError(f"{where} has class {table_class} id {table}")
        counts = segment[offset + 1 : offset + 17]
        symbols = sum(counts)
        if symbols > 256 or offset + 17 + symbols > len(segment):
            raise JpegHeaderError(f"{where} claims {symbols} codes")
        code = 0
        for bits, count in enumerate(counts, start=1):
            code += count
            if code > 1 << bits:
                raise JpegHeaderError(f"{where} is not a prefix code")
            code <<= 1
        headers.huffman_tables.add((table_class, table))
        offset += 17 + symbols


def _check_scan(headers: JpegHeaders, segment: bytes, pos: int) -> None:
    """The first scan uses components of the frame and tables that were defined."""
    if headers.process is None:
        raise JpegHeaderError("no frame header (SOF) before the image data")
    missing = sorted(set(headers.components.values()) - headers.quant_tables)
    if missing:
        raise JpegHeaderError(f"quantization table {missing[0]} is used but never defined")
    count = segment[0] if segment else 0
    if not 1 <= count <= 4 or len(segment) < 4 + 2 * count:
        raise JpegHeaderError(f"scan header at byte {pos} has {count} components")
    start, end, approximation = segment[1 + 2 * count : 4 + 2 * count]
    for i in range(count):
        component, tables = segment[1 + 2 * i : 3 + 2 * i]
        if component not in headers.components:
            raise JpegHeaderError(f"scan at byte {pos} names component {component}")
        needed = []
        if start == 0 and approximation >> 4 == 0:  # DC coefficients, first pass
            needed.append((0, tables >> 4))
        if end > 0:  # AC coefficients
            needed.append((1, tables & 0x0F))
        for table_class, table in needed:
            if (table_class, table) not in headers.huffman_tables and (
                table not in _STANDARD_HUFFMAN_IDS
            ):
                kind = "AC" if table_class else "DC"
                raise JpegHeaderError(f"{kind} Huffman table {table} is used but never defined")
