"""What one ``camdet bench`` run does: its modes, clip, repository tuning and settings.

:class:`BenchConfig` is filled from the ``camdet bench`` options by
:func:`config_from_options` (the options themselves are the typer command in
:mod:`camdet.perf.cli`), or built directly by tests.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camdet.perf.frames import DEFAULT_SIZES, parse_size
from camdet.perf.measurement import Window

BENCH_MODES = ("ours", "naive", "bare", "video", "segment")
DEFAULT_MODES = ("ours", "naive", "bare")
VIDEO_MODES = ("video", "segment")
"""Modes that send a camera clip's access units; with one of them every mode uses that
clip's frames (``ours``/``naive``/``bare`` as JPEGs, quality 90), so all compare alike."""


@dataclass(frozen=True)
class VideoClip:
    """The synthetic camera clip of the video modes.

    Attributes:
        size: (width, height) in pixels.
        frames: Access units in the clip, a whole number of GOPs, so a camera that loops
            it starts again at a keyframe.
        gop: Frames per keyframe interval (a 30 fps camera's usual one second).
        codec: ``"h264"`` or ``"hevc"`` (no B-frames, as cameras stream).
        segment_batches: GOP segments per run of the DALI segment decoder.
        keyframes_in_step: Every camera's keyframe in the same frame slot (as the bench
            sent them until session 22); by default they are spread over the GOP, as
            independent cameras' are (:meth:`camdet.perf.measurement.LoadPoint.lead_in`).
    """

    size: tuple[int, int] = (1920, 1080)
    frames: int = 60
    gop: int = 30
    codec: str = "h264"
    segment_batches: tuple[int, ...] = (8,)
    keyframes_in_step: bool = False

    def __post_init__(self) -> None:
        if self.codec not in ("h264", "hevc"):
            raise ValueError(f"codec must be h264 or hevc, got {self.codec!r}")
        if self.gop < 1 or self.frames < self.gop or self.frames % self.gop:
            raise ValueError(
                f"the clip's {self.frames} frames must be a whole number of GOPs of {self.gop}"
            )

    @property
    def keyframe_spread(self) -> int:
        """The video load points' ``gop``: frames the keyframes spread over, 0 in step."""
        return 0 if self.keyframes_in_step else self.gop


@dataclass
class Tuning:
    """Overrides applied to a copy of the repository before the bench starts its server.

    Attributes:
        instances: Instance count per model (a GPU group without a GPU becomes CPU).
        queue_delay_us: ``max_queue_delay_microseconds`` per model.
        preferred_batch: ``preferred_batch_size`` per model.
        parameters: Config ``parameters`` per model (e.g. the portable detector's
            ``intra_op_threads``, preprocess's ``num_threads``).
        detector_onnx: Another ``model.onnx`` for the detector.
    """

    instances: dict[str, int] = field(default_factory=dict)
    queue_delay_us: dict[str, int] = field(default_factory=dict)
    preferred_batch: dict[str, list[int]] = field(default_factory=dict)
    parameters: dict[str, dict[str, str]] = field(default_factory=dict)
    detector_onnx: Path | None = None

    def is_empty(self) -> bool:
        """Whether nothing is overridden."""
        return not any(asdict(self).values())


@dataclass
class BenchConfig:
    """Everything one bench run does (the CLI fills it; tests build it directly).

    Attributes:
        url: gRPC endpoint of a running server; None starts one from ``repository``.
        repository: Production model repository (detector ONNX for the bare loop too).
        out_dir: Where the input data, JSON, CSV, PNG and server log go.
        input_data: perf_analyzer JSON of the ensemble to read frames from; None writes
            one from synthetic frames into ``out_dir``.
        frames: Synthetic frames to generate when ``input_data`` is None.
        sizes: (width, height) of the synthetic cameras, pixels.
        seed: Scene seed.
        modes: Subset of ``ours``, ``naive``, ``bare``, ``video`` (access units to
            ``detect_video``) and ``segment`` (DALI's video decoder on GOP segments, in
            process; needs a GPU).
        cameras: Camera counts of the capacity sweep (back-to-back requests).
        rates: (cameras, fps per camera) points at fixed rates.
        window: Warm-up and measured seconds per point.
        warmup_run: Before the first repeat, run every mode unmeasured (each server
            pipeline at its most cameras for ``window.warmup_s``, every bare loop for a
            few batches), so the first-run costs (lazy imports, the server's first batch
            of each size, ONNX Runtime's and DALI's first runs) stay out of repeat 0.
        processes: Client worker processes per point (0: threads of this process).
        shm: Input transports to measure (``none``, ``system``, ``cuda``).
        bare_batches: Batch sizes of the bare loop.
        bare_preprocess: Its decode + letterbox: ``opencv`` (the project's reference)
            and/or ``dali`` (the production pipeline in-process).
        bare_dali_device: CUDA device of the bare loop's DALI pipeline (None: CPU).
        runner: Detector runner of the bare loop (:mod:`camdet.runtime.runners`).
        runner_threads: Its threads (None: one per core).
        repeats: Times the whole sequence is repeated (interleaved).
        ratio_cameras: Camera count of the headline ratios.
        server_mode: ``auto``, ``portable`` or ``container`` when starting a server.
        tuning: Repository overrides for a server the bench starts.
        server_env: Extra environment of a server the bench starts (e.g.
            ``OMP_NUM_THREADS=1`` for the torch inside its Python-backend models).
        torch_threads: torch intra-op threads of the client side (bare loop, naive
            clients' NMS); None keeps torch's default.
        plot: Whether to write the PNG (needs matplotlib).
        video: The camera clip of the video modes.
    """

    url: str | None = None
    repository: Path = Path("model_repository")
    out_dir: Path = Path("bench-out")
    input_data: Path | None = None
    frames: int = 16
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    seed: int = 0
    modes: tuple[str, ...] = DEFAULT_MODES
    cameras: tuple[int, ...] = (1, 2, 4, 8)
    rates: tuple[tuple[int, float], ...] = ()
    window: Window = field(default_factory=Window)
    warmup_run: bool = True
    processes: int = 1
    shm: tuple[str, ...] = ("none",)
    bare_batches: tuple[int, ...] = (1, 4)
    bare_preprocess: tuple[str, ...] = ("opencv",)
    bare_dali_device: int | None = None
    runner: str = "onnxruntime"
    runner_threads: int | None = None
    repeats: int = 1
    ratio_cameras: int = 4
    server_mode: str = "auto"
    tuning: Tuning = field(default_factory=Tuning)
    server_env: dict[str, str] = field(default_factory=dict)
    torch_threads: int | None = None
    plot: bool = True
    video: VideoClip = field(default_factory=VideoClip)


