"""Frames to what the page shows: downscaled, annotated (boxes, labels, tracks, count line), JPEG.

The drawing is :func:`camdet.client.sinks.annotate`, the annotated videos' own; here the
frame is first scaled down to the page's width, so drawing and encoding cost little, and
the detections and the count line are scaled with it.

H.264/HEVC cameras whose access units pass through undecoded have no pixels on this
machine: :class:`AccessUnitDecoder` decodes them, only while someone watches the camera.
It starts at a keyframe and starts again at the next one after a gap (a frame that
failed, a real-time drop, a reconnect), so it never shows a corrupt picture.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import av
import cv2
import numpy as np
from camdet.client.demux import AccessUnit
from camdet.client.sinks import annotate

from camdet.contract import Detection
from camdet.scenes.jpeg import encode_jpeg
from camdet.tracking.lines import CountLine

logger = logging.getLogger(__name__)

_DECODERS = {"h264": "h264", "hevc": "hevc"}


def render(
    image_rgb: np.ndarray,
    detections: list[Detection],
    max_width: int,
    count_line: CountLine | None = None,
    counts: Mapping[str, int] | None = None,
    quality: int = 75,
) -> bytes:
    """The frame at most ``max_width`` pixels wide, annotated, as JPEG bytes.

    Args:
        image_rgb: ``[H, W, 3]`` uint8 RGB frame.
        detections: Its detections, boxes in the frame's pixels.
        max_width: Widest picture sent to the page, pixels (narrower frames keep theirs).
        count_line: The camera's count line in frame pixels, or None.
        counts: Its crossings so far (``in``, ``out``).
        quality: JPEG quality, 1-100.
    """
    height, width = image_rgb.shape[:2]
    scale = min(1.0, max_width / width)
    if scale < 1.0:
        size = (round(width * scale), round(height * scale))
        image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
        detections = [replace(d, box=tuple(v * scale for v in d.box)) for d in detections]
        if count_line is not None:
            count_line = CountLine(
                count_line.x1 * scale,
                count_line.y1 * scale,
                count_line.x2 * scale,
                count_line.y2 * scale,
                count_line.margin,
            )
    return encode_jpeg(annotate(image_rgb, detections, count_line, counts), quality)


class AccessUnitDecoder:
    """Decodes one camera's access units, in order, into RGB pictures.

    Feed every access unit the camera answers (:meth:`decode`); pictures come back keyed
    by the ``key`` they were fed with (decoders may hold pictures back to reorder them).
    """

    def __init__(self) -> None:
        self._context: av.CodecContext | None = None
        self._codec: str | None = None
        self._last_key: int | None = None

    def reset(self) -> None:
        """Forget the stream: the next picture decoded is the next keyframe's."""
        self._context = None
        self._last_key = None

    def decode(self, unit: AccessUnit, key: int) -> list[tuple[int, av.VideoFrame]]:
        """Decode one access unit; the pictures that came out, with their keys.

        Args:
            unit: The next access unit.
            key: Its capture index: a key that does not follow the previous one is a gap,
                and decoding waits for a keyframe.
        """
        if self._last_key is not None and key != self._last_key + 1:
            self.reset()
        if self._context is None or self._codec != unit.codec:
            if not unit.keyframe:
                return []
            self._context = av.CodecContext.create(_DECODERS[unit.codec], "r")
            self._context.thread_count = 1  # no frame threading: no extra pictures of delay
            self._codec = unit.codec
        self._last_key = key
        packet = av.Packet(unit.data)
        packet.pts = key
        try:
            return [(frame.pts, frame) for frame in self._context.decode(packet)]
        except av.FFmpegError as error:
            logger.debug("view: cannot decode a %s access unit: %s", unit.codec, error)
            self.reset()
            return []
