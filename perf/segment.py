"""The DALI segment decoder of issue 11: a camera's stream decoded one GOP at a time.

``detect_video`` keeps one persistent decoder per camera and feeds it an access unit per
request. The alternative measured here hands DALI's video decoder a whole GOP at once - one
in-memory segment of concatenated Annex-B access units (30 at a 30 fps camera's usual
one-second GOP) - and the decoder opens a session per segment: about 0.115 s each on an
H100's NVDEC, which held it to 256-296 frames/s. It runs as a bare in-process loop
(:class:`SegmentLoop`, measured by :func:`run_segment_bare`): no server, so an upper bound
for a served segment model, which makes the comparison conservative.

Decoding and letterboxing are two DALI pipelines. The decoder (``fn.decoders.video``, of
which ``fn.experimental.decoders.video`` is DALI 2.4's deprecated alias) yields one
``[F, H, W, 3]`` sequence per segment, while the shared letterbox
(:func:`camdet.steps.preprocess.graphs.letterbox`, run by
:class:`camdet.steps.video.letterbox.VideoLetterbox`
as ``detect_video``'s preprocess runs it) reads each sample's height and width, so it needs
one frame per sample - and a DALI pipeline cannot turn a sequence into a batch of frames.
The frames cross between the two on their device (a device-to-device copy on a GPU).

DALI 2.4's CPU decoder (``device_id`` None) decodes VP8, VP9 and MJPEG only; H.264 and HEVC
need the GPU ("mixed") one: :func:`segment_decoder_available` says so before anything runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from camdet.perf.load import run_bare
from camdet.perf.measurement import BarePoint, PointResult, Window
from camdet.perf.pipelines import postprocess_raw
from nvidia.dali import pipeline_def

from camdet.contract import FrameDetections
from camdet.runtime.runners import DetectorRunner
from camdet.scenes.video import EncodedUnit
from camdet.steps.video.letterbox import VideoLetterbox

logger = logging.getLogger(__name__)

SEGMENTS = "segments"
"""Name of the decoder pipeline's ``external_source``."""

CODEC_NAMES: dict[str, str] = {
    "h264": "H.264",
    "hevc": "HEVC",
    "av1": "AV1",
    "mpeg4": "MPEG-4",
    "vp8": "VP8",
    "vp9": "VP9",
    "mjpeg": "MJPEG",
}
"""The codecs DALI's video decoder takes (FFmpeg names -> names for people)."""

CPU_CODECS: frozenset[str] = frozenset({"vp8", "vp9", "mjpeg"})
"""The codecs DALI 2.4's CPU video decoder decodes (the GPU one decodes them all).

Its documentation says so, and ``tests/test_segment.py`` checks H.264, HEVC and MJPEG
against DALI itself, so an upgrade that changes it fails a test.
"""


class SegmentDecoderUnavailableError(RuntimeError):
    """DALI cannot decode the codec on the requested device (the message says why)."""


def segment_decoder_available(codec: str, device_id: int | None) -> str | None:
    """Whether the segment decoder can decode ``codec`` there, before building anything.

    Args:
        codec: FFmpeg codec name, e.g. ``"h264"``.
        device_id: CUDA device of the decoder, or None for DALI's CPU decoder.

    Returns:
        None if it can; else one sentence saying why not, for the bench to print as the
        reason the ``segment`` mode was skipped.
    """
    if codec not in CODEC_NAMES:
        known = ", ".join(CODEC_NAMES)
        return f"DALI's video decoder cannot decode {codec!r}; it decodes {known}"
    if device_id is None and codec not in CPU_CODECS:
        return (
            f"DALI's CPU video decoder cannot decode {CODEC_NAMES[codec]}; "
            "the segment decoder needs a GPU (mixed)"
        )
    return None


