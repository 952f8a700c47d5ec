"""H.264/HEVC packets as self-contained Annex-B access units, without decoding them.

The ``detect_video`` ensemble decodes on the server, so the client only re-frames what
the demuxer gives it: each access unit in Annex-B form (``00 00 00 01`` start codes), and
every keyframe preceded by the parameter sets (H.264: SPS, PPS; HEVC: VPS, SPS, PPS) it
needs, so that a decoder can start at any keyframe.

Containers disagree on where parameter sets live: MP4/MKV store length-prefixed NAL units
with the sets in ``avcC``/``hvcC`` extradata (FFmpeg's ``*_mp4toannexb`` filters convert
them); RTSP delivers Annex-B already, with the sets often only in the SDP (FFmpeg's
extradata). :class:`AnnexBConverter` handles both and keeps the newest in-band sets, so a
camera that changes resolution mid-stream sends the new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import av

from camdet.steps.video.annexb import AccessUnitError, split_nal_units

logger = logging.getLogger(__name__)

START_CODE = b"\x00\x00\x00\x01"
CODEC_NAMES = {"h264": "h264", "hevc": "hevc", "h265": "hevc"}
"""FFmpeg codec name -> the ``codec`` request parameter of ``detect_video``."""

# NAL unit types, from ITU-T H.264 table 7-1 and H.265 table 7-1.
_PARAMETER_SETS = {"h264": (7, 8), "hevc": (32, 33, 34)}
_KEYFRAME_TYPES = {"h264": frozenset({5}), "hevc": frozenset(range(16, 24))}  # IDR / IRAP


def nal_type(unit: bytes, codec: str) -> int:
    """The ``nal_unit_type`` of one NAL unit (first header byte(s))."""
    return unit[0] & 0x1F if codec == "h264" else (unit[0] >> 1) & 0x3F


def annexb(units: list[bytes]) -> bytes:
    """NAL units joined with 4-byte start codes."""
    return b"".join(START_CODE + unit for unit in units)


def is_keyframe_unit(units: list[bytes], codec: str) -> bool:
    """Whether an access unit holds an IDR (H.264) or IRAP (HEVC) picture."""
    keyframe_types = _KEYFRAME_TYPES[codec]
    return any(nal_type(unit, codec) in keyframe_types for unit in units)


def parameter_sets(units: list[bytes], codec: str) -> dict[int, bytes]:
    """The parameter-set NAL units among ``units``, by NAL type (the last of each wins)."""
    wanted = _PARAMETER_SETS[codec]
    return {nal_type(u, codec): u for u in units if nal_type(u, codec) in wanted}


@dataclass(frozen=True)
class AccessUnit:
    """One encoded picture as ``detect_video`` takes it.

    Attributes:
        data: Annex-B bytes; a keyframe carries its parameter sets in band.
        keyframe: Whether a decoder can start here.
        codec: ``"h264"`` or ``"hevc"`` (the request parameter).
        width: Coded picture width from the stream header, pixels.
        height: Coded picture height from the stream header, pixels.
    """

    data: bytes
    keyframe: bool
    codec: str
    width: int
    height: int


class AnnexBConverter:
    """Turns one stream's demuxed packets into :class:`AccessUnit` objects.

    Args:
        stream: The H.264 or HEVC stream the packets come from.

    Raises:
        ValueError: If the stream is neither H.264 nor HEVC.
    """

    def __init__(self, stream: av.VideoStream) -> None:
        name = stream.codec_context.name
        if name not in CODEC_NAMES:
            raise ValueError(f"{name} cannot pass through: only H.264 and HEVC")
        self.codec = CODEC_NAMES[name]
        self.width = stream.codec_context.width
        self.height = stream.codec_context.height
        extradata = stream.codec_context.extradata or b""
        self._filter: av.BitStreamFilterContext | None = None
        self._sets: dict[int, bytes] = {}
        if extradata.startswith((b"\x00\x00\x01", START_CODE)):
            self._sets = parameter_sets(split_nal_units(extradata), self.codec)
        elif extradata:
            # avcC/hvcC: length-prefixed NAL units; FFmpeg's filter rewrites them.
            self._filter = av.BitStreamFilterContext(f"{self.codec}_mp4toannexb", stream)

    def convert(self, packet: av.Packet) -> list[AccessUnit]:
        """The access units of one demuxed packet (none for an empty one).

        A packet that cannot be re-framed (damaged in transit) is still passed on, as
        it came and marked a non-keyframe: the server rejects it with a clear error, the
        frame is counted as failed, and decoding resumes at the next keyframe.
        """
        raw = bytes(packet)
        try:
            packets = [packet] if self._filter is None else self._filter.filter(packet)
            return [self._access_unit(bytes(p), p.is_keyframe) for p in packets if p.size]
        except (AccessUnitError, av.FFmpegError) as error:
            logger.debug("passing on a damaged %s packet: %s", self.codec, error)
            return [AccessUnit(raw, False, self.codec, self.width, self.height)] if raw else []

    def flush(self) -> Iterator[AccessUnit]:
        """Access units the filter still holds at the end of the stream."""
        if self._filter is not None:
            for filtered in self._filter.filter(None):
                if filtered.size:
                    yield self._access_unit(bytes(filtered), filtered.is_keyframe)

    def _access_unit(self, data: bytes, flagged_keyframe: bool) -> AccessUnit:
        units = split_nal_units(data)
        in_band = parameter_sets(units, self.codec)
        self._sets.update(in_band)
        keyframe = flagged_keyframe or is_keyframe_unit(units, self.codec)
        missing = [t for t in _PARAMETER_SETS[self.codec] if t not in in_band]
        if keyframe and missing and self._sets:
            # The decoder may start here, so the sets it needs must come with it.
            data = annexb(_with_parameter_sets(units, self._sets, self.codec))
        return AccessUnit(data, keyframe, self.codec, self.width, self.height)


_DELIMITERS = {"h264": 9, "hevc": 35}  # access unit delimiter: first in the unit if present


def _with_parameter_sets(units: list[bytes], sets: dict[int, bytes], codec: str) -> list[bytes]:
    """``units`` with ``sets`` in front (after an access unit delimiter), none twice."""
    rest = [u for u in units if nal_type(u, codec) not in sets]
    head = [u for u in rest[:1] if nal_type(u, codec) == _DELIMITERS[codec]]
    return head + [sets[t] for t in sorted(sets)] + rest[len(head) :]
