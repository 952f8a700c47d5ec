"""Synthetic camera clips with exact ground truth: real H.264/HEVC MP4s, no mocks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from camdet.scenes import Frame, coco_targets, write_clip

CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS = 640, 360, 10
CLIP_FRAMES = 150  # 15 s; a camera that reaches the end reconnects and starts again


@dataclass(frozen=True)
class Clip:
    """A synthetic camera clip and its ground truth per frame index.

    Attributes:
        path: The MP4.
        truths: Ground truth per frame, in presentation order.
        display: Presentation index of each packet in decode order, for clips with
            B-frames (None: the orders agree).
        codec: ``"h264"`` or ``"hevc"``.
    """

    path: Path
    truths: list[tuple[np.ndarray, np.ndarray]]
    display: tuple[int, ...] | None = None
    codec: str = "h264"

    @property
    def rtsp_source(self) -> str:
        """The clip as ``rtsp_server.py --clip`` takes it: ``PATH`` (H.264) or ``hevc:PATH``."""
        return str(self.path) if self.codec == "h264" else f"{self.codec}:{self.path}"

    def frame(self, position: int) -> Frame:
        """Ground truth (boxes xyxy in clip pixels, class ids) of a frame, looping.

        ``position`` counts frames as the source delivers them: decoded frames in
        presentation order, passed-through access units in decode order.
        """
        index = position % len(self.truths)
        if self.display is not None:
            index = self.display[index]
        boxes, class_ids = self.truths[index]
        return Frame(np.empty((0, 0, 3), np.uint8), boxes, class_ids)


def make_clips(folder: Path, seeds: Iterable[int], frames: int = CLIP_FRAMES) -> list[Clip]:
    """Write (or reuse) one H.264 clip per seed in ``folder``."""
    clips = []
    for seed in seeds:
        path = folder / f"clip{seed}_{frames}.mp4"
        json_path = path.with_suffix(".json")
        if not json_path.exists():
            write_clip(path, seed, frames, CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS)
        clips.append(Clip(path, coco_targets(json.loads(json_path.read_text()))))
    return clips


def transcode_clip(clip: Clip, codec: str, bframes: int = 0) -> Clip:
    """The clip re-encoded (``"h264"``/``"hevc"``), same frames and GOP, maybe B-frames.

    The new clip's ground truth is the source's: the frames are the same pictures.
    """
    path = clip.path.with_name(f"{clip.path.stem}_{codec}_b{bframes}.mp4")
    encoder, params = {"h264": ("libx264", "x264-params"), "hevc": ("libx265", "x265-params")}[
        codec
    ]
    if not path.exists():
        with av.open(str(clip.path)) as source, av.open(str(path), "w") as sink:
            stream = sink.add_stream(encoder, rate=CLIP_FPS)
            stream.width, stream.height, stream.pix_fmt = CLIP_WIDTH, CLIP_HEIGHT, "yuv420p"
            gop = f"keyint={CLIP_FPS}:min-keyint={CLIP_FPS}:scenecut=0:bframes={bframes}"
            stream.options = {"preset": "ultrafast", "crf": "20", params: gop}
            if codec == "hevc":
                stream.options[params] += ":log-level=error"
            for index, frame in enumerate(source.decode(video=0)):
                picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"))
                picture.pts, picture.time_base = index, Fraction(1, CLIP_FPS)
                sink.mux(stream.encode(picture))
            sink.mux(stream.encode(None))
    return Clip(path, clip.truths, decode_order_display(path), codec)


def decode_order_display(path: Path) -> tuple[int, ...] | None:
    """Presentation index of each packet in decode order (None: no reordering)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.size]
    rank = {value: index for index, value in enumerate(sorted(pts))}
    order = tuple(rank[value] for value in pts)
    return None if order == tuple(range(len(order))) else order


def damaged_clip(clip: Clip, skip_first: int, corrupt: Iterable[int]) -> Clip:
    """The clip remuxed without its first packets and with some packets' NAL units broken.

    The result starts mid-GOP (no keyframe for ``skip_first`` < GOP packets) and the
    packets at positions ``corrupt`` (in the new clip) carry a NAL header with the
    forbidden bit set: the undecodable bytes a damaged network packet leaves.
    """
    corrupt = set(corrupt)
    path = clip.path.with_name(f"{clip.path.stem}_damaged.mp4")
    with av.open(str(clip.path)) as source, av.open(str(path), "w") as sink:
        stream = sink.add_stream_from_template(source.streams.video[0])
        packets = [p for p in source.demux(source.streams.video[0]) if p.size]
        for position, packet in enumerate(packets[skip_first:]):
            data = bytes(packet)
            if position in corrupt:
                data = data[:4] + bytes([0x80 | data[4]]) + bytes(len(data) - 5)
            damaged = av.Packet(data)
            damaged.pts, damaged.dts = packet.pts, packet.dts
            damaged.time_base, damaged.stream = packet.time_base, stream
            damaged.is_keyframe = packet.is_keyframe
            sink.mux(damaged)
    truths = clip.truths[skip_first : len(packets)]
    return Clip(path, truths)
