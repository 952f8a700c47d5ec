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


def write_plot(
    path: Path,
    results: Sequence[PointResult],
    title: str,
    ratios: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``bench.png``: latency versus throughput, and the ratios the bench printed.

    Left, each server pipeline's camera sweep: lines join the medians over repeats (p50
    solid, p99 dashed, labelled with the camera count), faint dots are the single
    repeats; the grey vertical is the bare throughput the ratios divide by (each
    repeat's fastest bare loop, :func:`~camdet.perf.ratios.bare_reference`: median, and
    its range shaded). Right, the ratios per camera count exactly as printed (median over
    repeats, min-max bars).

    Args:
        path: The PNG to write.
        results: Every measured point.
        title: The figure's title (the machine).
        ratios: The printed ratios (default: computed from ``results``, as the bench does).

    Returns:
        What was drawn (:func:`plot_data`).
    """
    import matplotlib.pyplot as plt

    figure, data = plot_figure(results, title, ratios)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return data


def plot_data(
    results: Sequence[PointResult], ratios: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The values ``bench.png`` draws, taken from the same points the ratios use.

    Returns:
        ``{"sweeps": {name: {"cameras", "throughput_fps", "p50_ms", "p99_ms"}},
        "bare": {"per_repeat": [(repeat, label, fps)], "median", "min", "max"},
        "ratios": {name: {"cameras", "median", "min", "max"}}}``, lists in camera order.
    """
    from camdet.perf.ratios import bare_reference, side_by_side_ratios

    if ratios is None:
        ratios = side_by_side_ratios(results)
    sweeps = {}
    for name, points in sorted(_sweeps(results).items()):
        cameras = sorted({p.cameras for p in points})
        groups = [[p for p in points if p.cameras == c] for c in cameras]
        sweeps[name] = {
            "cameras": cameras,
            "throughput_fps": [_median([p.throughput_fps for p in g]) for g in groups],
            "p50_ms": [_median([p.latency["p50_ms"] for p in g]) for g in groups],
            "p99_ms": [_median([p.latency["p99_ms"] for p in g]) for g in groups],
        }
    reference = bare_reference(results)
    fps = [r.throughput_fps for r in reference.values()]
    bare = {
        "per_repeat": [(k, r.label, r.throughput_fps) for k, r in reference.items()],
        "median": _median(fps),
        "min": min(fps, default=float("nan")),
        "max": max(fps, default=float("nan")),
    }
    series: dict[str, dict[str, list[Any]]] = {}
    for row in sorted(ratios, key=lambda r: (r["name"], r["shm"], r["cameras"])):
        name = row["name"] if row["shm"] == "none" else f"{row['name']} (shm {row['shm']})"
        line = series.setdefault(name, {"cameras": [], "median": [], "min": [], "max": []})
        for key in line:
            line[key].append(row[key])
    return {"sweeps": sweeps, "bare": bare, "ratios": series}


def plot_figure(
    results: Sequence[PointResult],
    title: str,
    ratios: Sequence[dict[str, Any]] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The figure of :func:`write_plot` (not saved) and its :func:`plot_data`.

    Its artists carry ``gid`` ``sweep:NAME``, ``bare-reference`` and ``ratio:NAME``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plot_data(results, ratios)
    figure, (axes, ratio_axes) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]}
    )
    for name, sweep in data["sweeps"].items():
        points = _sweeps(results)[name]
        x, p50 = sweep["throughput_fps"], sweep["p50_ms"]
        (line,) = axes.plot(x, p50, "o-", label=f"{name} p50", gid=f"sweep:{name}")
        axes.plot(x, sweep["p99_ms"], "s--", color=line.get_color(), label=f"{name} p99")
        axes.scatter([p.throughput_fps for p in points], [p.latency["p50_ms"] for p in points],
                     color=line.get_color(), alpha=0.25, s=12)  # fmt: skip
        for count, xi, yi in zip(sweep["cameras"], x, p50, strict=True):
            axes.annotate(f"{count} cam", (xi, yi), fontsize=7, xytext=(3, -10),
                          textcoords="offset points")  # fmt: skip
    bare = data["bare"]
    if bare["per_repeat"]:
        axes.axvspan(bare["min"], bare["max"], color="grey", alpha=0.12, linewidth=0)
        axes.axvline(bare["median"], color="grey", linestyle="-", linewidth=1.5,
                     gid="bare-reference",
                     label=f"bare {bare['median']:.1f} frames/s: the ratios' bare "
                     "(fastest loop of each repeat; range shaded)")  # fmt: skip
    axes.set_xlabel("throughput (frames/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    for name, line in data["ratios"].items():
        cameras, median = line["cameras"], line["median"]
        below = [m - lo for m, lo in zip(median, line["min"], strict=True)]
        above = [hi - m for m, hi in zip(median, line["max"], strict=True)]
        (drawn,) = ratio_axes.plot(cameras, median, "o-", label=name, gid=f"ratio:{name}")
        ratio_axes.errorbar(cameras, median, yerr=[below, above], fmt="none",
                            ecolor=drawn.get_color(), capsize=3, alpha=0.6)  # fmt: skip
        for count, value in zip(cameras, median, strict=True):
            ratio_axes.annotate(f"{value:.2f}", (count, value), fontsize=7, xytext=(4, 3),
                                textcoords="offset points")  # fmt: skip
    ratio_axes.axhline(1.0, color="grey", linewidth=1)
    ratio_axes.set_xscale("log", base=2)
    ticks = sorted({c for line in data["ratios"].values() for c in line["cameras"]})
    if ticks:
        ratio_axes.set_xticks(ticks, [str(t) for t in ticks])
        ratio_axes.minorticks_off()
    ratio_axes.set_xlabel("cameras")
    ratio_axes.set_ylabel("ratio (median over repeats, min-max)")
    ratio_axes.set_title("the printed ratios", fontsize=9)
    ratio_axes.grid(alpha=0.3)
    ratio_axes.legend(fontsize=7)
    figure.tight_layout()
    return figure, data


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
