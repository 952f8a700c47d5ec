"""mAP of the FP32, FP16 and INT8 conversions (ONNX Runtime, CPU), and detector images/s.

    python -m camdet.detector.precision_eval accuracy model.onnx --frames 500 --out acc.json
    python -m camdet.detector.precision_eval speed a.onnx b.onnx --out speed.json
    python -m camdet.detector.precision_eval speed a.onnx b.onnx --runner torch --batch 64

``accuracy`` converts the ONNX file as ``build_engine.py`` does (:mod:`camdet.engine.precision`:
ModelOpt AutoCast for FP16, ModelOpt PTQ with explicit Q/DQ for INT8, calibrated on
synthetic scenes through :func:`camdet.geometry.letterbox_image`) and scores each file on
the held-out frames of :mod:`camdet.detector.evaluate` at the input size of
``CAMDET_INPUT_SIZE``. The calibration scenes come from ``default_rng(seed)``, the
held-out frames from ``default_rng([2, 12345, i])``: no frame is in both.

``speed`` runs the files on random input of their own shape, in ABBA order (A B B A ...)
so drift of the machine hits every file alike, and reports images/s of the detector
alone: no decode, letterbox or NMS. ``--runner torch`` runs them as the portable GPU
server does (FP16, one CUDA graph per batch size; :class:`camdet.runtime.runners.TorchRunner`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from camdet.constants import INPUT_SHAPE, format_input_size
from camdet.detector.data import EvalFrames
from camdet.detector.evaluate import evaluate, onnx_predictor
from camdet.engine.calibration import CalibrationSource, calibration_array
from camdet.engine.contract import Precision
from camdet.engine.precision import convert_onnx

logger = logging.getLogger(__name__)


def accuracy(
    source: Path, workdir: Path, frames: int, calibration_frames: int, batch: int, workers: int
) -> dict[str, object]:
    """Convert ``source`` to each precision and score it on the held-out 1080p frames.

    Returns:
        Per precision: mAP@0.5, mAP@0.5:0.95, seconds; plus the settings used.
    """
    shape = format_input_size(INPUT_SHAPE)
    calibration = CalibrationSource(None, calibration_frames, seed=0)
    results: dict[str, object] = {}
    for precision in Precision:
        out = workdir / f"{source.stem}-{shape}-{precision.value}.onnx"
        converted = convert_onnx(
            source,
            out,
            precision,
            "TYPE_FP16" if precision is not Precision.FP32 else "TYPE_FP32",
            calibration=lambda: calibration_array(calibration.frames_rgb()),
        )
        held_out = EvalFrames(12345, frames, 1920, 1080, 90)
        result = evaluate(onnx_predictor(converted.path), held_out, batch, workers)
        results[precision.value] = {
            "map50": round(result.scores.map50, 4),
            "map50_95": round(result.scores.map50_95, 4),
            "seconds": round(result.seconds, 1),
            "onnx_sha256": converted.sha256,
        }
        logger.info("%s %s: %s", shape, precision.value, results[precision.value])
    return {
        "input_size": shape,
        "frames": frames,
        "frame_size": "1920x1080, JPEG q90, held-out stream [2, 12345, i]",
        "calibration": calibration.describe(),
        "precisions": results,
    }


def speed(
    paths: list[Path], batch: int, rounds: int, threads: int | None, runner: str = "onnxruntime"
) -> dict[str, object]:
    """Images/s of each ONNX file, the detector alone, measured in ABBA order.

    Args:
        paths: ONNX files; each gets random input of its own image size.
        batch: Images per run.
        rounds: Timed runs per file (after one warm-up run each).
        threads: CPU threads of the runner (None: its default).
        runner: ``"onnxruntime"`` (CPU) or ``"torch"`` (FP16 CUDA graphs on a GPU, as the
            portable GPU server runs the detector; FP32 on a CPU), or another name
            registered with :func:`camdet.runtime.runners.register_runner`.

    Returns:
        Per file: input shape, images/s (median of the rounds), per-round values.
    """
    from camdet.runtime.runners import make_runner, onnx_image_shape

    runners, inputs = {}, {}
    shapes = {path: (3, *onnx_image_shape(path)) for path in paths}
    for path in paths:
        runners[path] = make_runner(runner, path, threads)
        images = np.random.default_rng(0).random((batch, *shapes[path]), np.float32)
        inputs[path] = _on_runner_device(runners[path], images)
        _wait(runners[path](inputs[path]))  # warm-up: allocations, kernels, CUDA graphs
    rates: dict[Path, list[float]] = {p: [] for p in paths}
    load_before = os.getloadavg()[0]  # a shared machine: the record says how busy it was
    for index in range(rounds):
        order = paths if index % 2 == 0 else paths[::-1]
        for path in order:
            start = time.perf_counter()
            _wait(runners[path](inputs[path]))
            rates[path].append(batch / (time.perf_counter() - start))
    return {
        "batch": batch,
        "rounds": rounds,
        "order": "ABBA",
        "runner": runner,
        "device": str(getattr(runners[paths[0]], "device", "cpu")),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "versions": _versions(runner),
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "files": {
            str(p): {
                "input_shape": list(shapes[p]),
                "images_per_s": round(float(np.median(rates[p])), 2),
                "rounds": [round(r, 2) for r in rates[p]],
            }
            for p in paths
        },
    }


def _on_runner_device(runner: object, images: np.ndarray) -> object:
    """The input where and as the runner computes, so the timed runs do not convert it."""
    device = getattr(runner, "device", None)
    if device is None:
        return images.astype(getattr(runner, "input_dtype", images.dtype))
    import torch

    return torch.as_tensor(images).to(device, getattr(runner, "dtype", torch.float32))


def _wait(output: object) -> None:
    """Block until a GPU runner's (asynchronous) output is computed."""
    device = getattr(output, "device", None)
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _versions(runner: str) -> dict[str, str]:
    from importlib import metadata

    package = {"onnxruntime": "onnxruntime", "torch": "torch"}.get(runner)
    return {package: metadata.version(package)} if package else {}