# ---------------------------------------------------------------------------- options
# The typer command ``camdet bench`` (camdet.perf.cli) hands its raw values here.


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _rate(text: str) -> tuple[int, float]:
    cameras, _, fps = text.lower().partition("x")
    if not fps:
        raise ValueError(f"rate must look like 4x5 (cameras x fps), got {text!r}")
    return int(cameras), float(fps)


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def default_repository() -> Path:
    """``CAMDET_MODEL_REPOSITORY``, else ``./model_repository``, else the installed one."""
    from camdet.serving.repository import find_repository

    explicit = os.environ.get("CAMDET_MODEL_REPOSITORY")
    return find_repository(Path(explicit) if explicit else None)[0]


def _tuning(options: dict[str, Any]) -> Tuning:
    parameters: dict[str, dict[str, str]] = {}
    for key, value in map(_assignment, options["param"]):
        model, _, name = key.partition(".")
        parameters.setdefault(model, {})[name] = value
    pairs = {k: [_assignment(v) for v in options[k]] for k in ("instances", "queue_delay_us")}
    return Tuning(
        instances={m: int(v) for m, v in pairs["instances"]},
        queue_delay_us={m: int(v) for m, v in pairs["queue_delay_us"]},
        preferred_batch={
            m: list(_int_list(v)) for m, v in map(_assignment, options["preferred_batch"])
        },
        parameters=parameters,
        detector_onnx=options["detector_onnx"],
    )


def config_from_options(options: dict[str, Any]) -> BenchConfig:
    """Turn the ``camdet bench`` options (their raw values, by parameter name) into a config.

    Raises:
        ValueError: If a list, rate, ``KEY=VALUE`` or mode is malformed.
    """
    modes = _names(options["modes"])
    unknown = set(modes) - set(BENCH_MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {BENCH_MODES}")
    if set(modes) & set(VIDEO_MODES) and options["input_data"] is not None:
        raise ValueError("the video modes send a synthetic clip's frames; drop --input-data")
    return BenchConfig(
        url=options["url"],
        repository=options["repository"] or default_repository(),
        out_dir=options["out"],
        input_data=options["input_data"],
        frames=options["frames"],
        sizes=tuple(parse_size(s) for s in _names(options["sizes"])),
        seed=options["seed"],
        modes=modes,
        cameras=_int_list(options["cameras"]),
        rates=tuple(_rate(r) for r in options["rate"]),
        window=Window(options["warmup"], options["duration"]),
        warmup_run=options.get("warmup_run", True),
        processes=options["processes"],
        shm=_names(options["shm"]),
        bare_batches=_int_list(options["bare_batch"]),
        bare_preprocess=_names(options["bare_preprocess"]),
        bare_dali_device=options["bare_dali_device"],
        runner=options["runner"],
        runner_threads=options["runner_threads"],
        repeats=options["repeats"],
        ratio_cameras=options["ratio_cameras"],
        server_mode=options["server_mode"],
        tuning=_tuning(options),
        server_env=dict(map(_assignment, options["server_env"])),
        torch_threads=options["torch_threads"],
        plot=options["plot"],
        video=VideoClip(
            size=parse_size(options["video_size"]),
            frames=options["video_frames"],
            gop=options["gop"],
            codec=options["codec"],
            segment_batches=_int_list(options["segment_batch"]),
            keyframes_in_step=options.get("keyframes_in_step", False),
        ),
    )
