"""Writing a bench run down: text tables, JSON, CSV and a latency-versus-throughput plot.

Only the standard library and numpy at import time; matplotlib is imported by
:func:`write_plot` alone, so the bench runs where it is missing (``--no-plot``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from camdet.perf.measurement import PointResult
from camdet.perf.stats import STAT_KINDS

_PACKAGES = ("tritonclient", "nvidia-pytriton", "nvidia-dali-cuda120", "onnxruntime", "torch")


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: CPU, cores, memory, GPU, Python, key packages."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_1m_5m_15m": [round(v, 2) for v in os.getloadavg()],
        "packages": {p: _version(p) for p in _PACKAGES},
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["gpu"] = _gpu_name()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_table(results: Sequence[PointResult]) -> str:
    """One line per measured point: throughput, latency, CPU per frame, failures."""
    header = [
        "point", "rep", "shm", "frames/s", "p50 ms", "p90 ms", "p99 ms",
        "client CPU ms/f", "server CPU ms/f", "failed", "dropped",
    ]  # fmt: skip
    rows = [
        [
            r.label,
            str(r.repeat),
            r.shm,
            _fmt(r.throughput_fps, 2),
            _fmt(r.latency["p50_ms"]),
            _fmt(r.latency["p90_ms"]),
            _fmt(r.latency["p99_ms"]),
            _fmt(r.client_cpu_ms_per_frame),
            _fmt(r.server_cpu_ms_per_frame),
            str(r.failed),
            str(r.dropped),
        ]
        for r in results
    ]
    if any(r.held for r in results):  # video responses whose frame the decoder kept
        header.append("held")
        for row, r in zip(rows, results, strict=True):
            row.append(str(r.held))
    return _table(header, rows)


def model_stats_table(results: Sequence[PointResult]) -> str:
    """Triton's per-model statistics of every server point (per request, milliseconds)."""
    header = ["point", "rep", "model", "requests", "avg batch", *[f"{k} ms" for k in STAT_KINDS]]
    rows = []
    for r in results:
        for model, stats in sorted(r.model_stats.items(), key=lambda kv: _step_order(kv[0])):
            rows.append(
                [
                    r.label,
                    str(r.repeat),
                    model,
                    str(int(stats["requests"])),
                    _fmt(stats["avg_batch"], 2),
                    *[_fmt(stats[f"{k}_ms"], 2) for k in STAT_KINDS],
                ]
            )
    return _table(header, rows) if rows else "(no server statistics)"


def _step_order(model: str) -> int:
    order = ("detect", "validate", "preprocess", "detector", "postprocess")
    return order.index(model) if model in order else len(order)


def ratios_table(ratios: Sequence[dict[str, Any]]) -> str:
    """The side-by-side ratios (median over repeats, with their range)."""
    header = ["ratio", "cameras", "shm", "median", "min", "max", "repeats"]
    rows = [
        [
            r["name"],
            str(r["cameras"]),
            r["shm"],
            _fmt(r["median"], 3),
            _fmt(r["min"], 3),
            _fmt(r["max"], 3),
            str(r["repeats"]),
        ]
        for r in ratios
    ]
    return _table(header, rows)


def write_json(path: Path, report: dict[str, Any]) -> None:
    """The whole report (machine, config, results, ratios) as JSON."""
    path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_csv(path: Path, results: Sequence[PointResult]) -> None:
    """One row per point, one column per metric (per-model stats as ``model.stat``)."""
    rows = [r.row() for r in results]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_plot(path: Path, results: Sequence[PointResult], title: str) -> None:
    """Latency versus throughput of each server pipeline's camera sweep, bare as lines.

    Lines join the medians over repeats (p50 solid, p99 dashed, labelled with the camera
    count); faint dots are the single repeats; dotted verticals mark the bare loops'
    median throughput.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for name, points in sorted(_sweeps(results).items()):
        cameras = sorted({p.cameras for p in points})
        groups = [[p for p in points if p.cameras == c] for c in cameras]
        x = [_median([p.throughput_fps for p in g]) for g in groups]
        p50 = [_median([p.latency["p50_ms"] for p in g]) for g in groups]
        p99 = [_median([p.latency["p99_ms"] for p in g]) for g in groups]
        (line,) = axes.plot(x, p50, "o-", label=f"{name} p50")
        axes.plot(x, p99, "s--", color=line.get_color(), label=f"{name} p99")
        axes.scatter([p.throughput_fps for p in points], [p.latency["p50_ms"] for p in points],
                     color=line.get_color(), alpha=0.25, s=12)  # fmt: skip
        for count, xi, yi in zip(cameras, x, p50, strict=True):
            axes.annotate(f"{count} cam", (xi, yi), fontsize=7, xytext=(3, -10),
                          textcoords="offset points")  # fmt: skip
    for label in sorted({r.label for r in results if r.mode == "bare"}):
        fps = _median([r.throughput_fps for r in results if r.label == label])
        axes.axvline(fps, color="grey", linestyle=":", linewidth=1)
        axes.annotate(label, (fps, 0), rotation=90, fontsize=7, va="bottom",
                      xycoords=("data", "axes fraction"))  # fmt: skip
    axes.set_xlabel("throughput (frames/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _sweeps(results: Sequence[PointResult]) -> dict[str, list[PointResult]]:
    """Capacity-mode points of each server pipeline and transport."""
    series: dict[str, list[PointResult]] = {}
    for r in results:
        if r.mode != "bare" and r.fps is None:
            name = r.mode if r.shm == "none" else f"{r.mode} (shm {r.shm})"
            series.setdefault(name, []).append(r)
    return series


def _median(values: Sequence[float]) -> float:
    finite = sorted(v for v in values if v == v)
    if not finite:
        return float("nan")
    middle = len(finite) // 2
    return finite[middle] if len(finite) % 2 else (finite[middle - 1] + finite[middle]) / 2
