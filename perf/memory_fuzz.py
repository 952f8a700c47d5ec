"""Memory under fuzz (issue #12): does the server's RSS come back after bad inputs?

``python -m camdet.perf.memory_fuzz --inputs 10000``

Starts a portable server (or measures the one at ``--url`` whose process is
``--server-pid``), warms it up with valid frames (and one real frame at each of the largest
sizes validate lets through, whose decoder buffers a server keeps, bounded by the decode
budget), records the summed RSS of tritonserver
and all its descendants (the Python-backend stubs), sends ``--inputs`` malformed and
edge-case requests (:mod:`camdet.perf.fuzz_inputs`) interleaved with valid frames from
``--threads`` threads, idles ``--idle`` seconds and records the RSS again. It prints
both, their ratio and the processes that moved, and exits 1 when the whole RSS grew by
more than ``--max-ratio`` (issue #12: 1.2), when the anonymous part of RSS (heaps and
buffers: what a leak grows) grew by more than ``--max-anon-ratio`` (if given), or when
the server stops answering valid frames. On a shared machine short of memory whole RSS
also moves with evicted library pages (:class:`camdet.perf.rss.TreeRss`). With a GPU it
also prints the GPU memory of the server's processes (not gated: DALI's GPU decoder
keeps buffers for the largest frames it met, bounded by ``max_pixels``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from camdet.perf.fuzz_inputs import FuzzInput, fuzz_inputs, largest_frames, valid_frames
from camdet.perf.rss import TreeRss, tree_gpu_mb, tree_rss

logger = logging.getLogger(__name__)


@dataclass
class FuzzReport:
    """What one fuzz did to the server.

    Attributes:
        inputs: Fuzz requests sent (warm-up excluded).
        seconds: Wall time of the fuzz phase.
        answered: ``{kind: requests answered}``.
        failed: ``{kind: requests that failed}`` (most malformed inputs should).
        before: RSS after warm-up.
        peak_mb: Largest summed RSS sampled during the fuzz.
        after: RSS after the fuzz and the idle period.
        alive: Whether valid frames were still answered at the end.
        errors: Failures of valid frames, during the fuzz or in the final check.
        gpu_before_mb: GPU memory of the server's processes after warm-up, MiB (None
            without a GPU).
        gpu_after_mb: The same after the fuzz and the idle period.
    """

    inputs: int
    seconds: float
    answered: dict[str, int]
    failed: dict[str, int]
    before: TreeRss
    peak_mb: float
    after: TreeRss
    alive: bool
    errors: list[str] = field(default_factory=list)
    gpu_before_mb: float | None = None
    gpu_after_mb: float | None = None

    @property
    def ratio(self) -> float:
        """Anonymous RSS after / after warm-up (heaps and buffers: where a leak grows)."""
        return self.after.anon_mb / self.before.anon_mb

    @property
    def rss_ratio(self) -> float:
        """Whole RSS after / after warm-up: the issue's bound (1.2)."""
        return self.after.total_mb / self.before.total_mb

    def moved(self, min_mb: float = 5.0) -> dict[str, tuple[float, float]]:
        """``{process: (before, after)}`` anonymous MiB of those that moved by ``min_mb``."""
        labels = dict.fromkeys([*self.before.anon, *self.after.anon])
        pairs = {k: (self.before.anon.get(k, 0.0), self.after.anon.get(k, 0.0)) for k in labels}
        return {k: v for k, v in pairs.items() if abs(v[1] - v[0]) >= min_mb}


def _send(client: object, item: FuzzInput, timeout_s: float) -> str | None:
    """Send one request; None when answered, else the error message."""
    from tritonclient.utils import InferenceServerException

    from camdet.contract import ENSEMBLE, frame_input, requested_outputs

    try:
        client.infer(  # type: ignore[attr-defined]
            ENSEMBLE,
            frame_input(item.data),
            outputs=requested_outputs(),
            parameters=item.parameters,
            client_timeout=timeout_s,
        )
    except InferenceServerException as exc:
        return str(exc)[:200]
    return None


