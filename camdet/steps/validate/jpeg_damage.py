"""Damage inside a JPEG's compressed image data that a decoder conceals rather than refuses.

libjpeg and nvJPEG decode a JPEG whose entropy-coded data lost bytes or carries an
invalid marker: they fill what they cannot decode (grey or smeared blocks) and return a
frame. camdet answers such frames, and this module says which ones are damaged, without
decoding: it reads only the markers inside the scan (a vectorised pass, well under a
millisecond for a 1080p frame).

What it finds:

- an invalid marker inside the scan (``0xFF`` followed by a byte no encoder writes there);
- with restart markers (a ``DRI`` segment, as RTP/MJPEG cameras use them): restart
  markers out of order (a lost packet) or too few for the frame's size (a frame cut short
  whose end marker was added back).

What it cannot find: a flipped bit inside the Huffman-coded data of a JPEG, or a cut-short
JPEG without restart markers; telling those apart needs a full Huffman decode, which would
cost about as much as decoding the frame twice.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from camdet.steps.validate.jpeg_headers import JpegHeaderError, segments

_SOF_WITH_HUFFMAN = frozenset({0xC0, 0xC1})
"""Baseline and extended sequential frames: one scan holds the whole image."""
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_RST0, _RST7, _EOI = 0xD0, 0xD7, 0xD9


@dataclass(frozen=True)
class _Layout:
    """What the headers say about the first scan."""

    scan_start: int
    restart_interval: int
    mcus: int | None
    """MCUs of the first scan when it codes the whole image (else None: not checked)."""


def find_damage(data: bytes) -> str | None:
    """Why ``data``'s image data is damaged, or None when no damage is visible.

    Args:
        data: A JPEG that passed :func:`camdet.steps.validate.image_check.check_encoded_image`.

    Returns:
        A one-line reason, e.g. ``"restart marker RST5 where RST2 was expected at byte
        48211 (image data lost)"``, or None.
    """
    layout = _read_layout(data)
    if layout is None:
        return None
    restarts = 0
    for at, marker in _scan_markers(data, layout.scan_start):
        if _RST0 <= marker <= _RST7:
            expected = _RST0 + restarts % 8
            if marker != expected:
                return (
                    f"restart marker RST{marker - _RST0} where RST{expected - _RST0} was "
                    f"expected at byte {at} (image data lost)"
                )
            restarts += 1
        elif marker == _EOI:
            return _missing_intervals(layout, restarts)
        elif marker < 0xC0:
            return f"invalid marker 0xFF{marker:02X} inside the image data at byte {at}"
        else:  # the next segment of a multi-scan (progressive) JPEG: not checked further
            return None
    return None


def _scan_markers(data: bytes, start: int) -> Iterator[tuple[int, int]]:
    """Each marker from byte ``start`` on, in order: its offset and its second byte.

    A marker is ``FF`` followed by anything but ``00`` (a stuffed ``FF`` byte) or ``FF``
    (fill). Found with numpy rather than a regular expression: 126 against 229 us for a
    1080p frame of 670 kB on the 2-core CPU machine, and the byte comparison runs
    without the GIL, which a served pipeline's decode threads share.
    """
    body = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(body[start:-1] == 0xFF) + start
    second = body[at + 1]
    kept = (second != 0x00) & (second != 0xFF)
    return zip(at[kept].tolist(), second[kept].tolist(), strict=True)


def _missing_intervals(layout: _Layout, restarts: int) -> str | None:
    if layout.restart_interval == 0 or layout.mcus is None:
        return None
    intervals = math.ceil(layout.mcus / layout.restart_interval)
    if restarts + 1 >= intervals:
        return None
    return (
        f"image data ends after {restarts + 1} of {intervals} restart intervals (frame cut short)"
    )


def _read_layout(data: bytes) -> _Layout | None:
    """Read the header segments up to the first scan (None if they do not parse)."""
    restart, frame = 0, None
    try:
        for marker, pos, segment in segments(data):
            if marker == 0xDD and len(segment) >= 2:
                (restart,) = struct.unpack(">H", segment[:2])
            elif marker in _SOF:
                frame = (marker, segment)
            elif marker == 0xDA:
                mcus = _scan_mcus(frame, segment[0]) if frame and segment else None
                return _Layout(pos + 4 + len(segment), restart, mcus)
    except JpegHeaderError:
        return None
    return None


def _scan_mcus(frame: tuple[int, bytes], scan_components: int) -> int | None:
    """MCUs of a scan coding every component of a sequential Huffman frame, else None."""
    marker, segment = frame
    if marker not in _SOF_WITH_HUFFMAN or len(segment) < 6:
        return None
    height, width, components = struct.unpack(">HHB", segment[1:6])
    factors = [segment[7 + 3 * i] for i in range(components) if 8 + 3 * i <= len(segment)]
    if scan_components != components or len(factors) != components or not factors:
        return None
    if components == 1:  # a non-interleaved scan: one 8x8 block per MCU
        return math.ceil(width / 8) * math.ceil(height / 8)
    h_max = max(f >> 4 for f in factors)
    v_max = max(f & 0x0F for f in factors)
    if not h_max or not v_max:  # sampling factors of 0 (a damaged header): no layout
        return None
    return math.ceil(width / (8 * h_max)) * math.ceil(height / (8 * v_max))
