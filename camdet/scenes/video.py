"""Camera-like H.264/HEVC access units of synthetic scenes, for tests and demos.

What an IP camera sends over RTSP, after depacketization: one Annex-B access unit per
frame, parameter sets in band before every keyframe, a fixed GOP, normally no B-frames.
The frames come from :class:`camdet.scenes.SceneSequence`, so every access unit has
exact ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from camdet.scenes import Frame, SceneSequence

ENCODERS = {"h264": ("libx264", "x264-params"), "hevc": ("libx265", "x265-params")}
"""Codec name -> (FFmpeg encoder, its option that takes encoder parameters)."""


@dataclass(frozen=True)
class EncodedUnit:
    """One access unit as the encoder produced it (decode order).

    Attributes:
        data: Annex-B bytes (start codes; SPS/PPS, and VPS for HEVC, before keyframes).
        pts: Index of the frame it codes (presentation order).
        keyframe: Whether it is an IDR/IRAP picture.
    """

    data: bytes
    pts: int
    keyframe: bool


def encode_access_units(
    images: Iterable[np.ndarray],
    codec: str = "h264",
    gop: int = 30,
    bframes: int = 0,
    crf: int = 20,
    fps: int = 30,
) -> list[EncodedUnit]:
    """Encode RGB frames into camera-like access units.

    Args:
        images: ``[H, W, 3]`` uint8 RGB frames of one size (even width and height).
        codec: ``"h264"`` (libx264) or ``"hevc"`` (libx265).
        gop: Frames per keyframe interval (fixed, no scene-cut keyframes).
        bframes: Consecutive B-frames (0 for the usual camera stream).
        crf: Constant rate factor (lower is better quality).
        fps: Frame rate, frames per second.

    Returns:
        The access units in decode order; ``pts`` is the frame index.
    """
    import av

    encoder, params_option = ENCODERS[codec]
    context = None
    units: list[EncodedUnit] = []
    for index, image in enumerate(images):
        if context is None:
            context = av.CodecContext.create(encoder, "w")
            context.height, context.width = image.shape[:2]
            context.pix_fmt, context.time_base = "yuv420p", Fraction(1, fps)
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:repeat-headers=1"
            if codec == "hevc":
                params += ":log-level=error"
            context.options = {"preset": "veryfast", "crf": str(crf), params_option: params}
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        units += _units(context.encode(frame))
    if context is not None:
        units += _units(context.encode(None))
    return units


def _units(packets: list) -> list[EncodedUnit]:
    return [EncodedUnit(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in packets]


def scene_clip(
    seed: int,
    num_frames: int,
    width: int,
    height: int,
    codec: str = "h264",
    gop: int = 30,
    bframes: int = 0,
) -> tuple[list[Frame], list[EncodedUnit]]:
    """Render a :class:`SceneSequence` and encode it.

    Returns:
        The rendered frames (index = pts, with ground truth) and the access units in
        decode order.
    """
    sequence = SceneSequence(seed, width, height, num_objects=(3, 8))
    frames = [sequence.frame(i) for i in range(num_frames)]
    return frames, encode_access_units((f.image for f in frames), codec, gop, bframes)