def segments(units: Sequence[EncodedUnit], gop: int) -> list[bytes]:
    """Cut a stream's access units into segments of ``gop`` units, each from a keyframe.

    Args:
        units: Access units in decode order (Annex-B bytes for H.264/HEVC), starting at a
            keyframe.
        gop: Access units per segment: the stream's keyframe interval or a multiple of
            it. The last segment holds what is left (fewer units).

    Returns:
        Each segment's units concatenated, one decodable stream each.

    Raises:
        ValueError: If ``gop`` < 1, or a segment would not start with a keyframe (the
            decoder could not decode its first frames).
    """
    if gop < 1:
        raise ValueError(f"gop must be >= 1 access unit, got {gop}")
    cut = []
    for start in range(0, len(units), gop):
        first = units[start]
        if not first.keyframe:
            raise ValueError(
                f"segment {start // gop} would start at access unit {start} (pts {first.pts}), "
                f"which is not a keyframe: the units must start at a keyframe and gop ({gop}) "
                "must be a multiple of the stream's keyframe interval"
            )
        cut.append(b"".join(unit.data for unit in units[start : start + gop]))
    return cut


@pipeline_def
def segment_pipeline(decoder_device: str = "cpu"):
    """DALI's video decoder over in-memory segments fed by :meth:`SegmentDecoder.decode`.

    Args:
        decoder_device: ``"cpu"`` (FFmpeg) or ``"mixed"`` (NVDEC, frames on the GPU).

    Returns:
        ``[F, H, W, 3]`` uint8 RGB frames of each segment, in presentation order.
    """
    encoded = fn.external_source(name=SEGMENTS, dtype=types.UINT8, ndim=1)
    return fn.decoders.video(encoded, device=decoder_device)


class SegmentDecoder:
    """Segments -> letterboxed frames: DALI's video decoder, then the shared letterbox.

    Attributes:
        device: Where the decoder runs: ``"cpu"`` or ``"mixed"``.
        max_segments: Most segments per call.
        max_frames: Most frames per letterbox run (more are letterboxed in chunks).
    """

    def __init__(
        self,
        codec: str,
        device_id: int | None,
        max_segments: int = 1,
        max_frames: int = 64,
        num_threads: int | None = None,
    ) -> None:
        """Build both pipelines once.

        Args:
            codec: The segments' codec (FFmpeg name), to refuse what DALI cannot decode.
            device_id: CUDA device (the GPU decoder and letterbox), or None for the CPU.
            max_segments: Most segments per call, decoded in parallel.
            max_frames: Frames per letterbox run.
            num_threads: DALI CPU threads (None: one per core).

        Raises:
            SegmentDecoderUnavailableError: If DALI cannot decode ``codec`` on that device.
        """
        reason = segment_decoder_available(codec, device_id)
        if reason is not None:
            raise SegmentDecoderUnavailableError(reason)
        if min(max_segments, max_frames) < 1:
            raise ValueError(
                f"max_segments and max_frames must be >= 1: {max_segments}, {max_frames}"
            )
        threads = num_threads or os.cpu_count() or 1
        self.device = "cpu" if device_id is None else "mixed"
        self.max_segments = max_segments
        self.max_frames = max_frames
        self.pipe = segment_pipeline(
            batch_size=max_segments,
            num_threads=threads,
            device_id=device_id,
            decoder_device=self.device,
            prefetch_queue_depth=1,
        )
        self.pipe.build()
        self.letterbox = VideoLetterbox(max_frames, threads, device_id)
        logger.info(
            "segment decoder: DALI %s video decoder (%s), %d segments and %d frames per run",
            self.device,
            codec,
            max_segments,
            max_frames,
        )

    def decode(self, encoded: Sequence[bytes]) -> list[Any]:
        """Decode segments to their frames.

        Args:
            encoded: At most :attr:`max_segments` segments (see :func:`segments`).

        Returns:
            ``[H, W, 3]`` uint8 RGB frames of all segments in order, in presentation order
            within each: numpy arrays on the CPU, torch CUDA tensors on a GPU. They are
            views of DALI's buffers, valid until the next call.

        Raises:
            ValueError: If there are no segments or more than :attr:`max_segments`.
            RuntimeError: DALI's error for a segment it cannot open or decode; the
                pipeline is unusable afterwards (DALI's rule), so build a new decoder.
        """
        if not 1 <= len(encoded) <= self.max_segments:
            raise ValueError(f"{len(encoded)} segments: 1 to {self.max_segments} per call")
        self.pipe.feed_input(SEGMENTS, [np.frombuffer(data, dtype=np.uint8) for data in encoded])
        (sequences,) = self.pipe.run()
        return [frame for i in range(len(sequences)) for frame in _view(sequences[i])]

    def __call__(self, encoded: Sequence[bytes]) -> tuple[Any, list[tuple[int, int]]]:
        """Decode and letterbox segments.

        Returns:
            ``[N, 3, INPUT_HEIGHT, INPUT_WIDTH]`` FP16 letterboxed frames in [0, 1] (numpy
            on the CPU, a torch CUDA tensor on a GPU; owned by the caller) and the
            ``(height, width)`` in pixels of each decoded frame, N being every frame of
            every segment.
        """
        frames = self.decode(encoded)
        sizes = [(int(frame.shape[0]), int(frame.shape[1])) for frame in frames]
        images = [
            self.letterbox.run(frames[start : start + self.max_frames])[0]
            for start in range(0, len(frames), self.max_frames)
        ]
        return _concatenate(images), sizes


