"""perf_analyzer sweeps of the ensemble and each step: concurrency and request rate, per transport.

One perf_analyzer run per point (model x shared memory x concurrency level or request
rate), so a point that fails or never stabilizes (on a shared CPU machine, often) is
recorded and the sweep goes on; perf_analyzer's own ``--concurrency-range 1:64`` would
abort the whole range at the first such point. Files in ``OUT``:

- ``<model>-concurrency-<shm>.csv``, ``<model>-rate-<shm>.csv``: perf_analyzer's
  ``--verbose-csv`` rows of the measured points, merged;
- ``summary.csv``: every point with its status, throughput, p99 latency and the reason of
  a failure;
- ``points/``: each point's own CSV and perf_analyzer output.

Defaults depend on the machine (:func:`machine_defaults`): the portable server on CPU
answers 1-10 frames/s, a GPU server hundreds to thousands.
"""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from camdet.perf import perf_analyzer

log = logging.getLogger(__name__)

MODELS = ("detect", "validate", "preprocess", "detector", "postprocess")
"""The ensemble and its four steps, as named in the model repository."""
OUTPUT_SHM_BYTES = 1 << 20
"""Room per output tensor for one frame's detections (300 boxes, scores, ids, labels)."""


@dataclass(frozen=True)
class MachineDefaults:
    """The grid that fits a machine's throughput.

    Attributes:
        concurrency: Requests in flight, one point each.
        rates: Requests per second, one point each.
        shm: Input/output transports: ``none`` (gRPC), ``system``, ``cuda``.
        collect_metrics: Add the server's GPU metrics (utilization, power, memory) to the CSV.
    """

    concurrency: tuple[int, ...]
    rates: tuple[float, ...]
    shm: tuple[str, ...]
    collect_metrics: bool


CPU_DEFAULTS = MachineDefaults((1, 2, 4), (1, 2, 5, 10), ("none", "system"), False)
GPU_DEFAULTS = MachineDefaults(
    (1, 2, 4, 8, 16, 32, 64, 128, 256),
    (100, 250, 500, 1000, 1500, 2000),
    ("none", "system", "cuda"),
    True,
)


def _nvidia_smi_lists_a_gpu() -> bool:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return False
    try:
        done = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


def machine_has_gpu() -> bool:
    """Whether this machine has a usable NVIDIA GPU (``nvidia-smi -L``, else torch)."""
    if _nvidia_smi_lists_a_gpu():
        return True
    from camdet.serving.launch import has_cuda_gpu

    return has_cuda_gpu()


