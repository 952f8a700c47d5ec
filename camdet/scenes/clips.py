"""H.264 clips of scene sequences, as IP cameras stream them, with their ground truth."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from camdet.scenes.coco import _CocoWriter, _write_json
from camdet.scenes.events import TrackingEvents
from camdet.scenes.mot import TrackTruth, truth_of, write_mot
from camdet.scenes.sequence import SceneSequence

if TYPE_CHECKING:
    import av

logger = logging.getLogger(__name__)


def mot_path(clip_path: Path) -> Path:
    """Where :func:`write_clip` puts a clip's MOT ground truth: ``clip.mp4`` -> ``clip.mot.txt``."""
    return clip_path.with_suffix(".mot.txt")


def write_clip(
    out_path: Path,
    seed: int,
    num_frames: int,
    width: int,
    height: int,
    fps: int = 30,
    *,
    num_objects: int | tuple[int, int] = (2, 10),
    events: TrackingEvents | None = None,
    keyframe_interval: int | None = None,
    crf: int = 20,
) -> Path:
    """Write a :class:`SceneSequence` as an H.264 MP4 plus a COCO annotation file.

    The video is yuv420p without B-frames and with a keyframe every
    ``keyframe_interval`` frames, as IP cameras stream it. COCO image ``id`` is
    ``frame index + 1``; each image also records ``frame_index``, and ``file_name`` is
    ``"<clip name>#<frame index>"``. Boxes are those of the rendered frames (compression
    moves no edges).

    Args:
        out_path: Path of the ``.mp4`` file (parent folders are created).
        seed: Seed of the sequence.
        num_frames: Number of frames (>= 1).
        width: Frame width in pixels (even, >= 32).
        height: Frame height in pixels (even, >= 32).
        fps: Frame rate in frames per second.
        num_objects: Objects in the sequence, or an inclusive ``(min, max)`` range.
        events: Occluders and crossings to build into the scene (tracking clips), or
            None for a plain sequence.
        keyframe_interval: Frames between keyframes; defaults to ``fps`` (one per second).
        crf: x264 constant rate factor (lower is better quality).

    The tracking ground truth (object ids per frame, MOTChallenge rows, see
    :mod:`camdet.scenes.mot`) goes to :func:`mot_path` of ``out_path``.

    Returns:
        Path of the COCO file, ``out_path`` with suffix ``.json``.

    Raises:
        ValueError: If the size is odd or too small, or ``num_frames`` or ``fps`` < 1.
    """
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {width}x{height}")
    if num_frames < 1 or fps < 1:
        raise ValueError(f"num_frames and fps must be >= 1, got {num_frames} and {fps}")
    sequence = SceneSequence(seed, width, height, num_objects, events)
    gop = keyframe_interval or fps
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = _CocoWriter()
    truths: list[TrackTruth] = []
    # PyAV only here: the scene renderer must import on machines without it (the GPU one).
    import av

    with av.open(str(out_path), mode="w") as container:
        stream = _add_h264_stream(container, width, height, fps, gop, crf)
        for index in range(num_frames):
            frame = sequence.frame(index)
            video_frame = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            video_frame.pts = index
            video_frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(video_frame))
            writer.add(frame, f"{out_path.name}#{index}")["frame_index"] = index
            truths.append(truth_of(frame))
        container.mux(stream.encode(None))
    coco = writer.result()
    coco["info"] = {
        "video": out_path.name,
        "seed": seed,
        "fps": fps,
        "num_frames": num_frames,
        "keyframe_interval": gop,
    }
    json_path = out_path.with_suffix(".json")
    _write_json(json_path, coco)
    write_mot(mot_path(out_path), truths)
    logger.info("wrote %d frames to %s and %s", num_frames, out_path, json_path)
    return json_path


def _add_h264_stream(
    container: av.container.OutputContainer, width: int, height: int, fps: int, gop: int, crf: int
) -> av.VideoStream:
    """Add a camera-like libx264 stream: fixed GOP, no B-frames, no scene-cut keyframes."""
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    stream.options = {
        "crf": str(crf),
        "preset": "veryfast",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
    }
    return stream