def _view(sequence: Any) -> Any:
    """A DALI ``[F, H, W, 3]`` output as numpy or torch, without a copy."""
    if sequence.__dlpack_device__()[0] == 2:  # kDLCUDA
        import torch

        return torch.from_dlpack(sequence)
    return np.asarray(sequence)


def _concatenate(chunks: list[Any]) -> Any:
    """Join letterbox outputs along the batch axis (a single chunk is returned as is)."""
    if len(chunks) == 1:
        return chunks[0]
    if isinstance(chunks[0], np.ndarray):
        return np.concatenate(chunks)
    import torch

    return torch.cat(chunks)


class SegmentLoop:
    """segment: DALI-decoded GOP segments, a detector runner and postprocessing, here.

    Shaped like :class:`camdet.perf.pipelines.BareLoop`, with segments for frames.

    Attributes:
        decoder: The segment decoder (its ``max_segments`` bounds ``batch_size``).
        runner: The detector runner.
        batch_size: Segments per decoder run.
        detector_batch: Most frames per detector run (a 30-frame GOP fits 32 at once).
        preprocess_name: ``"dali-mixed"`` or ``"dali-cpu"``, for reports.
    """

    def __init__(
        self,
        decoder: SegmentDecoder,
        runner: DetectorRunner,
        batch_size: int = 1,
        detector_batch: int = 32,
    ) -> None:
        if not 1 <= batch_size <= decoder.max_segments or detector_batch < 1:
            raise ValueError(
                f"batch size must be 1 to {decoder.max_segments} segments, got {batch_size}; "
                f"detector batch must be >= 1 frame, got {detector_batch}"
            )
        self.decoder = decoder
        self.runner = runner
        self.batch_size = batch_size
        self.detector_batch = detector_batch
        self.preprocess_name = f"dali-{decoder.device}"

    def detect_batch(self, encoded: Sequence[bytes]) -> list[FrameDetections]:
        """Detect in every frame of at most :attr:`batch_size` segments, in order."""
        images, sizes = self.decoder(encoded)
        found: list[FrameDetections] = []
        for start in range(0, len(sizes), self.detector_batch):
            stop = start + self.detector_batch
            part = images[start:stop]
            found += postprocess_raw(self.runner(part), sizes[start:stop], part)
        return found

    def detect(self, encoded: Sequence[bytes]) -> list[FrameDetections]:
        """Detect in every frame of any number of segments, :attr:`batch_size` at a time."""
        found: list[FrameDetections] = []
        for start in range(0, len(encoded), self.batch_size):
            found += self.detect_batch(encoded[start : start + self.batch_size])
        return found


@dataclass(frozen=True)
class SegmentPoint(BarePoint):
    """A :class:`BarePoint` of the segment loop: ``batch`` counts segments per run."""

    mode: str = "segment"

    @property
    def label(self) -> str:
        """E.g. ``"segment dali-mixed batch 8"``."""
        return f"segment {self.preprocess} batch {self.batch}"


def run_segment_bare(encoded: Sequence[bytes], loop: SegmentLoop, window: Window) -> PointResult:
    """Measure a :class:`SegmentLoop` with :func:`camdet.perf.load.run_bare`.

    Segments go through back to back, ``loop.batch_size`` at a time, looping over
    ``encoded``; throughput counts decoded frames, and each frame's latency is its batch's
    time (its segment's, at batch 1).

    Raises:
        RuntimeError: If the window holds fewer than two batch boundaries.
    """
    return run_bare(encoded, loop, window, SegmentPoint(loop.batch_size, loop.preprocess_name))
