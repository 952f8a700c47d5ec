"""``camdet bench``: our pipeline, the naive one and a bare loop, measured side by side.

    python -m camdet.perf.bench --cameras 1,2,4,8 --rate 4x5 --repeats 3 --out bench-out

In one run, on the same frames (read from a perf_analyzer input-data JSON) and the same
detector, it measures

- **ours**: JPEG frames to the ``detect`` ensemble (server-side decode, letterbox,
  detector, NMS), as a concurrency sweep over cameras and at fixed per-camera rates;
- **naive**: OpenCV decode + letterbox on the client, raw FP16 tensors to the
  ``detector`` model alone, NMS on the client, over the same sweep;
- **bare**: no server; decode, the project's letterbox, a detector runner (ONNX Runtime
  here, pluggable) and the project's postprocessing in one loop, per batch size
  (``--bare-preprocess dali`` adds the production DALI pipeline run in-process);

and prints throughput, p50/p90/p99 latency, client (and local server) CPU per frame,
Triton's per-model statistics, and the ratios ours / naive and ours / bare per camera
count, measured and from CPU time per frame (median over ``--repeats``, which interleave
the three in ABBA order so drift on a shared host hits them alike). It writes
``bench.json``, ``bench.csv`` and ``bench.png``.

Without ``--url`` it starts its own server on free ports from ``--repository``, after
applying the ``--instances``/``--queue-delay-us``/``--param``/``--preferred-batch``
overrides to a copy of the repository (the production configs stay untouched). The
options are the typer command ``camdet bench`` (:mod:`camdet.perf.cli`), which
``python -m camdet.perf.bench`` runs too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camdet.perf.frames import DEFAULT_SIZES, parse_size, synthetic_frames
from camdet.perf.load import (
    LoadPoint,
    PointResult,
    ServerProbe,
    Window,
    run_bare,
    run_point,
)
from camdet.perf.stats import best, ratio

if TYPE_CHECKING:
    from camdet.scenes.video import EncodedUnit

logger = logging.getLogger(__name__)

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
    """

    size: tuple[int, int] = (1920, 1080)
    frames: int = 60
    gop: int = 30
    codec: str = "h264"
    segment_batches: tuple[int, ...] = (8,)

    def __post_init__(self) -> None:
        if self.codec not in ("h264", "hevc"):
            raise ValueError(f"codec must be h264 or hevc, got {self.codec!r}")
        if self.gop < 1 or self.frames < self.gop or self.frames % self.gop:
            raise ValueError(
                f"the clip's {self.frames} frames must be a whole number of GOPs of {self.gop}"
            )


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


@dataclass
class BenchReport:
    """The outcome of a run: where, with what, every point, and the ratios."""

    machine: dict[str, Any]
    config: dict[str, Any]
    results: list[PointResult]
    ratios: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Modes that could not run here, with the reason (e.g. ``segment`` without a GPU)."""

    def headline(self, cameras: int, shm: str = "none") -> dict[str, float]:
        """Median ratios at ``cameras`` cameras: ``{"ours/bare": x, "ours/naive": y}``."""
        return {
            r["name"]: r["median"]
            for r in self.ratios
            if r["cameras"] == cameras and r["shm"] == shm
        }


# -------------------------------------------------------------------------- repository


def tuned_repository(source: Path, destination: Path, tuning: Tuning, gpu: bool) -> Path:
    """Copy ``source`` to ``destination`` (replaced) with ``tuning`` applied to its configs.

    Only scheduling fields change (instances, queue delay, preferred batches, config
    parameters) and optionally the detector's ONNX; tensor contracts stay as they are.

    Raises:
        KeyError: If an override names a model that is not in the repository.
    """
    from camdet.serving.repository import read_config, write_config

    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))
    named = [tuning.instances, tuning.queue_delay_us, tuning.preferred_batch, tuning.parameters]
    for model in sorted({m for overrides in named for m in overrides}):
        path = destination / model / "config.pbtxt"
        if not path.exists():
            raise KeyError(f"no model {model!r} in {source}")
        config = read_config(path)
        _apply_tuning(config, model, tuning, gpu)
        write_config(config, path)
        logger.info("tuned %s: %s", model, path)
    if tuning.detector_onnx is not None:
        shutil.copyfile(tuning.detector_onnx, destination / "detector" / "1" / "model.onnx")
    return destination


def _apply_tuning(config: Any, model: str, tuning: Tuning, gpu: bool) -> None:
    """Apply ``tuning``'s overrides of ``model`` to its parsed ``ModelConfig``."""
    from tritonclient.grpc import model_config_pb2 as mc

    if model in tuning.instances:
        for group in config.instance_group:
            group.count = tuning.instances[model]
            if group.kind == mc.ModelInstanceGroup.KIND_GPU and not gpu:
                group.kind = mc.ModelInstanceGroup.KIND_CPU
                del group.gpus[:]
    if model in tuning.queue_delay_us:
        config.dynamic_batching.max_queue_delay_microseconds = tuning.queue_delay_us[model]
    if model in tuning.preferred_batch:
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(tuning.preferred_batch[model])
    for key, value in tuning.parameters.get(model, {}).items():
        config.parameters[key].string_value = value


