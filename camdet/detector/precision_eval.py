"""mAP of the FP32, FP16 and INT8 conversions, and detector images/s, with ONNX Runtime (CPU).

    python -m camdet.detector.precision_eval accuracy model.onnx --frames 500 --out acc.json
    python -m camdet.detector.precision_eval speed a.onnx b.onnx --out speed.json

``accuracy`` converts the ONNX file as ``build_engine.py`` does (:mod:`camdet.engine.precision`:
ModelOpt AutoCast for FP16, ModelOpt PTQ with explicit Q/DQ for INT8, calibrated on
synthetic scenes through :func:`camdet.geometry.letterbox_image`) and scores each file on
the held-out frames of :mod:`camdet.detector.evaluate` at the input size of
``CAMDET_INPUT_SIZE``. The calibration scenes come from ``default_rng(seed)``, the
held-out frames from ``default_rng([2, 12345, i])``: no frame is in both.

``speed`` runs the files on random input of their own shape, in ABBA order (A B B A ...)
so drift of the machine hits every file alike, and reports images/s of the detector
alone: no decode, letterbox or NMS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

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


def speed(paths: list[Path], batch: int, rounds: int, threads: int | None) -> dict[str, object]:
    """Images/s of each ONNX file with ONNX Runtime on the CPU, measured in ABBA order.

    Returns:
        Per file: input shape, images/s (median of the rounds), per-round values.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sessions, inputs = {}, {}
    for path in paths:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
        rng = np.random.default_rng(0)
        inputs[path] = {spec.name: rng.random((batch, *spec.shape[1:]), dtype=np.float32)}
        inputs[path][spec.name] = inputs[path][spec.name].astype(dtype)
        sessions[path] = session
        session.run(None, inputs[path])  # warm-up: allocations and kernel selection
    rates: dict[Path, list[float]] = {p: [] for p in paths}
    load_before = os.getloadavg()[0]  # a shared machine: the record says how busy it was
    for index in range(rounds):
        order = paths if index % 2 == 0 else paths[::-1]
        for path in order:
            start = time.perf_counter()
            sessions[path].run(None, inputs[path])
            rates[path].append(batch / (time.perf_counter() - start))
    return {
        "batch": batch,
        "rounds": rounds,
        "order": "ABBA",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "onnxruntime": ort.__version__,
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "files": {
            str(p): {
                "input_shape": list(next(iter(inputs[p].values())).shape[1:]),
                "images_per_s": round(float(np.median(rates[p])), 2),
                "rounds": [round(r, 2) for r in rates[p]],
            }
            for p in paths
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m camdet.detector.precision_eval``."""
    parser = argparse.ArgumentParser(
        prog="python -m camdet.detector.precision_eval", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accuracy", help="mAP of FP32/FP16/INT8 conversions")
    acc.add_argument("onnx", type=Path, help="FP32 ONNX export at CAMDET_INPUT_SIZE")
    acc.add_argument("--workdir", type=Path, default=Path("precision_eval"))
    acc.add_argument("--frames", type=int, default=500)
    acc.add_argument("--calibration-frames", type=int, default=128)
    acc.add_argument("--batch", type=int, default=8)
    # 0: render in this process. A forked loader worker can deadlock on locks that
    # ModelOpt's and ONNX Runtime's threads held at the fork (seen after INT8 calibration).
    acc.add_argument("--workers", type=int, default=0)
    spd = sub.add_parser("speed", help="images/s of ONNX files, ABBA")
    spd.add_argument("onnx", type=Path, nargs="+")
    spd.add_argument("--batch", type=int, default=8)
    spd.add_argument("--rounds", type=int, default=8)
    spd.add_argument("--threads", type=int, default=None)
    for command in (acc, spd):
        command.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "accuracy":
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = accuracy(
            args.onnx, args.workdir, args.frames, args.calibration_frames, args.batch, args.workers
        )
    else:
        report = speed(args.onnx, args.batch, args.rounds, args.threads)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
