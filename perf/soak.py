"""Soak: many cameras at a fixed rate for a long time, watching failures and memory.

``python -m camdet.perf.soak --cameras 16 --fps 0.25 --duration 1800 --out soak-out``

It starts a portable server (or uses ``--url``), drives it with the bench's load
generator (:func:`camdet.perf.load.run_point`, real-time mode: one gRPC client per camera)
and meanwhile samples the RSS of the server (tritonserver and its Python-backend stubs)
and of the client (this process and its worker processes) every ``--sample-s`` seconds.
It prints the failures and the RSS growth from ``--baseline-s`` after the start to the
end, writes ``soak.json`` and ``rss.csv``, and exits 1 when any request failed or either
side grew by more than ``--max-growth``. A soak is a benchmark: run it by hand, record the
result in ``perf/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from camdet.perf.bench_config import BenchConfig, default_repository
from camdet.perf.bench_run import load_frames
from camdet.perf.load import ServerProbe, run_point
from camdet.perf.measurement import LoadPoint, PointResult, Window
from camdet.perf.rss import client_rss, tree_rss

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def soak_server(url: str | None, repository: Path, workdir: Path) -> Iterator[ServerProbe]:
    """The server under test: the one at ``url``, or a portable one started here."""
    if url is not None:
        yield TolerantProbe(url)
        return
    from camdet.serving.server import Ports, serve

    with serve(repository, Ports.free(), portable=True, workdir=workdir) as server:
        yield TolerantProbe(server.grpc_url, server.process.pid if server.process else None)


class TolerantProbe(ServerProbe):
    """A probe whose failed statistics sample is logged, not raised.

    Half an hour of requests must not be lost to one statistics call that failed at the
    window's edge (on a shared machine the server can be slow to answer, or gone: the
    failures then show in the counts).
    """

    def sample(self) -> tuple[dict[str, Any], float]:
        """(inference statistics, server CPU seconds), or ({}, NaN) when unavailable."""
        try:
            return super().sample()
        except Exception as exc:  # any client or connection error: the soak goes on
            logger.warning("server statistics unavailable: %s", exc)
            return {}, float("nan")


def sample_rss(
    server_pid: int | None,
    every_s: float,
    stop: threading.Event,
    rows: list[dict[str, Any]],
    log_path: Path | None = None,
) -> None:
    """Append ``{t, server_mb, client_mb, load1, ...}`` to ``rows`` until ``stop``.

    Each row also goes to ``log_path`` as a JSON line, so a soak cut short keeps them.
    """
    t0 = time.time()
    log = log_path.open("a") if log_path is not None else None
    while not stop.is_set():
        server = tree_rss(server_pid) if server_pid is not None else None
        client = client_rss(server_pid)
        row: dict[str, Any] = {
            "t_s": round(time.time() - t0, 1),
            "server_mb": round(server.total_mb, 1) if server else float("nan"),
            "client_mb": round(client.total_mb, 1),
            "load1": round(os.getloadavg()[0], 2),
        }
        if server:
            row["server_anon_mb"] = round(server.anon_mb, 1)
            row.update({f"server.{k}": round(v, 1) for k, v in server.processes.items()})
        rows.append(row)
        if log is not None:
            log.write(json.dumps(row) + "\n")
            log.flush()
        stop.wait(every_s)
    if log is not None:
        log.close()


def growth(rows: Sequence[dict[str, Any]], key: str, baseline_s: float) -> dict[str, float]:
    """RSS of ``key`` at the first sample after ``baseline_s``, at the end, and the ratio."""
    after = [r for r in rows if r["t_s"] >= baseline_s] or list(rows)
    first, last = after[0][key], rows[-1][key]
    return {
        "baseline_mb": first,
        "end_mb": last,
        "max_mb": max(r[key] for r in after),
        "growth": last / first - 1.0 if first else float("nan"),
    }


@dataclass(frozen=True)
class SoakConfig:
    """One soak (the options of ``camdet perf soak``).

    Attributes:
        url: gRPC endpoint of a running server; None starts a portable one.
        repository: Model repository of a started server (and of the frames).
        out: Output folder (``soak.json``, ``rss.csv``, ``rss.jsonl``, server log).
        cameras: Cameras at a fixed rate.
        fps: Frames per second of each camera.
        duration: Measured seconds.
        warmup: Seconds of load before the window, not counted.
        processes: Client worker processes.
        sample_s: RSS sampling period, seconds.
        baseline_s: RSS growth counts from this many seconds after the start.
    """

    url: str | None
    repository: Path
    out: Path
    cameras: int
    fps: float
    duration: float
    warmup: float
    processes: int
    sample_s: float
    baseline_s: float


def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Run the soak ``config`` describes and return its summary."""
    config.out.mkdir(parents=True, exist_ok=True)
    frames, _ = load_frames(BenchConfig(repository=config.repository, out_dir=config.out))
    point = LoadPoint("ours", config.cameras, fps=config.fps, processes=config.processes)
    window = Window(warmup_s=config.warmup, duration_s=config.duration)
    rows: list[dict[str, Any]] = []
    with soak_server(config.url, config.repository, config.out / "server") as probe:
        stop = threading.Event()
        sampler = threading.Thread(
            target=sample_rss,
            args=(probe.pid, config.sample_s, stop, rows, config.out / "rss.jsonl"),
            daemon=True,
        )
        sampler.start()
        try:
            result: PointResult = run_point(probe.url, frames, point, window, probe)
        finally:
            stop.set()
            sampler.join()
    with (config.out / "rss.csv").open("w", newline="") as f:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    # The load's warm-up is inside the first minute: growth counts from --baseline-s.
    summary = {
        "point": point.label,
        "duration_s": config.duration,
        "offered": int(config.cameras * config.fps * result.duration_s),
        "completed": result.completed,
        "failed": result.failed,
        "dropped": result.dropped,
        "latency": result.latency,
        "errors": result.errors,
        "client_rss": growth(rows, "client_mb", config.baseline_s),
        "load1_mean": sum(r["load1"] for r in rows) / len(rows),
        "load1_max": max(r["load1"] for r in rows),
    }
    if probe.pid is not None:
        summary["server_rss"] = growth(rows, "server_mb", config.baseline_s)
    summary["result"] = asdict(result)
    (config.out / "soak.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf soak`` alone, for ``python -m camdet.perf.soak``."""


@app.command()
def soak(
    url: Annotated[
        str | None,
        typer.Option(help="gRPC endpoint of a running server.", show_default="start one"),
    ] = None,
    repository: Annotated[
        Path | None,
        typer.Option(
            help="Model repository.",
            show_default="CAMDET_MODEL_REPOSITORY, ./model_repository or the installed one",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output folder (soak.json, rss.csv, server log).")
    ] = Path("soak-out"),
    cameras: Annotated[int, typer.Option(help="Cameras at a fixed rate.")] = 16,
    fps: Annotated[float, typer.Option(help="Frames per second, per camera.")] = 0.25,
    duration: Annotated[float, typer.Option(help="Measured seconds.")] = 1800.0,
    warmup: Annotated[float, typer.Option(help="Seconds of load first, not counted.")] = 10.0,
    processes: Annotated[int, typer.Option(help="Client worker processes.")] = 1,
    sample_s: Annotated[float, typer.Option(help="RSS sampling period, seconds.")] = 5.0,
    baseline_s: Annotated[
        float, typer.Option(help="RSS growth counts from this many seconds after the start.")
    ] = 60.0,
    max_growth: Annotated[
        float, typer.Option(help="Most RSS growth of either side, e.g. 0.05 = 5%.")
    ] = 0.05,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Info logging.")] = False,
) -> None:
    """Soak: many cameras at a fixed rate for a long time, watching failures and memory.

    Prints the summary; exit 1 on a failed request or too much RSS growth.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    config = SoakConfig(
        url,
        repository or default_repository(),
        out,
        cameras,
        fps,
        duration,
        warmup,
        processes,
        sample_s,
        baseline_s,
    )
    summary = run_soak(config)
    print(
        f"{summary['point']} for {duration:.0f} s: completed {summary['completed']}"
        f" of ~{summary['offered']} offered, failed {summary['failed']},"
        f" dropped {summary['dropped']}, p99 {summary['latency']['p99_ms']:.0f} ms"
    )
    bad = summary["failed"] > 0
    for side in ("server_rss", "client_rss"):
        if side in summary:
            g = summary[side]
            print(
                f"{side}: {g['baseline_mb']:.0f} MiB at {baseline_s:.0f} s -> "
                f"{g['end_mb']:.0f} MiB at the end (max {g['max_mb']:.0f}), "
                f"growth {100 * g['growth']:+.1f}%"
            )
            bad |= g["growth"] > max_growth
    print(f"load average (1 min) mean {summary['load1_mean']:.1f}, max {summary['load1_max']:.1f}")
    if summary["errors"]:
        print("errors:", *summary["errors"], sep="\n  ")
    raise typer.Exit(1 if bad else 0)


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.soak")
