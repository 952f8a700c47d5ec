"""``camdet demo``: synthetic cameras streamed through a running ensemble, checked against truth."""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tritonclient.grpc as grpcclient
from pycocotools import mask as mask_utils
from rich.console import Console
from tritonclient.utils import InferenceServerException

from camdet.client.report import FittingTable
from camdet.contract import Detection, detect
from camdet.scenes import Frame, SceneSequence, encode_jpeg

if TYPE_CHECKING:
    from camdet.client.view.options import ViewSettings
    from camdet.serving.server import TritonServer

MATCH_IOU = 0.5
"""IoU at which a detection counts as finding a ground-truth object of its class."""


@dataclass
class CameraReport:
    """What one camera sent and got back."""

    camera: int
    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0
    detections: int = 0
    truths: int = 0
    matched: int = 0
    matched_iou: list[float] = field(default_factory=list)
    first: list[Detection] = field(default_factory=list)
    wall_s: float = 0.0


def match(detections: list[Detection], truth: Frame) -> list[float]:
    """Greedy same-class matching of detections (by score) to ground truth.

    Returns:
        The IoU of each matched pair (at least :data:`MATCH_IOU`).
    """
    if not detections or len(truth.boxes) == 0:
        return []
    iou = _box_iou(np.array([d.box for d in detections]), np.asarray(truth.boxes))
    same_class = np.array([d.class_id for d in detections])[:, None] == np.asarray(truth.class_ids)
    iou = np.where(same_class, iou, 0.0)
    found = []
    for row in iou:  # detections arrive sorted by score
        best = int(row.argmax())
        if row[best] >= MATCH_IOU:
            found.append(float(row[best]))
            iou[:, best] = 0
    return found


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of xyxy boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]`` (pixels), by pycocotools.

    pycocotools (a base dependency, unlike torchvision) takes x, y, width, height.
    """
    a, b = (np.array(x, np.float64).reshape(-1, 4) for x in (a, b))  # copies: edited below
    a[:, 2:] -= a[:, :2]
    b[:, 2:] -= b[:, :2]
    return np.asarray(mask_utils.iou(a, b, [0] * len(b)), np.float64).reshape(len(a), len(b))


def _stream_camera(url: str, report: CameraReport, frames: list[Frame], jpegs: list[bytes]) -> None:
    with grpcclient.InferenceServerClient(url) as client:
        start = time.perf_counter()
        for index, (frame, jpeg) in enumerate(zip(frames, jpegs, strict=True)):
            sent = time.perf_counter()
            try:
                found = detect(client, jpeg)
            except InferenceServerException:
                report.failed += 1
                continue
            report.latencies_s.append(time.perf_counter() - sent)
            if index == 0:
                report.first = found
            ious = match(found, frame)
            report.detections += len(found)
            report.truths += len(frame.boxes)
            report.matched += len(ious)
            report.matched_iou += ious
        report.wall_s = time.perf_counter() - start


def run_demo(
    url: str, cameras: int, frames: int, width: int, height: int, seed: int, console: Console
) -> list[CameraReport]:
    """Stream ``cameras`` synthetic cameras concurrently and print what came back.

    Returns:
        One report per camera.
    """
    with console.status(f"rendering {cameras} x {frames} frames of {width}x{height} ..."):
        sequences = [SceneSequence(seed + c, width, height) for c in range(cameras)]
        scenes = [[sequence.frame(i) for i in range(frames)] for sequence in sequences]
        jpegs = [[encode_jpeg(f.image, 90) for f in cam] for cam in scenes]
    reports = [CameraReport(c) for c in range(cameras)]
    threads = [
        threading.Thread(target=_stream_camera, args=(url, r, scenes[r.camera], jpegs[r.camera]))
        for r in reports
    ]
    started = time.perf_counter()
    with console.status(f"streaming {cameras} cameras to {url} ..."):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - started
    _print(console, reports, wall)
    return reports


def _print(console: Console, reports: list[CameraReport], wall_s: float) -> None:
    # A FittingTable wraps its headers at spaces rather than cut them in a narrow terminal.
    title = "camdet demo: per-camera results (detections vs. exact ground truth)"
    table = FittingTable(title=title)
    table.add_column("camera", overflow="fold")
    for column in ("frames ok", "failed", "fps", "p50 ms", "p99 ms", "dets per frame"):
        table.add_column(column, justify="right")
    for column in ("recall @.5 IoU", "precision @.5 IoU", "mean IoU"):
        table.add_column(column, justify="right")
    for r in reports:
        ok = len(r.latencies_s)
        ms = sorted(x * 1000 for x in r.latencies_s) or [float("nan")]
        table.add_row(
            f"cam{r.camera}",
            str(ok),
            str(r.failed),
            f"{ok / r.wall_s:.1f}" if r.wall_s else "-",
            f"{statistics.median(ms):.0f}",
            f"{ms[min(len(ms) - 1, int(0.99 * len(ms)))]:.0f}",
            f"{r.detections / max(ok, 1):.1f}",
            f"{r.matched / max(r.truths, 1):.3f}",
            f"{r.matched / max(r.detections, 1):.3f}",
            f"{np.mean(r.matched_iou):.3f}" if r.matched_iou else "-",
        )
    console.print(table)
    total = sum(len(r.latencies_s) for r in reports)
    console.print(
        f"{total} frames answered in {wall_s:.1f} s: {total / wall_s:.1f} frames/s in all"
    )
    for r in reports:
        sample = ", ".join(
            f"{d.label} {d.score:.2f} [{', '.join(f'{v:.0f}' for v in d.box)}]" for d in r.first[:4]
        )
        console.print(f"cam{r.camera} frame 0: {sample or 'no detections'}")


def run_view_demo(
    server: TritonServer,
    cameras: int,
    width: int,
    height: int,
    seed: int,
    settings: ViewSettings,
    duration_s: float | None,
    console: Console,
) -> None:
    """Stream looping synthetic clips through ``camdet ingest``'s pipeline, with the view.

    Each camera is a clip of moving objects (10 fps, looped, paced like a camera) with a
    vertical count line through the middle; runs until Ctrl-C or ``duration_s``.
    """
    from camdet.client.cli import run_with_view
    from camdet.client.config import CameraConfig
    from camdet.client.ingest_options import IngestOptions
    from camdet.client.report import totals_table
    from camdet.client.streamer import Ingest
    from camdet.client.view.options import attach_view
    from camdet.client.view.sink import ViewSink
    from camdet.scenes import write_clip
    from camdet.tracking.lines import CountLine

    with tempfile.TemporaryDirectory(prefix="camdet-demo-") as folder:
        with console.status(f"rendering {cameras} clips of {width}x{height} ..."):
            clips = [Path(folder) / f"cam{c}.mp4" for c in range(cameras)]
            for c, path in enumerate(clips):
                write_clip(path, seed + c, 100, width, height, fps=10)
        configs = [CameraConfig(f"cam{c}", str(path), loop=True) for c, path in enumerate(clips)]
        line = CountLine(width / 2, 0, width / 2, height)
        runner = Ingest(
            configs,
            [server.grpc_url],
            [ViewSink(settings.fps, settings.max_width)],
            IngestOptions(count_line=line),
        )
        view = attach_view(runner, settings)
        console.print("Ctrl-C to stop.")
        run_with_view(runner, duration_s, view, lambda url: console.print(f"view at {url}"))
        crossings = runner.tracking.crossings() if runner.tracking is not None else {}
        console.print(totals_table(runner.accounting.snapshot(), crossings=crossings))