def warm_up(url: str, frames: Sequence[bytes], rounds: int, threads: int) -> None:
    """Send every valid frame ``rounds`` times from ``threads`` threads (batches form)."""
    items = [FuzzInput("valid", f) for _ in range(rounds) for f in frames]
    _, failed, _ = _run_threads(url, iter(items), threads, 120.0)
    if failed:
        raise RuntimeError(f"warm-up frames failed: {failed}")


def _run_threads(
    url: str, items: Iterator[FuzzInput], threads: int, timeout_s: float
) -> tuple[Counter[str], Counter[str], list[str]]:
    """Send ``items`` from ``threads`` threads, one gRPC client each, until exhausted."""
    import tritonclient.grpc as grpcclient

    lock = threading.Lock()
    answered: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    errors: list[str] = []

    def worker() -> None:
        with grpcclient.InferenceServerClient(url) as client:
            while True:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                error = _send(client, item, timeout_s)
                with lock:
                    (failed if error else answered)[item.kind] += 1
                    if error and item.kind == "valid" and len(errors) < 5:
                        errors.append(error)  # a valid frame must never fail

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return answered, failed, errors


def run_fuzz(
    url: str,
    server_pid: int,
    inputs: int,
    threads: int = 8,
    warmup_rounds: int = 4,
    idle_s: float = 10.0,
    seed: int = 0,
    warmup_fuzz: int = 0,
) -> FuzzReport:
    """Warm up, measure, fuzz, idle, measure (see the module docstring).

    Args:
        url: The server's gRPC ``host:port``.
        server_pid: tritonserver's process id (its RSS and its stubs' are summed).
        inputs: Fuzz inputs measured.
        threads: Client threads, one gRPC client each.
        warmup_rounds: Times each valid frame is sent before measuring.
        idle_s: Seconds to wait after the fuzz before measuring again.
        seed: Draws of the inputs.
        warmup_fuzz: Fuzz inputs sent during the warm-up (other draws than the measured
            ones): caches that fill once (allocator pools, ONNX Runtime's arena for odd
            batch sizes, decoder buffers of refused frames) are then in the baseline, and
            what still grows is what grows with the inputs, as a leak does.
    """
    frames = valid_frames(seed=seed)
    warm_up(url, frames, warmup_rounds, threads)
    warm_up(url, largest_frames(), 1, 1)  # the decoder's buffers for the largest frames
    if warmup_fuzz:
        _run_threads(url, fuzz_inputs(warmup_fuzz, seed + 1), threads, 300.0)
    time.sleep(min(idle_s, 5.0))
    before, gpu_before = tree_rss(server_pid), tree_gpu_mb(server_pid)
    peak = [before.total_mb]
    done = threading.Event()

    def watch_peak() -> None:
        while not done.wait(1.0):
            peak[0] = max(peak[0], tree_rss(server_pid).total_mb)

    watcher = threading.Thread(target=watch_peak, daemon=True)
    watcher.start()
    start = time.monotonic()
    answered, failed, errors = _run_threads(url, fuzz_inputs(inputs, seed), threads, 300.0)
    seconds = time.monotonic() - start
    done.set()
    watcher.join()
    time.sleep(idle_s)
    after, gpu_after = tree_rss(server_pid), tree_gpu_mb(server_pid)
    check_answered, check_failed, check_errors = _run_threads(
        url, iter([FuzzInput("valid", f) for f in frames]), 1, 300.0
    )
    return FuzzReport(
        inputs=inputs,
        seconds=seconds,
        answered=dict(answered),
        failed=dict(failed),
        before=before,
        peak_mb=peak[0],
        after=after,
        alive=not check_failed and check_answered["valid"] == len(frames),
        errors=errors + check_errors,
        gpu_before_mb=gpu_before,
        gpu_after_mb=gpu_after,
    )


@contextlib.contextmanager
def fuzz_target(
    url: str | None, server_pid: int | None, workdir: Path
) -> Iterator[tuple[str, int]]:
    """(gRPC url, server pid): the given server, or a portable one started here."""
    if url is not None:
        if server_pid is None:
            raise SystemExit("--url needs --server-pid (the tritonserver process to measure)")
        yield url, server_pid
        return
    from camdet.perf.bench_config import default_repository

    from camdet.serving.server import Ports, serve

    with serve(default_repository(), Ports.free(), portable=True, workdir=workdir) as server:
        if server.process is None:
            raise SystemExit("the server has no local process to measure")
        yield server.grpc_url, server.process.pid


