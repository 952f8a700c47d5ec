"""One ``camdet bench`` run: the frames, every mode's points in ABBA order, the report.

:func:`run_bench` measures; :func:`write_report` writes ``bench.json``, ``bench.csv`` and
``bench.png``; :func:`run_from_cli` does both for the command line and prints the headline.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camdet.perf.bench_config import VIDEO_MODES, BenchConfig
from camdet.perf.bench_server import bench_server
from camdet.perf.frames import synthetic_frames
from camdet.perf.load import ServerProbe, run_bare, run_point
from camdet.perf.measurement import LoadPoint, PointResult, Window
from camdet.perf.ratios import side_by_side_ratios

if TYPE_CHECKING:
    from camdet.scenes.video import EncodedUnit

logger = logging.getLogger(__name__)


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
    warmup: dict[str, Any] = field(default_factory=dict)
    """The unmeasured warm-up run before repeat 0 (:func:`warm_up`); empty without one."""

    def headline(self, cameras: int, shm: str = "none") -> dict[str, float]:
        """Median ratios at ``cameras`` cameras: ``{"ours/bare": x, "ours/naive": y}``."""
        return {
            r["name"]: r["median"]
            for r in self.ratios
            if r["cameras"] == cameras and r["shm"] == shm
        }


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
        points += [_point(config, mode, c, fps, shm) for c, fps in rates]
    return points


def _point(config: BenchConfig, mode: str, cameras: int, fps: float | None, shm: str) -> LoadPoint:
    """One of the config's load points (video: its keyframes spread as the clip says)."""
    gop = config.video.keyframe_spread if mode == "video" else 0
    return LoadPoint(
        mode, cameras, fps, config.processes, shm, config.torch_threads, config.video.codec, gop
    )


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
    warmup: dict[str, Any] = {}
    with bench_server(config) as probe:
        if config.warmup_run:
            warmup = warm_up(config, modes, frames, inputs, probe, loops)
        for repeat in range(config.repeats):
            # Odd repeats run the modes in reverse (ABBA), so a linear drift of the
            # machine's load cancels out of the ratios' medians.
            for mode in modes if repeat % 2 == 0 else tuple(reversed(modes)):
                sent = inputs.get(mode, frames)
                results += _run_mode(config, mode, sent, probe, loops.get(mode, []), repeat)
    machine["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    settings = {**asdict(config), "input_data": str(input_data), "frame_count": len(frames)}
    ratios = side_by_side_ratios(results)
    return BenchReport(machine, settings, results, ratios, skipped=skipped, warmup=warmup)


WARMUP_BATCHES = 2
"""Batches each bare (or segment) loop runs in the warm-up run."""


def warm_up(
    config: BenchConfig,
    modes: Sequence[str],
    frames: Sequence[bytes],
    inputs: dict[str, list[bytes]],
    probe: ServerProbe,
    loops: dict[str, list[Any]],
) -> dict[str, Any]:
    """The warm-up run: every mode once, unmeasured, before repeat 0.

    On a fresh server and a fresh bench process the first frames pay one-time costs: the
    Python backend steps' lazy imports (``validate`` and ``postprocess`` have no
    ``model_warmup``), the first batch of each size through DALI and ONNX Runtime, and in
    the bare loop the first decode, letterbox and postprocess (torch's first operations;
    seconds on 2 cores). The per-point warm-up (``--warmup``) is too short to absorb
    them at few cameras, so without this repeat 0 runs slower than the others. Each
    server pipeline runs its largest camera count (so the dynamic batcher forms every
    batch size the points will) for ``window.warmup_s`` seconds (at least 1), each loop
    :data:`WARMUP_BATCHES` batches; nothing of it enters the results or the ratios.

    Returns:
        What ran: ``{"seconds": total, "points": [{"label", "seconds", "frames"}]}``.
    """
    started = time.time()
    ran: list[dict[str, Any]] = []
    seconds = max(1.0, config.window.warmup_s)
    for mode in modes:
        if mode in ("bare", "segment"):
            sent = inputs.get(mode, frames)
            for loop in loops.get(mode, []):
                t0, count = time.time(), 0
                for index in range(WARMUP_BATCHES):
                    batch = [sent[(index * loop.batch_size + i) % len(sent)]
                             for i in range(loop.batch_size)]  # fmt: skip
                    count += len(loop.detect_batch(batch))
                label = getattr(loop, "label", None) or _loop_label(mode, loop)
                ran.append(_warmup_entry(label, time.time() - t0, count))
            continue
        cameras = max([*config.cameras, *(c for c, _ in config.rates)])
        for shm in {p.shm: None for p in server_points(config, mode)}:
            point = _point(config, mode, cameras, None, shm)
            t0 = time.time()
            result = run_point(
                probe.url, inputs.get(mode, frames), point, Window(0.0, seconds), probe
            )
            ran.append(
                _warmup_entry(result.label, time.time() - t0, result.completed + result.held)
            )
    for entry in ran:
        logger.info("warm-up (not measured) %-24s %5.1f s  %d frames", *entry.values())
    return {"seconds": round(time.time() - started, 1), "points": ran}


def _loop_label(mode: str, loop: Any) -> str:
    if mode == "bare":
        return f"bare {getattr(loop, 'preprocess_name', 'opencv')} batch {loop.batch_size}"
    return f"{mode} batch {loop.batch_size}"


def _warmup_entry(label: str, seconds: float, frames: int) -> dict[str, Any]:
    return {"label": label, "seconds": round(seconds, 1), "frames": frames}


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


def write_report(report: BenchReport, out_dir: Path, plot: bool = True) -> str:
    """Write ``bench.json``, ``bench.csv`` (and ``bench.png``); return the text summary."""
    from camdet.perf import report as render

    out_dir.mkdir(parents=True, exist_ok=True)
    report.files = {"json": str(out_dir / "bench.json"), "csv": str(out_dir / "bench.csv")}
    if plot:
        report.files["png"] = str(out_dir / "bench.png")
        machine = report.machine
        title = f"{machine['cpu']} x{machine['cores']} cores, GPU: {machine['gpu'] or 'none'}"
        render.write_plot(out_dir / "bench.png", report.results, title, report.ratios)
    render.write_csv(out_dir / "bench.csv", report.results)
    render.write_json(out_dir / "bench.json", asdict(report))
    skipped = [f"{mode}: skipped: {reason}" for mode, reason in report.skipped.items()]
    return "\n\n".join(
        [
            warmup_line(report.warmup),
            render.results_table(report.results),
            render.model_stats_table([r for r in report.results if r.model_stats]),
            render.ratios_table(report.ratios),
            *skipped,
        ]
    )


def warmup_line(warmup: dict[str, Any]) -> str:
    """One line saying what the warm-up run did, or that there was none."""
    if not warmup:
        return "no warm-up run (--no-warmup-run): repeat 0 includes the first-run costs"
    done = ", ".join(f"{p['label']} {p['seconds']:g} s" for p in warmup["points"])
    return f"warm-up run before repeat 0, not measured ({warmup['seconds']:g} s): {done}"


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
