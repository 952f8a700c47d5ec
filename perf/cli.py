"""The typer face of :mod:`camdet.perf`: ``camdet bench`` and ``camdet perf-analyzer``.

``bench``'s options are defined here, once, with help on each (``python -m
camdet.perf.bench`` runs this same command). ``perf-analyzer`` installs, locates and runs
perf_analyzer 2.51 (:mod:`camdet.perf.perf_analyzer`) and runs its sweeps
(:mod:`camdet.perf.perf_analyzer_sweep`). Register both on the main app with
``camdet.perf.cli.register(app)``.
"""

from __future__ import annotations

import enum
import shlex
from pathlib import Path
from typing import Annotated

import typer
from camdet.perf import perf_analyzer
from camdet.perf.perf_analyzer_sweep import (
    MODELS,
    PointResult,
    SweepConfig,
    exit_status,
    machine_defaults,
    run_sweep,
)

CONTEXT_SETTINGS = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "help_option_names": [],
}
"""Let every argument, ``--help`` included, through to the wrapped program's own parser."""

perf_analyzer_app = typer.Typer(
    help=(
        "perf_analyzer 2.51 (the portable server's version) from the tritonclient 2.51.0 "
        "wheel: install it, print its command, run it, sweep with it. PERF_ANALYZER (a "
        "command line) overrides the binary."
    ),
    no_args_is_help=True,
)


class ServerMode(enum.StrEnum):
    """Which server ``camdet bench`` starts when no --url is given."""

    AUTO = "auto"
    PORTABLE = "portable"
    CONTAINER = "container"


bench_app = typer.Typer(add_completion=False)
"""``bench`` alone, for ``python -m camdet.perf.bench``."""


