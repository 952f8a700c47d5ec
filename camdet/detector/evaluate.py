"""COCO mAP of the detector on held-out synthetic frames, through the serving math.

    python -m camdet.detector.evaluate model.onnx --frames 500 --width 1920 --height 1080
    python -m camdet.detector.evaluate --weights best.pt ...   # torch, on the GPU if any

Frames come from the evaluation seed stream (``[2, seed, i]``, see
:mod:`camdet.detector.data`), which training never draws from. Each frame is rendered at
its full native size, JPEG-compressed like a camera frame (``--jpeg-quality``), letterboxed
by :func:`camdet.geometry.letterbox_image`, run through the ONNX file with onnxruntime
(CPU) or through the torch weights, and decoded by
:func:`camdet.steps.postprocess.detections.postprocess` with the standard mAP settings
(confidence 0.001, IoU 0.7, 300 detections). pycocotools' ``COCOeval`` scores the result
against :func:`camdet.scenes.to_coco` ground truth.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from torch.utils.data import DataLoader

from camdet import scenes
from camdet.detector.data import EvalFrames, EvalSample, worker_init
from camdet.runtime.runners import Predictor, WeightsRunner, onnx_predictor, predictor
from camdet.steps.postprocess.detections import Detections, postprocess

logger = logging.getLogger(__name__)

MAP_CONFIDENCE = 0.001
MAP_IOU = 0.7
MAP_MAX_DETECTIONS = 300
DEFAULT_JPEG_QUALITY = 90
"""Quality of the held-out frames' JPEG step: cameras stream JPEG, not raw pixels."""


@dataclass(frozen=True)
class CocoScores:
    """What COCOeval (bbox) says.

    Attributes:
        map50: COCO mAP at IoU 0.5.
        map50_95: COCO mAP averaged over IoU 0.5:0.95.
        map50_95_by_area: mAP@0.5:0.95 of ``small`` (< 32² px), ``medium`` and ``large``
            (> 96² px) objects, areas in original pixels.
        per_class_map50_95: mAP@0.5:0.95 of each class name.
    """

    map50: float
    map50_95: float
    map50_95_by_area: dict[str, float]
    per_class_map50_95: dict[str, float]


@dataclass(frozen=True)
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        scores: The COCO scores.
        frames: Frames evaluated.
        objects: Ground-truth boxes.
        seconds: Wall time of rendering, inference and postprocessing.
    """

    scores: CocoScores
    frames: int
    objects: int
    seconds: float


def _collate(samples: list[EvalSample]) -> list[EvalSample]:
    return samples


def coco_detections(
    detections: list[Detections], image_ids: list[int], category_ids: list[int]
) -> list[dict[str, object]]:
    """Detections as COCO result records (``bbox`` is x, y, w, h in original pixels).

    Args:
        detections: One entry per frame.
        image_ids: COCO image id of each frame.
        category_ids: COCO category id of each class index.

    Returns:
        One record per detection.
    """
    records = []
    for det, image_id in zip(detections, image_ids, strict=True):
        boxes = det.boxes.cpu().numpy().astype(np.float64)
        boxes[:, 2:] -= boxes[:, :2]
        for box, score, cls in zip(boxes, det.scores.tolist(), det.class_ids.tolist(), strict=True):
            records.append(
                {
                    "image_id": image_id,
                    "category_id": category_ids[cls],
                    "bbox": [round(float(v), 3) for v in box],
                    "score": round(score, 5),
                }
            )
    return records


def score_coco(ground_truth: dict, results: list[dict[str, object]]) -> CocoScores:
    """Run pycocotools' COCOeval (bbox).

    Args:
        ground_truth: COCO dataset dict.
        results: COCO result records.

    Returns:
        The scores.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    logger.info("COCOeval:\n%s", summary.getvalue().rstrip())
    # precision: [iou thresholds, recall points, categories, area ranges, max dets]
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for index, category in enumerate(evaluator.params.catIds):
        values = precision[:, :, index]
        name = gt.cats[category]["name"]
        per_class[name] = float(values[values > -1].mean()) if (values > -1).any() else float("nan")
    stats = [float(v) for v in evaluator.stats]
    return CocoScores(
        map50=stats[1],
        map50_95=stats[0],
        map50_95_by_area={"small": stats[3], "medium": stats[4], "large": stats[5]},
        per_class_map50_95=per_class,
    )


