"""``camdet bench``: our pipeline, the naive one and a bare loop, measured side by side.

    python -m camdet.perf.bench --cameras 1,2,4,8 --rate 4x5 --repeats 3 --out bench-out

In one run, on the same frames (read from a perf_analyzer input-data JSON) and the same
detector, it measures

- **ours**: JPEG frames to the ``detect`` ensemble (server-side decode, letterbox,
  detector, NMS), as a concurrency sweep over cameras and at fixed per-camera rates;
- **naive**: OpenCV decode + letterbox on the client, raw FP16 tensors to the
  ``detector`` model alone, NMS on the client, over the same sweep;
- **bare**: no server; decode, the project's letterbox, a detector runner (ONNX Runtime
  here, pluggable) and the project's postprocessing in one loop, per batch size
  (``--bare-preprocess dali`` adds the production DALI pipeline run in-process);

and prints throughput, p50/p90/p99 latency, client (and local server) CPU per frame,
Triton's per-model statistics, and the ratios ours / naive and ours / bare per camera
count, measured and from CPU time per frame (median over ``--repeats``, which interleave
the three in ABBA order so drift on a shared host hits them alike). It writes
``bench.json``, ``bench.csv`` and ``bench.png``.

Without ``--url`` it starts its own server on free ports from ``--repository``, after
applying the ``--instances``/``--queue-delay-us``/``--param``/``--preferred-batch``
overrides to a copy of the repository (the production configs stay untouched). The
options are the typer command ``camdet bench`` (:mod:`camdet.perf.cli`), which
``python -m camdet.perf.bench`` runs too.

The bench is :mod:`~camdet.perf.bench_config` (what a run does),
:mod:`~camdet.perf.bench_server` (the server it measures), :mod:`~camdet.perf.bench_run`
(the run and its report) and :mod:`~camdet.perf.ratios` (the headline); their public
names are importable from here too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from camdet.perf.bench_config import (
    BENCH_MODES,
    DEFAULT_MODES,
    VIDEO_MODES,
    BenchConfig,
    Tuning,
    VideoClip,
    config_from_options,
    default_repository,
)
from camdet.perf.bench_run import (
    BenchReport,
    load_clip,
    load_frames,
    run_bench,
    run_from_cli,
    server_points,
    write_report,
)
from camdet.perf.bench_server import bench_server, tuned_repository
from camdet.perf.ratios import side_by_side_ratios

__all__ = [
    "BENCH_MODES",
    "DEFAULT_MODES",
    "VIDEO_MODES",
    "BenchConfig",
    "BenchReport",
    "Tuning",
    "VideoClip",
    "bench_server",
    "config_from_options",
    "default_repository",
    "load_clip",
    "load_frames",
    "main",
    "run_bench",
    "run_from_cli",
    "server_points",
    "side_by_side_ratios",
    "tuned_repository",
    "write_report",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``camdet bench`` with ``argv`` (``python -m camdet.perf.bench ARGS``); exit status."""
    import click
    import typer.main
    from camdet.perf.cli import bench_app

    command = typer.main.get_command(bench_app)
    try:
        command.main(argv, prog_name="python -m camdet.perf.bench", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
