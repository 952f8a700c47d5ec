"""Structure of one H.264/HEVC access unit in Annex-B: NAL units, keyframes, frame size.

The video model checks every access unit here before a decoder sees it: decoders either
conceal damage silently (NVDEC) or need a keyframe to start, and a frame size read from
the sequence parameter set lets a huge stream be refused before any surface is allocated.
Only what those checks need is parsed (ITU-T H.264 7.3.2.1.1, H.265 7.3.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

CODECS = ("h264", "hevc")
"""Codecs the video model decodes (request parameter ``codec``)."""

# NAL unit types, per codec: coded slices, keyframes and parameter sets.
_H264_SLICES = frozenset(range(1, 6))
_H264_IDR = 5
_H264_SPS, _H264_PPS = 7, 8
_HEVC_SLICES = frozenset(range(0, 32))
_HEVC_IRAP = frozenset(range(16, 24))
_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34
# H.264 profiles whose SPS carries chroma format, bit depths and scaling matrices.
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


class AccessUnitError(ValueError):
    """The bytes are not a well-formed Annex-B access unit of the codec."""


@dataclass(frozen=True)
class AccessUnit:
    """What the video model needs to know about one access unit before decoding it.

    Attributes:
        keyframe: An IDR (H.264) or IRAP (HEVC) picture with every parameter set in band,
            so a fresh decoder can start here.
        size: ``(height, width)`` in pixels from the in-band SPS (coded size, before
            cropping: an upper bound of the frame), or None without an SPS.
    """

    keyframe: bool
    size: tuple[int, int] | None


def split_nal_units(data: bytes) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units (start codes removed).

    Raises:
        AccessUnitError: If ``data`` does not begin with a start code (00 00 01 or
            00 00 00 01).
    """
    return [data[start:stop] for start, stop in nal_unit_spans(data)]


def nal_unit_spans(data: bytes) -> list[tuple[int, int]]:
    """Where :func:`split_nal_units`' units lie in ``data``: ``(start, stop)`` byte offsets.

    Offsets rather than copies: a server checks every access unit it is sent, and the
    slice data is most of each.

    Raises:
        AccessUnitError: If ``data`` does not begin with a start code (00 00 01 or
            00 00 00 01).
    """
    if not (data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")):
        raise AccessUnitError("no Annex-B start code at byte 0")
    spans = []
    position = data.index(b"\x00\x00\x01") + 3
    while True:
        end = data.find(b"\x00\x00\x01", position)
        stop = len(data) if end < 0 else end
        if end >= 0 and stop > position and data[stop - 1] == 0:
            # A zero before the next start code belongs to it (4-byte start code).
            stop = position + len(data[position:end].rstrip(b"\x00"))
        if stop > position:
            spans.append((position, stop))
        if end < 0:
            return spans
        position = end + 3


def inspect_access_unit(data: bytes, codec: str) -> AccessUnit:
    """Check one access unit's NAL structure and read its keyframe status and size.

    Args:
        data: One access unit (one frame) in Annex-B.
        codec: ``"h264"`` or ``"hevc"``.

    Raises:
        AccessUnitError: No start code, a NAL unit with the forbidden bit set or too short
            for its header, no coded slice, or an unreadable SPS.
    """
    header_bytes = 1 if codec == "h264" else 2
    types = []
    size = None
    for index, (start, stop) in enumerate(nal_unit_spans(data)):
        header = data[start]
        if stop - start < header_bytes or header & 0x80:
            raise AccessUnitError(f"NAL unit {index} has no valid header")
        kind = header & 0x1F if codec == "h264" else (header >> 1) & 0x3F
        types.append(kind)
        if (codec, kind) in (("h264", _H264_SPS), ("hevc", _HEVC_SPS)):
            size = sps_size(data[start:stop], codec)
    found = set(types)
    if codec == "h264":
        slices, keyframe = found & _H264_SLICES, _H264_IDR in found
        parameter_sets = {_H264_SPS, _H264_PPS} <= found
    else:
        slices, keyframe = found & _HEVC_SLICES, bool(found & _HEVC_IRAP)
        parameter_sets = {_HEVC_VPS, _HEVC_SPS, _HEVC_PPS} <= found
    if not slices:
        raise AccessUnitError(f"no coded slice among NAL unit types {types}")
    return AccessUnit(keyframe and parameter_sets, size)


class _Bits:
    """MSB-first reader of an RBSP (emulation prevention bytes removed)."""

    def __init__(self, payload: bytes) -> None:
        self.bits = "".join(f"{b:08b}" for b in payload.replace(b"\x00\x00\x03", b"\x00\x00"))
        self.position = 0

    def u(self, count: int) -> int:
        if self.position + count > len(self.bits):
            raise AccessUnitError("SPS ends early")
        value = int(self.bits[self.position : self.position + count] or "0", 2)
        self.position += count
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise AccessUnitError("SPS has an invalid Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value % 2 else -(value // 2)


def sps_size(unit: bytes, codec: str) -> tuple[int, int]:
    """Coded ``(height, width)`` in pixels from a sequence parameter set NAL unit.

    Raises:
        AccessUnitError: If the SPS is truncated or malformed.
    """
    if codec == "h264":
        return _h264_sps_size(_Bits(unit[1:]))
    return _hevc_sps_size(_Bits(unit[2:]))


def _h264_sps_size(bits: _Bits) -> tuple[int, int]:
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    if profile in _H264_HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            bits.u(1)  # separate_colour_plane_flag
        bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(12 if chroma_format == 3 else 8):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1), bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue(), bits.u(1)  # max_num_ref_frames, gaps_in_frame_num_allowed
    width_mbs, height_units = bits.ue() + 1, bits.ue() + 1
    frame_mbs_only = bits.u(1)
    return height_units * 16 * (2 - frame_mbs_only), width_mbs * 16


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + bits.se() + 256) % 256
        last = following or last


def _hevc_sps_size(bits: _Bits) -> tuple[int, int]:
    bits.u(4)  # sps_video_parameter_set_id
    sub_layers = bits.u(3)
    bits.u(1)  # temporal_id_nesting
    bits.u(96)  # general profile_tier_level
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.u(2 * (8 - sub_layers))
    for profile, level in present:
        bits.u(88 * profile + 8 * level)
    bits.ue()  # sps_seq_parameter_set_id
    if bits.ue() == 3:  # chroma_format_idc
        bits.u(1)
    width = bits.ue()
    return bits.ue(), width