def evaluate(
    predict: Predictor, frames: EvalFrames, batch: int = 16, workers: int = 0
) -> EvalResult:
    """Render, infer, postprocess and score ``frames``.

    Args:
        predict: Letterboxed uint8 batch -> head output
            (:func:`camdet.runtime.runners.predictor`).
        frames: The held-out frames.
        batch: Frames per inference call.
        workers: Rendering processes.

    Returns:
        The scores.
    """
    start = time.perf_counter()
    loader = DataLoader(
        frames,
        batch_size=batch,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=worker_init,
    )
    detections: list[Detections] = []
    truth: list[EvalSample] = []
    for samples in loader:
        images = torch.stack([s.image for s in samples])
        raw = predict(images)
        sizes = torch.tensor([s.size for s in samples], device=raw.device)
        detections += postprocess(raw, sizes, MAP_CONFIDENCE, MAP_IOU, MAP_MAX_DETECTIONS)
        truth += [EvalSample(torch.empty(0), s.size, s.labels, s.boxes) for s in samples]
    ground_truth = ground_truth_coco(truth)
    image_ids = [image["id"] for image in ground_truth["images"]]
    category_ids = [category["id"] for category in ground_truth["categories"]]
    scores = score_coco(ground_truth, coco_detections(detections, image_ids, category_ids))
    return EvalResult(
        scores=scores,
        frames=len(truth),
        objects=sum(len(s.labels) for s in truth),
        seconds=time.perf_counter() - start,
    )


def ground_truth_coco(truth: list[EvalSample]) -> dict:
    """COCO ground truth of the evaluated frames via :func:`camdet.scenes.to_coco`.

    Image ids are positions + 1 and category ids class ids + 1 (the scenes convention);
    :func:`evaluate` reads both back from the dict rather than assuming them.
    """
    frames = [
        # to_coco reads only the image's shape: a zero-stride view stands in for the
        # pixels, so 500 full-size frames need not stay in memory.
        scenes.Frame(
            image=np.broadcast_to(np.zeros(3, dtype=np.uint8), (*s.size, 3)),
            boxes=s.boxes,
            class_ids=s.labels,
        )
        for s in truth
    ]
    return scenes.to_coco(frames, [f"eval_{i:06d}" for i in range(len(frames))])


def _predictor(onnx: Path | None, weights: Path | None) -> tuple[Predictor, str]:
    """The predictor the command line asks for, and its description for the report."""
    if weights is not None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return predictor(WeightsRunner(weights, device)), f"torch {weights} on {device}"
    return onnx_predictor(onnx), f"onnxruntime CPU {onnx}"


def _report(frames: EvalFrames, result: EvalResult, model: str) -> dict[str, object]:
    """The JSON record of one evaluation."""
    scores = result.scores
    return {
        "model": model,
        "frames": result.frames,
        "objects": result.objects,
        "width": frames.width,
        "height": frames.height,
        "seed": frames.seed,
        "seed_stream": "numpy default_rng([2, seed, frame_index])",
        "jpeg_quality": frames.jpeg_quality,
        "conf_threshold": MAP_CONFIDENCE,
        "iou_threshold": MAP_IOU,
        "map50": round(scores.map50, 4),
        "map50_95": round(scores.map50_95, 4),
        "map50_95_by_area": {k: round(v, 4) for k, v in scores.map50_95_by_area.items()},
        "per_class_map50_95": {k: round(v, 4) for k, v in scores.per_class_map50_95.items()},
        "seconds": round(result.seconds, 1),
        "torch": torch.__version__,
        "command": " ".join(["python -m camdet.detector.evaluate", *sys.argv[1:]]),
    }


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet detector evaluate`` alone, for ``python -m camdet.detector.evaluate``."""


@app.command()
def evaluate_command(
    onnx: Annotated[
        Path | None, typer.Argument(help="ONNX file (onnxruntime, CPU).", show_default=False)
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Torch weights instead of ONNX (GPU if any).")
    ] = None,
    frames: Annotated[int, typer.Option(help="Held-out frames.")] = 500,
    width: Annotated[int, typer.Option(help="Frame width, pixels.")] = 1920,
    height: Annotated[int, typer.Option(help="Frame height, pixels.")] = 1080,
    seed: Annotated[int, typer.Option(help="Evaluation-stream seed.")] = 12345,
    jpeg_quality: Annotated[
        int, typer.Option(help="JPEG quality of the frames; 0 for uncompressed frames.")
    ] = DEFAULT_JPEG_QUALITY,
    batch: Annotated[int, typer.Option(help="Frames per detector run.")] = 16,
    workers: Annotated[
        int, typer.Option(help="Frame-rendering loader processes.", show_default="CPU cores - 1")
    ] = max(1, (os.cpu_count() or 2) - 1),
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON here.")] = None,
) -> None:
    """COCO mAP of the detector on held-out synthetic frames, through the serving math.

    Give exactly one of ONNX or --weights. Prints the result as JSON.
    """
    if (onnx is None) == (weights is None):
        raise typer.BadParameter("give exactly one of ONNX or --weights")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    predict, model = _predictor(onnx, weights)
    held_out = EvalFrames(seed, frames, width, height, jpeg_quality or None)
    result = evaluate(predict, held_out, batch, workers)
    report = _report(held_out, result, model)
    logger.info("mAP@0.5 %.4f  mAP@0.5:0.95 %.4f  (%s)", report["map50"], report["map50_95"], model)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app(prog_name="python -m camdet.detector.evaluate")