@bench_app.command()
def bench(
    url: Annotated[
        str | None, typer.Option(help="gRPC host:port of a running server; default: start one.")
    ] = None,
    repository: Annotated[
        Path | None,
        typer.Option(
            envvar="CAMDET_MODEL_REPOSITORY",
            help="Production model repository.  [default: model_repository/]",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder (JSON, CSV, PNG, logs).")] = Path(
        "bench-out"
    ),
    input_data: Annotated[
        Path | None, typer.Option(help="perf_analyzer JSON of the ensemble to take frames from.")
    ] = None,
    frames: Annotated[int, typer.Option(help="Synthetic frames when no --input-data.")] = 16,
    sizes: Annotated[str, typer.Option(help="Synthetic camera sizes, WxH,...")] = (
        "1280x720,1920x1080"
    ),
    seed: Annotated[int, typer.Option(help="Scene seed.")] = 0,
    modes: Annotated[
        str,
        typer.Option(
            help="Modes to run, comma-separated, of: ours, naive, bare, video, segment. "
            "video: H.264/HEVC access units to detect_video; segment: DALI's video decoder "
            "on GOP segments, in process, on the --bare-dali-device GPU. With either, "
            "every mode uses the video clip's frames."
        ),
    ] = "ours,naive,bare",
    cameras: Annotated[str, typer.Option(help="Capacity sweep: camera counts.")] = "1,2,4,8",
    rate: Annotated[
        list[str] | None,
        typer.Option(help="CAMERASxFPS fixed-rate point, e.g. 4x5 (repeatable)."),
    ] = None,
    duration: Annotated[float, typer.Option(help="Measured seconds per point.")] = 10.0,
    warmup: Annotated[float, typer.Option(help="Warm-up seconds per point.")] = 3.0,
    warmup_run: Annotated[
        bool,
        typer.Option(
            "--warmup-run/--no-warmup-run",
            help="Run every mode once, unmeasured, before repeat 0 (first-run costs).",
        ),
    ] = True,
    processes: Annotated[
        int, typer.Option(help="Client processes per point (0: threads of this process).")
    ] = 1,
    shm: Annotated[str, typer.Option(help="Input transports: none,system,cuda.")] = "none",
    bare_batch: Annotated[str, typer.Option(help="Bare loop batch sizes.")] = "1,4",
    runner: Annotated[
        str, typer.Option(help="Bare loop detector runner: onnxruntime, torch or a registered one.")
    ] = "onnxruntime",
    bare_preprocess: Annotated[
        str, typer.Option(help="Bare loop decode + letterbox: opencv,dali.")
    ] = "opencv",
    bare_dali_device: Annotated[
        int | None, typer.Option(help="GPU of the bare loop's DALI pipeline; default: CPU.")
    ] = None,
    runner_threads: Annotated[
        int | None, typer.Option(help="Bare runner threads; default: all cores.")
    ] = None,
    repeats: Annotated[
        int, typer.Option(help="Repeat the interleaved (ABBA) sequence this many times.")
    ] = 1,
    ratio_cameras: Annotated[int, typer.Option(help="Camera count of the headline ratios.")] = 4,
    require_ratio: Annotated[
        float | None, typer.Option(help="Exit 1 if ours/bare is below this.")
    ] = None,
    server_mode: Annotated[
        ServerMode,
        typer.Option(
            help="Server the bench starts: auto (the container's tritonserver if on PATH, "
            "else the portable one), portable, or container."
        ),
    ] = ServerMode.AUTO,
    instances: Annotated[
        list[str] | None, typer.Option(help="MODEL=COUNT instances (repeatable).")
    ] = None,
    queue_delay_us: Annotated[
        list[str] | None, typer.Option(help="MODEL=US max queue delay (repeatable).")
    ] = None,
    preferred_batch: Annotated[
        list[str] | None, typer.Option(help="MODEL=2,4 preferred batch sizes (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="MODEL.KEY=VALUE config parameter (repeatable).")
    ] = None,
    server_env: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE environment of the started server (repeatable)."),
    ] = None,
    torch_threads: Annotated[
        int | None, typer.Option(help="Client-side torch threads; default: torch's.")
    ] = None,
    detector_onnx: Annotated[
        Path | None, typer.Option(help="Use this model.onnx as the detector.")
    ] = None,
    video_size: Annotated[str, typer.Option(help="Video modes: the clip's WxH.")] = "1920x1080",
    video_frames: Annotated[
        int, typer.Option(help="Video modes: access units in the clip (whole GOPs).")
    ] = 60,
    gop: Annotated[int, typer.Option(help="Video modes: frames per keyframe interval.")] = 30,
    codec: Annotated[str, typer.Option(help="Video modes: h264 or hevc.")] = "h264",
    keyframes_in_step: Annotated[
        bool,
        typer.Option(
            "--keyframes-in-step",
            help="Video modes: every camera's keyframe in the same frame slot (the bench "
            "until session 22); by default they are spread over the GOP, as independent "
            "cameras' are.",
        ),
    ] = False,
    segment_batch: Annotated[
        str, typer.Option(help="segment mode: GOP segments per decoder run.")
    ] = "8",
    plot: Annotated[
        bool,
        typer.Option(
            "--plot/--no-plot", help="Write bench.png; --no-plot skips it (no matplotlib needed)."
        ),
    ] = True,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every point as it is measured.")
    ] = False,
) -> None:
    """Benchmark ours vs the naive pipeline vs a bare loop, side by side.

    Sweeps camera counts (and fixed rates) on the same frames, prints throughput, latency
    percentiles, CPU per frame and the ratios ours/naive and ours/bare, and writes
    bench.json, bench.csv and bench.png to --out (perf/README.md).
    """
    from camdet.perf.bench_config import config_from_options
    from camdet.perf.bench_run import run_from_cli

    options = {**locals(), "server_mode": server_mode.value}
    for name in ("rate", "instances", "queue_delay_us", "preferred_batch", "param", "server_env"):
        options[name] = options[name] or []
    try:
        config = config_from_options(options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    raise typer.Exit(run_from_cli(config, require_ratio, verbose))


@perf_analyzer_app.command()
def install(
    force: Annotated[bool, typer.Option(help="Fetch again even if installed.")] = False,
) -> None:
    """Fetch the tritonclient 2.51.0 wheel with pip and install its perf_analyzer only."""
    typer.echo(perf_analyzer.install(force=force))


@perf_analyzer_app.command()
def which() -> None:
    """Print the perf_analyzer command line (usable as PERF_ANALYZER), installing if needed."""
    typer.echo(shlex.join(perf_analyzer.ensure_command()))


@perf_analyzer_app.command(context_settings=CONTEXT_SETTINGS, add_help_option=False)
def run(ctx: typer.Context) -> None:
    """Run perf_analyzer with these arguments (--help, which it lacks, prints its usage)."""
    import subprocess

    raise typer.Exit(subprocess.run([*perf_analyzer.ensure_command(), *ctx.args]).returncode)


def _numbers(text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(float(v) for v in text.split(",") if v.strip())


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(v.strip() for v in text.split(",") if v.strip())


def _metrics_url(option: str | None, url: str, collect: bool) -> str | None:
    """``--metrics-url``, or on a GPU machine the server's default metrics port."""
    if option is not None:
        return None if option == "none" else option
    return f"{url.rpartition(':')[0] or 'localhost'}:8002/metrics" if collect else None


def _print_point(result: PointResult) -> None:
    point, row = result.point, (result.rows[-1] if result.rows else {})
    where = f"{point.model} {point.mode}={point.value:g} shm={point.shm}"
    if result.ok:
        p99_ms = float(row.get("p99 latency") or 0) / 1000
        typer.echo(
            f"ok      {where}: {row.get('Inferences/Second')} infer/s, p99 {p99_ms:.1f} ms "
            f"({result.seconds:.0f} s)"
        )
    else:
        typer.echo(f"FAILED  {where}: {result.reason} ({result.seconds:.0f} s)", err=True)


@perf_analyzer_app.command()
def sweep(
    data: Annotated[
        Path,
        typer.Argument(
            help="Folder of <model>.json input data (python -m camdet.perf.input_data --out).",
            exists=True,
            file_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Folder for the CSVs, summary.csv, point logs.")],
    url: Annotated[
        str, typer.Option("--url", envvar="CAMDET_URL", help="Server gRPC endpoint host:port.")
    ] = "localhost:8001",
    models: Annotated[
        str, typer.Option(help="Models, comma-separated; one without DATA/<model>.json is skipped.")
    ] = ",".join(MODELS),
    machine: Annotated[
        str, typer.Option(help="Defaults for: auto (GPU if nvidia-smi/torch sees one), cpu, gpu.")
    ] = "auto",
    concurrency: Annotated[
        str | None,
        typer.Option(help="Concurrency levels, comma-separated (cpu: 1,2,4; gpu: 1,2,...,256)."),
    ] = None,
    rates: Annotated[
        str | None,
        typer.Option(help="Request rates per s, comma-separated (cpu: 1,2,5,10; gpu: 100..2000)."),
    ] = None,
    shm: Annotated[
        str | None,
        typer.Option(help="Transports of none,system,cuda (cpu: none,system; gpu: all three)."),
    ] = None,
    distribution: Annotated[
        str, typer.Option(help="Request-rate arrivals: constant (a camera's fps) or poisson.")
    ] = "constant",
    interval_ms: Annotated[int, typer.Option(help="Measurement window, ms.")] = 5000,
    stability_percentage: Annotated[
        float, typer.Option(help="Allowed spread of the last 3 windows, percent.")
    ] = 10.0,
    max_trials: Annotated[int, typer.Option(help="Windows before a point is given up.")] = 10,
    metrics_url: Annotated[
        str | None,
        typer.Option(
            help="Prometheus endpoint for GPU metrics in the CSV; 'none' for none "
            "(gpu: the --url host, port 8002; cpu: none)."
        ),
    ] = None,
    point_timeout_s: Annotated[
        float | None,
        typer.Option(help="Kill a point after this many s (2 x trials x window + 60)."),
    ] = None,
    extra: Annotated[str, typer.Option(help="More perf_analyzer arguments for every point.")] = "",
    admin_header: Annotated[
        str | None,
        typer.Option(
            envvar="CAMDET_ADMIN_HEADER",
            help="KEY=VALUE of a server started with --restrict-apis, sent with every request "
            "(perf_analyzer reads model configs and statistics and registers shared memory).",
        ),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any point failed.")] = False,
    perf_analyzer_command: Annotated[
        str | None,
        typer.Option(
            "--perf-analyzer",
            envvar="PERF_ANALYZER",
            help="perf_analyzer command line (the installed 2.51, else perf_analyzer on PATH).",
        ),
    ] = None,
) -> None:
    """Sweep concurrency and request rate per model and transport, one run per point.

    A point that fails or never stabilizes is recorded in OUT/summary.csv and the sweep
    goes on. Exit status: 0 if any point was measured (failed ones are named), 1 if none
    was (or, with --strict, if any failed).
    """
    if machine not in ("auto", "cpu", "gpu"):
        raise typer.BadParameter(f"auto, cpu or gpu, not {machine!r}", param_hint="--machine")
    if admin_header is not None:
        try:
            perf_analyzer.admin_header_args(admin_header)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--admin-header") from error
    defaults = machine_defaults(None if machine == "auto" else machine == "gpu")
    config = SweepConfig(
        data=data,
        out=out,
        concurrency=tuple(int(c) for c in _numbers(concurrency) or defaults.concurrency),
        rates=_numbers(rates) or defaults.rates,
        shm=_names(shm) or defaults.shm,
        url=url,
        models=_names(models) or (),
        distribution=distribution,
        interval_ms=interval_ms,
        stability_percentage=stability_percentage,
        max_trials=max_trials,
        metrics_url=_metrics_url(metrics_url, url, defaults.collect_metrics),
        extra=tuple(shlex.split(extra)),
        point_timeout_s=point_timeout_s,
        admin_header=admin_header,
    )
    base = shlex.split(perf_analyzer_command) if perf_analyzer_command else None
    results = run_sweep(config, base or perf_analyzer.ensure_command(), _print_point)
    failed = [r.point.name for r in results if not r.ok]
    typer.echo(f"{len(results) - len(failed)}/{len(results)} points measured; {out}/summary.csv")
    if failed:
        typer.echo("failed: " + " ".join(failed), err=True)
    raise typer.Exit(exit_status(results, strict))


def register(app: typer.Typer) -> None:
    """Add ``bench`` and the ``perf-analyzer`` group to ``app``."""
    app.command("bench")(bench)
    app.add_typer(perf_analyzer_app, name="perf-analyzer")