@contextlib.contextmanager
def bench_server(config: BenchConfig) -> Iterator[ServerProbe]:
    """The server to measure: the one at ``config.url``, or one started here."""
    if config.url is not None:
        yield ServerProbe(config.url)
        return
    from camdet.serving.server import Ports, has_cuda_gpu, serve

    workdir = config.out_dir / "server"
    repository = config.repository
    if not config.tuning.is_empty():
        repository = tuned_repository(
            repository, workdir / "tuned_repository", config.tuning, has_cuda_gpu()
        )
    portable = {"auto": None, "portable": True, "container": False}[config.server_mode]
    with contextlib.ExitStack() as stack:
        with _environment(config.server_env):  # seen by the server process only
            server = stack.enter_context(
                serve(repository, Ports.free(), portable=portable, workdir=workdir)
            )
        logger.info("server ready on %s, log %s", server.grpc_url, server.log_path)
        yield ServerProbe(server.grpc_url, server.process.pid if server.process else None)


@contextlib.contextmanager
def _environment(overrides: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ------------------------------------------------------------------------------- run


def load_frames(config: BenchConfig) -> tuple[list[bytes], Path]:
    """The frames of the run, always read back from an ensemble input-data JSON."""
    from camdet.perf.input_data import read_encoded_frames, write_input_data

    path = config.input_data
    if path is None:
        frames = synthetic_frames(config.frames, config.sizes, config.seed)
        written = write_input_data(
            config.out_dir / "input_data", frames, config.repository, models=("detect",)
        )
        path = written["detect"]
    return read_encoded_frames(path), path


def load_clip(config: BenchConfig) -> tuple[list[bytes], list[EncodedUnit], Path]:
    """The video modes' frames: a clip's JPEGs (read back from input data) and access units.

    Returns:
        (JPEG frames, access units in decode order, the ``detect`` input-data JSON).

    Raises:
        ValueError: If ``config.input_data`` is set: the video modes need the clip.
    """
    from camdet.perf.frames import DEFAULT_QUALITY, EncodedFrame
    from camdet.perf.input_data import read_encoded_frames, write_input_data

    from camdet.scenes import encode_jpeg
    from camdet.scenes.video import scene_clip

    if config.input_data is not None:
        raise ValueError("the video modes send a synthetic clip's frames; drop --input-data")
    clip = config.video
    (width, height), name = clip.size, f"{clip.size[0]}x{clip.size[1]}"
    images, units = scene_clip(config.seed, clip.frames, width, height, clip.codec, clip.gop)
    jpegs = [
        EncodedFrame(f"{name}-{i}", encode_jpeg(f.image, DEFAULT_QUALITY), width, height)
        for i, f in enumerate(images)
    ]
    written = write_input_data(
        config.out_dir / "input_data", jpegs, config.repository, models=("detect",)
    )
    return read_encoded_frames(written["detect"]), units, written["detect"]


def server_points(config: BenchConfig, mode: str) -> list[LoadPoint]:
    """The load points of one server pipeline, in measurement order."""
    points = []
    rates = [(c, None) for c in config.cameras] + list(config.rates)
    for shm in ("none",) if mode == "video" else config.shm:
        points += [
            LoadPoint(mode, c, fps, config.processes, shm, config.torch_threads, config.video.codec)
            for c, fps in rates
        ]
    return points


def run_bench(config: BenchConfig) -> BenchReport:
    """Run every mode (interleaved over repeats) and compute the ratios.

    Returns:
        The report; :func:`write_report` writes it down.
    """
    from camdet.perf.report import machine_info

    config.out_dir.mkdir(parents=True, exist_ok=True)
    if config.torch_threads is not None:
        import torch

        torch.set_num_threads(config.torch_threads)
    units: list[EncodedUnit] = []
    if set(config.modes) & set(VIDEO_MODES):
        frames, units, input_data = load_clip(config)
    else:
        frames, input_data = load_frames(config)
    machine = machine_info()
    logger.info("%d frames from %s", len(frames), input_data)
    skipped = _unavailable_modes(config)
    modes = tuple(m for m in config.modes if m not in skipped)
    for mode, reason in skipped.items():
        logger.warning("%s: skipped: %s", mode, reason)
    loops = {"bare": _bare_loops(config) if "bare" in modes else []}
    loops["segment"] = _segment_loops(config) if "segment" in modes else []
    inputs = {"video": [u.data for u in units], "segment": _segments(units, config.video.gop)}
    results: list[PointResult] = []
    with bench_server(config) as probe:
        for repeat in range(config.repeats):
            # Odd repeats run the modes in reverse (ABBA), so a linear drift of the
            # machine's load cancels out of the ratios' medians.
            for mode in modes if repeat % 2 == 0 else tuple(reversed(modes)):
                sent = inputs.get(mode, frames)
                results += _run_mode(config, mode, sent, probe, loops.get(mode, []), repeat)
    machine["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    settings = {**asdict(config), "input_data": str(input_data), "frame_count": len(frames)}
    return BenchReport(machine, settings, results, side_by_side_ratios(results), skipped=skipped)


def _unavailable_modes(config: BenchConfig) -> dict[str, str]:
    """The modes of ``config`` that cannot run on this machine, with the reason."""
    if "segment" not in config.modes:
        return {}
    from camdet.perf.segment import segment_decoder_available

    reason = segment_decoder_available(config.video.codec, config.bare_dali_device)
    return {} if reason is None else {"segment": reason}


def _segments(units: Sequence[EncodedUnit], gop: int) -> list[bytes]:
    """The clip cut into GOP segments for the segment decoder (none without a clip)."""
    if not units:
        return []
    from camdet.perf.segment import segments

    return segments(units, gop)


def _segment_loops(config: BenchConfig) -> list[Any]:
    """One segment loop per ``--segment-batch``, sharing a decoder and the detector runner."""
    from camdet.perf.segment import SegmentDecoder, SegmentLoop

    from camdet.runtime.runners import make_runner

    onnx = config.tuning.detector_onnx or config.repository / "detector" / "1" / "model.onnx"
    runner = make_runner(config.runner, onnx, config.runner_threads)
    batches = config.video.segment_batches
    decoder = SegmentDecoder(config.video.codec, config.bare_dali_device, max(batches))
    return [SegmentLoop(decoder, runner, batch) for batch in batches]


def _bare_loops(config: BenchConfig) -> list[Any]:
    from camdet.perf.pipelines import BareLoop, DaliPreprocess, opencv_preprocess

    from camdet.runtime.runners import make_runner

    onnx = config.tuning.detector_onnx or config.repository / "detector" / "1" / "model.onnx"
    runner = make_runner(config.runner, onnx, config.runner_threads)
    loops = []
    for name in config.bare_preprocess:
        if name == "opencv":
            preprocess: Any = opencv_preprocess
        elif name == "dali":
            dali_py = config.repository / "preprocess" / "1" / "dali.py"
            threads = os.cpu_count() or 1
            preprocess = DaliPreprocess(
                dali_py, max(config.bare_batches), config.bare_dali_device, threads
            )
        else:
            raise ValueError(f"bare preprocessing must be opencv or dali, got {name!r}")
        loops += [BareLoop(runner, b, preprocess, name) for b in config.bare_batches]
    return loops


def _run_mode(
    config: BenchConfig,
    mode: str,
    frames: Sequence[bytes],
    probe: ServerProbe,
    loops: Sequence[Any],
    repeat: int,
) -> list[PointResult]:
    results = []
    if mode in ("bare", "segment"):
        measure = run_bare
        if mode == "segment":
            from camdet.perf.segment import run_segment_bare  # imports DALI: only when needed

            measure = run_segment_bare
        for loop in loops:
            results.append(replace(measure(frames, loop, config.window), repeat=repeat))
            _log_point(results[-1])
        return results
    for point in server_points(config, mode):
        results.append(
            replace(run_point(probe.url, frames, point, config.window, probe), repeat=repeat)
        )
        _log_point(results[-1])
    return results


def _log_point(result: PointResult) -> None:
    logger.info(
        "rep %d %-24s %7.2f frames/s  p50 %7.1f ms  p99 %7.1f ms  failed %d",
        result.repeat,
        result.label,
        result.throughput_fps,
        result.latency["p50_ms"],
        result.latency["p99_ms"],
        result.failed,
    )


def side_by_side_ratios(results: Sequence[PointResult]) -> list[dict[str, Any]]:
    """Ours / bare and ours / naive per camera count and transport, two ways.

    - ``ours/bare``, ``ours/naive``: measured throughput (bare: its best batch size);
    - ``ours/bare cpu``, ``ours/naive cpu``: CPU milliseconds per frame of the other
      pipeline over ours (clients + server, when the server's CPU was measured), i.e.
      the throughput ratio on a machine whose cores they had to themselves: on a shared
      host the other tenants' load moves throughput far more than CPU time per frame;
    - with the video modes, ``video/ours`` and ``video/ours cpu`` (the same cameras'
      frames as JPEGs) and ``video/segment`` (its best batch), likewise.

    Each ratio is taken within one repeat (the points measured back to back), then
    summarized over repeats as median, min and max.
    """
    per_repeat: dict[tuple[str, int, str], list[float]] = {}
    for repeat in sorted({r.repeat for r in results}):
        for key, value in _repeat_ratios([r for r in results if r.repeat == repeat]):
            per_repeat.setdefault(key, []).append(value)
    rows = []
    for (name, cameras, shm), values in sorted(per_repeat.items()):
        finite = [v for v in values if v == v]
        if finite:
            rows.append(
                {
                    "name": name,
                    "cameras": cameras,
                    "shm": shm,
                    "median": statistics.median(finite),
                    "min": min(finite),
                    "max": max(finite),
                    "repeats": len(finite),
                }
            )
    return rows


def _cpu_ms_per_frame(result: PointResult) -> float:
    """Client + server CPU per frame (the server's is 0 for bare, NaN if unmeasured)."""
    server = 0.0 if result.mode == "bare" else result.server_cpu_ms_per_frame
    return result.client_cpu_ms_per_frame + server


def _repeat_ratios(batch: Sequence[PointResult]) -> Iterator[tuple[tuple[str, int, str], float]]:
    yield from _jpeg_ratios(batch)
    yield from _video_ratios(batch)


def _video_ratios(batch: Sequence[PointResult]) -> Iterator[tuple[tuple[str, int, str], float]]:
    """Ratios of ``video`` to ``ours`` (the clip's frames as JPEGs) and to ``segment``."""
    segment = best(r.throughput_fps for r in batch if r.mode == "segment")
    ours = {r.cameras: r for r in batch if r.mode == "ours" and r.fps is None and r.shm == "none"}
    for video in (r for r in batch if r.mode == "video" and r.fps is None):
        key = (video.cameras, video.shm)
        if video.cameras in ours:
            jpeg = ours[video.cameras]
            yield ("video/ours", *key), ratio(video.throughput_fps, jpeg.throughput_fps)
            yield ("video/ours cpu", *key), ratio(_cpu_ms_per_frame(jpeg), _cpu_ms_per_frame(video))
        yield ("video/segment", *key), ratio(video.throughput_fps, segment)


def _jpeg_ratios(batch: Sequence[PointResult]) -> Iterator[tuple[tuple[str, int, str], float]]:
    bares = [r for r in batch if r.mode == "bare"]
    bare = best(r.throughput_fps for r in bares)
    bare_cpu = min((_cpu_ms_per_frame(r) for r in bares), default=float("nan"))
    naive = {(r.cameras, r.shm): r for r in batch if r.mode == "naive" and r.fps is None}
    for ours in (r for r in batch if r.mode == "ours" and r.fps is None):
        key = (ours.cameras, ours.shm)
        ours_cpu = _cpu_ms_per_frame(ours)
        yield ("ours/bare", *key), ratio(ours.throughput_fps, bare)
        yield ("ours/bare cpu", *key), ratio(bare_cpu, ours_cpu)
        if key in naive:
            yield ("ours/naive", *key), ratio(ours.throughput_fps, naive[key].throughput_fps)
            yield ("ours/naive cpu", *key), ratio(_cpu_ms_per_frame(naive[key]), ours_cpu)


def write_report(report: BenchReport, out_dir: Path, plot: bool = True) -> str:
    """Write ``bench.json``, ``bench.csv`` (and ``bench.png``); return the text summary."""
    from camdet.perf import report as render

    out_dir.mkdir(parents=True, exist_ok=True)
    report.files = {"json": str(out_dir / "bench.json"), "csv": str(out_dir / "bench.csv")}
    if plot:
        report.files["png"] = str(out_dir / "bench.png")
        machine = report.machine
        title = f"{machine['cpu']} x{machine['cores']} cores, GPU: {machine['gpu'] or 'none'}"
        render.write_plot(out_dir / "bench.png", report.results, title)
    render.write_csv(out_dir / "bench.csv", report.results)
    render.write_json(out_dir / "bench.json", asdict(report))
    skipped = [f"{mode}: skipped: {reason}" for mode, reason in report.skipped.items()]
    return "\n\n".join(
        [
            render.results_table(report.results),
            render.model_stats_table([r for r in report.results if r.model_stats]),
            render.ratios_table(report.ratios),
            *skipped,
        ]
    )


# ------------------------------------------------------------------------------- CLI
# The options themselves are the typer command ``camdet bench`` (camdet.perf.cli); these
# helpers turn its raw values into a BenchConfig and run it.


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
        plot=not options["no_plot"],
        video=VideoClip(
            size=parse_size(options["video_size"]),
            frames=options["video_frames"],
            gop=options["gop"],
            codec=options["codec"],
            segment_batches=_int_list(options["segment_batch"]),
        ),
    )


def run_from_cli(config: BenchConfig, require_ratio: float | None, verbose: bool) -> int:
    """Run the bench, print the tables and headline; returns the exit status."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    started = time.time()
    report = run_bench(config)
    print(write_report(report, config.out_dir, config.plot))
    headline = report.headline(config.ratio_cameras)
    summary = ", ".join(f"{k} = {v:.3f}" for k, v in sorted(headline.items()))
    print(f"\nat {config.ratio_cameras} cameras: {summary or 'no ratio measured'}")
    print(f"wrote {', '.join(report.files.values())} in {time.time() - started:.0f} s")
    if require_ratio is not None and not headline.get("ours/bare", 0.0) >= require_ratio:
        print(f"ours/bare below the required {require_ratio}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``camdet bench`` with ``argv`` (``python -m camdet.perf.bench ARGS``); exit status."""
    import click
    import typer.main
    from camdet.perf.cli import bench_app

    command = typer.main.get_command(bench_app)
    try:
        command.main(argv, prog_name="python -m camdet.perf.bench", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