app = typer.Typer(
    help="mAP of the FP32, FP16 and INT8 conversions, and detector images/s.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
"""``camdet detector precision`` alone, for ``python -m camdet.detector.precision_eval``."""

OutOption = Annotated[Path | None, typer.Option(help="Write the result as JSON here.")]


def _print(report: dict[str, object], out: Path | None) -> None:
    """Print the report as JSON, and write it to ``out`` if given."""
    text = json.dumps(report, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


@app.command("accuracy")
def accuracy_command(
    onnx: Annotated[Path, typer.Argument(help="FP32 ONNX export at CAMDET_INPUT_SIZE.")],
    workdir: Annotated[Path, typer.Option(help="Folder of the converted files.")] = Path(
        "precision_eval"
    ),
    frames: Annotated[int, typer.Option(help="Held-out frames.")] = 500,
    calibration_frames: Annotated[int, typer.Option(help="INT8 calibration scenes.")] = 128,
    batch: Annotated[int, typer.Option(help="Frames per detector run.")] = 8,
    # 0: render in this process. A forked loader worker can deadlock on locks that
    # ModelOpt's and ONNX Runtime's threads held at the fork (seen after INT8 calibration).
    workers: Annotated[
        int, typer.Option(help="Frame-rendering loader processes (0: in this process).")
    ] = 0,
    out: OutOption = None,
) -> None:
    """Score the FP32, FP16 and INT8 conversions of ONNX by mAP (ONNX Runtime, CPU)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    workdir.mkdir(parents=True, exist_ok=True)
    _print(accuracy(onnx, workdir, frames, calibration_frames, batch, workers), out)


@app.command("speed")
def speed_command(
    onnx: Annotated[list[Path], typer.Argument(help="ONNX files, run in ABBA order.")],
    batch: Annotated[int, typer.Option(help="Images per run.")] = 8,
    rounds: Annotated[int, typer.Option(help="Timed runs of each file.")] = 8,
    threads: Annotated[
        int | None, typer.Option(help="Runner threads.", show_default="the runner's")
    ] = None,
    runner: Annotated[
        str, typer.Option(help="onnxruntime (CPU) or torch (FP16 on a GPU).")
    ] = "onnxruntime",
    out: OutOption = None,
) -> None:
    """Measure images/s of the detector alone in ONNX files, in ABBA order."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _print(speed(onnx, batch, rounds, threads, runner), out)


if __name__ == "__main__":
    app(prog_name="python -m camdet.detector.precision_eval")
