"""``camdet doctor``'s GPU probes: do the JPEG hardware decoder and NVDEC actually work here?

A GPU's name says whether it *has* a hardware JPEG decoder; only decoding says whether
DALI reaches it through this machine's driver, nvJPEG and nvImageCodec. Each probe
decodes real frames on GPU 0, compares them with a CPU decode, and (for JPEG) times
the hardware path against nvJPEG's CUDA path: on an H100 the hardware path was ~4.6x
faster for 1080p frames at batch 64 (perf/RESULTS.md), so a hardware path no faster
than the CUDA one means the hardware decoder is not being used.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JPEG_BATCH = 32
"""Frames per timed JPEG batch (the hardware decoder's advantage shows at batches)."""
JPEG_RUNS = 5
"""Timed batches per decoder setting, after two untimed ones (decoder start-up)."""
NVDEC_FRAMES = 8
"""Frames of the probe H.264 clip."""
NVDEC_SIZE = (240, 320)
"""Probe clip height, width, pixels."""


@dataclass(frozen=True)
class JpegProbe:
    """JPEG decode with DALI's ``mixed`` decoder on GPU 0.

    Attributes:
        hardware_fps: Frames/s with ``hw_decoder_load=1.0`` (all to the hardware decoder).
        cuda_fps: Frames/s with ``hw_decoder_load=0.0`` (nvJPEG on CUDA cores).
        mean_abs_diff: Mean absolute difference of the hardware-path decode against
            OpenCV's CPU decode of the same frame, 8-bit levels.
        size: (height, width) of the probe frame, pixels.
    """

    hardware_fps: float
    cuda_fps: float
    mean_abs_diff: float
    size: tuple[int, int]

    @property
    def speedup(self) -> float:
        """Hardware path over CUDA path throughput."""
        return self.hardware_fps / self.cuda_fps


def probe_jpeg(jpeg_path: Path, device_id: int = 0) -> JpegProbe:
    """Decode ``jpeg_path`` on the GPU with and without the hardware decoder.

    Args:
        jpeg_path: A baseline JPEG (the repository's warm-up camera frame).
        device_id: CUDA device.

    Raises:
        RuntimeError: DALI could not decode on the GPU (its message names the cause).
    """
    import cv2

    encoded = np.fromfile(jpeg_path, dtype=np.uint8)
    reference = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    rates, decoded = {}, None
    for load in (1.0, 0.0):
        pipe = _jpeg_pipeline(encoded, load, device_id)
        for _ in range(2):
            pipe.run()
        start = time.perf_counter()
        for _ in range(JPEG_RUNS):
            (images,) = pipe.run()
        rates[load] = JPEG_BATCH * JPEG_RUNS / (time.perf_counter() - start)
        if decoded is None:
            decoded = np.asarray(images.as_cpu()[0])
        del pipe
    assert decoded is not None
    diff = float(np.abs(decoded.astype(np.int16) - reference.astype(np.int16)).mean())
    return JpegProbe(rates[1.0], rates[0.0], diff, reference.shape[:2])


def _jpeg_pipeline(encoded: np.ndarray, hw_decoder_load: float, device_id: int):
    """A DALI pipeline decoding the same JPEG ``JPEG_BATCH`` times per run, as preprocess does."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(batch_size=JPEG_BATCH, num_threads=4, device_id=device_id, prefetch_queue_depth=1)
    def decode():
        frames = fn.external_source(source=lambda: [encoded] * JPEG_BATCH, dtype=types.UINT8)
        return fn.decoders.image(
            frames,
            device="mixed",
            output_type=types.RGB,
            hw_decoder_load=hw_decoder_load,
            jpeg_fancy_upsampling=True,
        )

    pipe = decode()
    pipe.build()
    return pipe


@dataclass(frozen=True)
class NvdecProbe:
    """An H.264 clip decoded by NVDEC (the decoder ``preprocess_video`` uses).

    Attributes:
        frames: Frames NVDEC returned (``NVDEC_FRAMES`` expected).
        mean_abs_diff: Mean absolute difference against PyAV's CPU decode, 8-bit levels.
    """

    frames: int
    mean_abs_diff: float


def probe_nvdec(device_id: int = 0) -> NvdecProbe:
    """Encode a small scene clip with libx264 and decode it on NVDEC and with PyAV.

    Raises:
        camdet.steps.video.decoders.VideoDecodeError: NVDEC refused the stream.
    """
    from camdet.scenes.video import scene_clip
    from camdet.steps.video.decoders import NvDecoder, PyAVDecoder

    height, width = NVDEC_SIZE
    _, units = scene_clip(seed=0, num_frames=NVDEC_FRAMES, width=width, height=height)
    gpu, cpu = NvDecoder("h264", device_id), PyAVDecoder("h264")
    gpu_frames, cpu_frames = [], []
    for unit in units:
        data = np.frombuffer(unit.data, dtype=np.uint8)
        gpu_frames += gpu.decode(data, unit.pts)
        cpu_frames += cpu.decode(data, unit.pts)
    gpu_frames += gpu.flush()
    cpu_frames += cpu.flush()
    gpu.close()
    cpu.close()
    pairs = list(zip(gpu_frames, cpu_frames, strict=False))
    diffs = [
        np.abs(g.image.cpu().numpy().astype(np.int16) - c.image.astype(np.int16)).mean()
        for g, c in pairs
    ]
    return NvdecProbe(len(gpu_frames), float(np.mean(diffs)) if diffs else float("nan"))


def process_facts(device_id: int) -> str:
    """What a Triton stub may inherit that a plain process lacks, in words.

    The primary CUDA context's scheduling flag (how a host thread waits for the GPU), the
    cores this process may run on, its niceness and scheduling policy.
    """
    from camdet.runtime.cuda_schedule import schedule_of

    try:
        schedule, active = schedule_of(device_id)
    except OSError:
        schedule, active = "unknown", False
    return (
        f"CUDA schedule {schedule} (context active: {active}), "
        f"{len(os.sched_getaffinity(0))} cores allowed, nice {os.nice(0)}, "
        f"scheduler {os.sched_getscheduler(0)}"
    )
