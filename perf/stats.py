"""Summaries of one measured load point: latency percentiles and Triton's per-model stats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

STAT_KINDS = ("queue", "compute_input", "compute_infer", "compute_output")
"""Triton's per-request duration statistics, in pipeline order."""


def latency_summary(latencies_s: np.ndarray) -> dict[str, float]:
    """p50/p90/p99/mean/max of request latencies, in milliseconds (NaN when empty)."""
    if latencies_s.size == 0:
        return dict.fromkeys(("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"), float("nan"))
    ms = latencies_s * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def _by_model(statistics: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["name"], m.get("version", "")): m for m in statistics.get("model_stats", [])}


def _count(stats: dict[str, Any], kind: str) -> tuple[int, int]:
    """(count, ns) of one duration statistic (protobuf JSON gives int64 as strings)."""
    entry = stats.get("inference_stats", {}).get(kind, {})
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def model_stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-model statistics of what happened between two ``get_inference_statistics`` calls.

    Args:
        before: ``client.get_inference_statistics(as_json=True)`` at the window start.
        after: The same at the window end.

    Returns:
        ``{model: {requests, failures, executions, avg_batch, queue_ms, compute_input_ms,
        compute_infer_ms, compute_output_ms}}`` for models that served requests in the
        window; durations are averages per successful request. For the ensemble,
        ``compute_infer_ms`` is the time spent inside its steps.
    """
    earlier = _by_model(before)
    delta: dict[str, dict[str, float]] = {}
    for key, now in _by_model(after).items():
        then = earlier.get(key, {})
        success = _count(now, "success")[0] - _count(then, "success")[0]
        failures = _count(now, "fail")[0] - _count(then, "fail")[0]
        if success + failures == 0:
            continue
        executions = int(now.get("execution_count", 0)) - int(then.get("execution_count", 0))
        inferences = int(now.get("inference_count", 0)) - int(then.get("inference_count", 0))
        row = {
            "requests": float(success),
            "failures": float(failures),
            "executions": float(executions),
            "avg_batch": inferences / executions if executions else float("nan"),
        }
        for kind in STAT_KINDS:
            count, ns = (a - b for a, b in zip(_count(now, kind), _count(then, kind), strict=True))
            row[f"{kind}_ms"] = ns / count / 1e6 if count else float("nan")
        delta[key[0]] = row
    return delta


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants.

    NaN where psutil is not installed or the process is gone.
    """
    try:
        import psutil
    except ImportError:
        return float("nan")

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    return sum(_cpu_s(p) for p in processes)


def _cpu_s(process: Any) -> float:
    import psutil

    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is zero or NaN."""
    if not denominator or denominator != denominator:
        return float("nan")
    return numerator / denominator


def best(values: Iterable[float]) -> float:
    """Largest non-NaN value (NaN if none)."""
    finite = [v for v in values if v == v]
    return max(finite) if finite else float("nan")