def machine_defaults(gpu: bool | None = None) -> MachineDefaults:
    """:data:`GPU_DEFAULTS` or :data:`CPU_DEFAULTS`; ``gpu=None`` asks the machine."""
    return GPU_DEFAULTS if (machine_has_gpu() if gpu is None else gpu) else CPU_DEFAULTS


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep, against which server, and how perf_analyzer measures each point.

    Attributes:
        data: Folder of ``<model>.json`` input data (``python -m camdet.perf.input_data``);
            a model without one is skipped.
        out: Folder for the CSV files, the summary and the per-point logs.
        concurrency: Concurrency levels (requests in flight).
        rates: Request rates in requests/s.
        shm: Transports, each of ``none``, ``system``, ``cuda``.
        url: Server gRPC endpoint ``host:port``.
        models: Models to sweep.
        distribution: Request-rate arrivals: ``constant`` (a camera's fixed fps) or
            ``poisson``.
        interval_ms: perf_analyzer measurement window in ms.
        stability_percentage: Allowed spread of the last 3 windows, in percent.
        max_trials: Windows before perf_analyzer gives up on a point.
        metrics_url: Prometheus endpoint; None leaves server metrics out of the CSV.
        output_shm_bytes: Shared-memory region per output tensor, in bytes.
        extra: More perf_analyzer arguments, given to every point.
        point_timeout_s: Kill a point after this long; None: twice its trials' windows + 60 s.
        admin_header: ``KEY=VALUE`` of a server started with ``--restrict-apis``: sent
            with every request, so perf_analyzer may read model configurations and
            statistics and register shared memory; None for an unrestricted server.
    """

    data: Path
    out: Path
    concurrency: tuple[int, ...]
    rates: tuple[float, ...]
    shm: tuple[str, ...]
    url: str = "localhost:8001"
    models: tuple[str, ...] = MODELS
    distribution: str = "constant"
    interval_ms: int = 5000
    stability_percentage: float = 10.0
    max_trials: int = 10
    metrics_url: str | None = None
    output_shm_bytes: int = OUTPUT_SHM_BYTES
    extra: tuple[str, ...] = ()
    point_timeout_s: float | None = None
    admin_header: str | None = None

    def __post_init__(self) -> None:
        if self.admin_header is not None:
            perf_analyzer.admin_header_args(self.admin_header)  # KEY=VALUE or ValueError

    @property
    def timeout_s(self) -> float:
        """Seconds one point may take before it is killed and recorded as failed."""
        if self.point_timeout_s is not None:
            return self.point_timeout_s
        return 60.0 + 2 * self.max_trials * self.interval_ms / 1000


@dataclass(frozen=True)
class Point:
    """One perf_analyzer run: a model, a transport and one load level."""

    model: str
    shm: str
    mode: str
    """``concurrency`` or ``rate``."""
    value: float

    @property
    def name(self) -> str:
        """File-name stem, e.g. ``detect-concurrency-none-4``."""
        return f"{self.model}-{self.mode}-{self.shm}-{self.value:g}"

    @property
    def sweep_name(self) -> str:
        """Stem of the merged CSV of the sweep this point belongs to."""
        return f"{self.model}-{self.mode}-{self.shm}"


@dataclass
class PointResult:
    """How one point went.

    Attributes:
        point: The point.
        ok: perf_analyzer exited 0 and wrote at least one CSV row.
        returncode: Its exit status (None when killed on timeout).
        seconds: Wall time of the run.
        rows: Its CSV rows (empty when it failed).
        reason: Why it failed (perf_analyzer's last error line), "" when ok.
        log: File with the command and perf_analyzer's output.
    """

    point: Point
    ok: bool
    returncode: int | None
    seconds: float
    rows: list[dict[str, str]] = field(default_factory=list)
    reason: str = ""
    log: Path | None = None


def sweep_points(config: SweepConfig) -> list[Point]:
    """The points in run order: per model with data, per transport, concurrency then rates."""
    points = []
    for model in config.models:
        if not (config.data / f"{model}.json").is_file():
            log.warning("skip %s: no %s", model, config.data / f"{model}.json")
            continue
        for shm in config.shm:
            points += [Point(model, shm, "concurrency", c) for c in config.concurrency]
            points += [Point(model, shm, "rate", r) for r in config.rates]
    return points


def point_args(config: SweepConfig, point: Point, csv_path: Path) -> list[str]:
    """perf_analyzer arguments of one point.

    Every request carries one frame (``-b 1``), like a camera and as the ensemble's ragged
    JPEG input requires; the server's dynamic batcher builds the batches.
    """
    args = ["-m", point.model, "-i", "grpc", "-u", config.url, "-b", "1"]
    args += ["--input-data", str(config.data / f"{point.model}.json")]
    args += ["--shared-memory", point.shm]
    if point.shm != "none":
        args += ["--output-shared-memory-size", str(config.output_shm_bytes)]
    args += ["--measurement-interval", str(config.interval_ms)]
    args += ["--stability-percentage", f"{config.stability_percentage:g}"]
    args += ["--max-trials", str(config.max_trials)]
    if point.mode == "concurrency":
        args += ["--concurrency-range", f"{point.value:g}"]
    else:
        # Asynchronous calls: the rate holds even when answers are slower than 1/rate.
        args += ["--request-rate-range", f"{point.value:g}", "--async"]
        args += ["--request-distribution", config.distribution]
    if config.metrics_url:
        args += ["--collect-metrics", "--metrics-url", config.metrics_url]
    if config.admin_header is not None:
        args += perf_analyzer.admin_header_args(config.admin_header)
    return [*args, "--verbose-csv", "-f", str(csv_path), *config.extra]


def failure_reason(output: str, returncode: int | None) -> str:
    """The line of perf_analyzer's output that says why it failed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line
    return lines[-1] if lines else f"exit status {returncode}"


def run_point(config: SweepConfig, point: Point, base: Sequence[str]) -> PointResult:
    """Run one point; never raises for a perf_analyzer failure or timeout."""
    folder = config.out / "points"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, log_path = folder / f"{point.name}.csv", folder / f"{point.name}.log"
    csv_path.unlink(missing_ok=True)  # a stale file must not pass for this run's result
    args = point_args(config, point, csv_path)
    start = time.monotonic()
    try:
        done = perf_analyzer.run(args, base, config.timeout_s, log_path)
    except subprocess.TimeoutExpired:
        seconds = time.monotonic() - start
        reason = f"killed after {config.timeout_s:g} s"
        return PointResult(point, False, None, seconds, reason=reason, log=log_path)
    seconds = time.monotonic() - start
    rows = perf_analyzer.read_csv(csv_path) if csv_path.exists() else []
    if done.returncode == 0 and rows:
        return PointResult(point, True, 0, seconds, rows, log=log_path)
    reason = failure_reason(done.stdout, done.returncode)
    return PointResult(point, False, done.returncode, seconds, reason=reason, log=log_path)


def write_rows(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """One CSV of ``rows``; columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_merged(out: Path, results: Sequence[PointResult]) -> list[Path]:
    """``<model>-<mode>-<shm>.csv`` per sweep with at least one measured point."""
    sweeps: dict[str, list[dict[str, str]]] = {}
    for result in results:
        if result.ok:
            sweeps.setdefault(result.point.sweep_name, []).extend(result.rows)
    paths = []
    for name, rows in sweeps.items():
        write_rows(out / f"{name}.csv", rows)
        paths.append(out / f"{name}.csv")
    return paths


def summary_row(result: PointResult) -> dict[str, str]:
    """One line of ``summary.csv``: the point, its status and its headline numbers."""
    point, last = result.point, (result.rows[-1] if result.rows else {})
    return {
        "model": point.model,
        "mode": point.mode,
        "shm": point.shm,
        "value": f"{point.value:g}",
        "status": "ok" if result.ok else "failed",
        "returncode": "" if result.returncode is None else str(result.returncode),
        "seconds": f"{result.seconds:.1f}",
        "infer_per_s": last.get("Inferences/Second", ""),
        "p99_latency_us": last.get("p99 latency", ""),
        "reason": result.reason,
        "log": str(result.log or ""),
    }


def run_sweep(
    config: SweepConfig,
    base: Sequence[str] | None = None,
    report: Callable[[PointResult], None] | None = None,
) -> list[PointResult]:
    """Run every point of ``config``, then write the merged CSVs and ``summary.csv``.

    Args:
        config: The sweep.
        base: perf_analyzer command (default: :func:`camdet.perf.perf_analyzer.command`).
        report: Called after each point, e.g. to print progress.

    Returns:
        One result per point, in run order.
    """
    command = list(base) if base is not None else perf_analyzer.command()
    config.out.mkdir(parents=True, exist_ok=True)
    results = []
    for point in sweep_points(config):
        result = run_point(config, point, command)
        if not result.ok:
            log.info("%s failed: %s", point.name, result.reason)
        results.append(result)
        if report is not None:
            report(result)
    write_merged(config.out, results)
    write_rows(config.out / "summary.csv", [summary_row(r) for r in results])
    return results


def exit_status(results: Sequence[PointResult], strict: bool = False) -> int:
    """0 when something was measured, 1 when nothing was (or, with ``strict``, anything failed)."""
    failed = [r for r in results if not r.ok]
    if not results or len(failed) == len(results) or (strict and failed):
        return 1
    return 0