def print_report(report: FuzzReport) -> None:
    """The numbers, and per process what moved."""
    print(f"{report.inputs} fuzz inputs in {report.seconds:.0f} s")
    print(f"answered: {dict(sorted(report.answered.items()))}")
    print(f"failed:   {dict(sorted(report.failed.items()))}")
    before, after = report.before, report.after
    print(
        f"RSS after warm-up {before.total_mb:.0f} MiB, peak {report.peak_mb:.0f} MiB, "
        f"after fuzz + idle {after.total_mb:.0f} MiB: ratio {report.rss_ratio:.3f}"
    )
    print(
        f"anonymous RSS after warm-up {before.anon_mb:.0f} MiB, after fuzz + idle "
        f"{after.anon_mb:.0f} MiB: ratio {report.ratio:.3f}"
    )
    if report.gpu_before_mb and report.gpu_after_mb is not None:
        print(
            f"GPU memory after warm-up {report.gpu_before_mb:.0f} MiB, after fuzz + idle "
            f"{report.gpu_after_mb:.0f} MiB: ratio {report.gpu_after_mb / report.gpu_before_mb:.3f}"
        )
    print(f"  {'process':32s} {'RSS MiB':>17s} {'anonymous MiB':>19s}")
    for label in sorted(report.moved()):
        rss = (before.processes.get(label, 0.0), after.processes.get(label, 0.0))
        anon = (before.anon.get(label, 0.0), after.anon.get(label, 0.0))
        print(f"  {label:32s} {rss[0]:7.0f} -> {rss[1]:6.0f} {anon[0]:8.0f} -> {anon[1]:7.0f}")
    if not report.alive:
        print("valid frames no longer answered after the fuzz")
    for error in report.errors:
        print(f"valid frame failed: {error}")


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf memory-fuzz`` alone, for ``python -m camdet.perf.memory_fuzz``."""


@app.command()
def memory_fuzz(
    url: Annotated[
        str | None,
        typer.Option(help="gRPC endpoint of a running server.", show_default="start one"),
    ] = None,
    server_pid: Annotated[
        int | None, typer.Option(help="Its tritonserver process, with --url.")
    ] = None,
    inputs: Annotated[int, typer.Option(help="Malformed and edge-case requests.")] = 10_000,
    threads: Annotated[int, typer.Option(help="Threads sending them.")] = 8,
    warmup_rounds: Annotated[
        int, typer.Option(help="Rounds of valid frames before the first RSS.")
    ] = 4,
    idle: Annotated[float, typer.Option(help="Seconds before the last RSS.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the fuzz inputs.")] = 0,
    max_ratio: Annotated[float, typer.Option(help="Most whole RSS after/before.")] = 1.2,
    max_anon_ratio: Annotated[
        float | None, typer.Option(help="Most anonymous RSS after/before (not gated if unset).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder (memory_fuzz.json, server log).")] = Path(
        "memory-fuzz-out"
    ),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Info logging.")] = False,
) -> None:
    """Memory under fuzz: does the server's RSS come back after bad inputs?

    Exit 1 when the RSS grew past --max-ratio (or --max-anon-ratio), or the server
    stopped answering valid frames.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    with fuzz_target(url, server_pid, out / "server") as (target, pid):
        report = run_fuzz(target, pid, inputs, threads, warmup_rounds, idle, seed)
    print_report(report)
    summary = {**asdict(report), "ratio": report.ratio, "rss_ratio": report.rss_ratio}
    (out / "memory_fuzz.json").write_text(json.dumps(summary, indent=2))
    anon_ok = max_anon_ratio is None or report.ratio <= max_anon_ratio
    held = report.rss_ratio <= max_ratio and anon_ok
    raise typer.Exit(0 if held and report.alive and not report.errors else 1)


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.memory_fuzz")
