"""Several GPUs on one host: one server per GPU, or one server on all, against one GPU.

    python -m camdet.perf.multi_gpu --gpus 2 --cameras-per-gpu 256 --processes-per-gpu 8 \
        --input-data /tmp/pd/detect.json --out bench-out/multi-gpu --require-ratio 1.9

In one run, on the same frames, at saturation (capacity mode: every camera sends its next
frame as soon as the last one is answered), it measures three layouts of the portable
ensemble server:

- ``one``: one server that sees GPU 0 only (``CUDA_VISIBLE_DEVICES=0``), with
  ``cameras_per_gpu`` cameras: the baseline;
- ``per-gpu``: one server per GPU (``CUDA_VISIBLE_DEVICES=i``), each with
  ``cameras_per_gpu`` cameras of its own;
- ``shared``: one server that sees every GPU: Triton places each GPU instance group's
  ``count`` instances on every visible GPU; ``gpus * cameras_per_gpu`` cameras.

The servers are started once, in parallel (``one`` is the first ``per-gpu`` server measured
alone). Layouts are measured in ABBA order over ``--repeats``. For each layout, every
server's cameras share one window, so the frames/s of its servers add up. It prints
frames/s, latency and the ratio to ``one`` per layout (median over repeats of the ratio
within a repeat), names the better 2-GPU layout, writes ``multi_gpu.json``, and exits 1
when ``--require-ratio`` is not met by it.

Without a GPU the servers run on the CPU and ``CUDA_VISIBLE_DEVICES`` changes nothing:
the same run then measures how the layouts share the CPU (its tests use that form).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import statistics
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from camdet.perf.cameras import worker_main
from camdet.perf.frames import parse_size, synthetic_frames
from camdet.perf.load import ServerProbe
from camdet.perf.measurement import (
    CameraLog,
    LoadPoint,
    PointResult,
    Window,
    WindowEdges,
    summarize,
)

from camdet.serving.repository import PRODUCTION_REPOSITORY

logger = logging.getLogger(__name__)

LAYOUTS = ("one", "per-gpu", "shared")
_READY_TIMEOUT_S = 300.0
_START_TIMEOUT_S = 600.0  # models load on several GPUs (or a busy CPU) at once


@dataclass(frozen=True)
class MultiGpuConfig:
    """What to measure.

    Attributes:
        gpus: GPUs used by ``per-gpu`` and ``shared`` (devices ``0..gpus-1``).
        cameras_per_gpu: Concurrent cameras per GPU (capacity mode).
        processes_per_gpu: Client worker processes per GPU.
        window: Warm-up and counted window of each measurement, seconds.
        repeats: Measurements of each layout (ABBA order).
        layouts: Layouts to measure; ``one`` is the baseline of the ratios.
        frames: Encoded frames (JPEG bytes) every layout sends, camera ``c`` from frame
            ``c`` on.
        repository: Production model repository.
        out_dir: Where the servers' work folders and ``multi_gpu.json`` go.
    """

    gpus: int
    cameras_per_gpu: int
    processes_per_gpu: int
    window: Window
    repeats: int
    layouts: tuple[str, ...]
    frames: list[bytes] = field(repr=False)
    repository: Path = Path("model_repository")
    out_dir: Path = Path("bench-out/multi-gpu")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.layouts) - set(LAYOUTS))
        if unknown or "one" not in self.layouts or len(self.layouts) < 2:
            raise ValueError(f"layouts: 'one' and at least one of {LAYOUTS[1:]}, got {unknown}")
        if self.gpus < 2 or self.cameras_per_gpu < 1 or self.processes_per_gpu < 1:
            raise ValueError("need gpus >= 2, cameras_per_gpu >= 1, processes_per_gpu >= 1")


def visible_devices(layout: str, gpus: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each server of a layout."""
    if layout == "one":
        return ["0"]
    if layout == "per-gpu":
        return [str(gpu) for gpu in range(gpus)]
    return [",".join(str(gpu) for gpu in range(gpus))]


@dataclass
class LayoutResult:
    """One measurement of one layout.

    Attributes:
        layout: ``one``, ``per-gpu`` or ``shared``.
        repeat: Which repetition (0-based).
        throughput_fps: Answered frames per second of all its servers in the window.
        servers: Each server's result (cameras, frames/s, latency, errors).
    """

    layout: str
    repeat: int
    throughput_fps: float
    servers: list[PointResult]

    @property
    def failed(self) -> int:
        """Failed requests in the window, over every server."""
        return sum(s.failed for s in self.servers)


# ----------------------------------------------------------------------------- servers


def _server_launch(repository: Path, workdir: Path, visible: str) -> Any:
    """A not yet started portable server that sees only the ``visible`` CUDA devices."""
    from dataclasses import replace

    from camdet.serving.launch import cuda_pool_args, has_cuda_gpu, portable_launch
    from camdet.serving.server import Ports, TritonServer

    ports = Ports.free()
    launch = portable_launch(repository, ports, workdir)
    # The pool flags name device ids; the server numbers only the devices it sees.
    argv = [a for a in launch.argv if not a.startswith("--cuda-memory-pool-byte-size")]
    if has_cuda_gpu():
        argv += cuda_pool_args(repository, gpus=len(visible.split(",")))
    env = {**launch.env, "CUDA_VISIBLE_DEVICES": visible}
    return TritonServer(replace(launch, argv=argv, env=env), ports, workdir / "tritonserver.log")


@contextlib.contextmanager
def running_servers(config: MultiGpuConfig) -> Iterator[dict[str, Any]]:
    """Every server the layouts need, by visible devices, started in parallel."""
    from camdet.serving.launch import has_cuda_gpu
    from camdet.serving.portable import generate_portable_repository

    root = config.out_dir / "servers"
    repository = generate_portable_repository(
        config.repository, root / "portable_repository", gpu=has_cuda_gpu()
    )
    wanted = sorted({v for layout in config.layouts for v in visible_devices(layout, config.gpus)})
    servers = {}
    for index, visible in enumerate(wanted):
        workdir = root / f"server{index}"
        workdir.mkdir(parents=True, exist_ok=True)
        servers[visible] = _server_launch(repository, workdir, visible)
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.callback(server.stop)
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(_START_TIMEOUT_S), servers.values()))
        yield servers


def process_environment(pid: int, name: str) -> str | None:
    """An environment variable as a running process sees it (Linux ``/proc``)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    for entry in raw.split(b"\0"):
        key, _, value = entry.partition(b"=")
        if key.decode() == name:
            return value.decode()
    return None


# ----------------------------------------------------------------------------- load


def _expect(message: Any) -> Any:
    if isinstance(message, BaseException):
        raise RuntimeError(str(message))
    return message


@dataclass
class _Worker:
    """A client process and the queue of the server it loads."""

    process: Any
    results: Any


def _plan_workers(
    context: Any, servers: Sequence[Any], frames: list[bytes], cameras: int, processes: int,
    window: Window, start: Any, go: Any,
) -> tuple[list[LoadPoint], list[list[_Worker]]]:  # fmt: skip
    """Each server's load point and worker processes (not started): cameras split evenly."""
    points, workers = [], []
    for index, server in enumerate(servers):
        mine = list(range(index, cameras, len(servers)))
        share = max(1, processes // len(servers))
        point = LoadPoint("ours", len(mine), None, share)
        # One queue per server, so each worker's log is counted for its own server.
        results = context.Queue()
        chunks = [mine[n::share] for n in range(share) if mine[n::share]]
        points.append(point)
        workers.append(
            [
                _Worker(
                    context.Process(
                        target=worker_main,
                        args=(server.grpc_url, frames, point, chunk, window, start, go, results),
                        daemon=True,
                    ),
                    results,
                )
                for chunk in chunks
            ]
        )
    return points, workers


def measure_layout(
    servers: Sequence[Any], frames: list[bytes], cameras: int, processes: int, window: Window
) -> list[PointResult]:
    """Saturate the servers with one shared window; their cameras and clients split evenly.

    Every worker process of every server connects and warms up first; then all start at
    the same instant, so the servers' frames/s are over the same seconds and add up.

    Returns:
        One result per server, in order.
    """
    context = mp.get_context("spawn")
    start, go = context.Value("d", 0.0), context.Event()
    points, per_server = _plan_workers(
        context, servers, frames, cameras, processes, window, start, go
    )
    workers = [w for mine in per_server for w in mine]
    for worker in workers:
        worker.process.start()
    try:
        for worker in workers:
            _expect(worker.results.get(timeout=_READY_TIMEOUT_S))
        start.value = time.time() + 0.2
        go.set()
        probes = [ServerProbe(s.grpc_url, s.process.pid) for s in servers]
        edges = _shared_edges(probes, start.value, window)
        logs = [CameraLog() for _ in servers]
        for log, mine in zip(logs, per_server, strict=True):
            for worker in mine:
                log.merge(_expect(worker.results.get(timeout=window.duration_s + 120)))
    except BaseException:
        for worker in workers:
            worker.process.kill()
        raise
    finally:
        for worker in workers:
            worker.process.join(timeout=30)
    return [summarize(p, log, e) for p, log, e in zip(points, logs, edges, strict=True)]


def _shared_edges(probes: list[ServerProbe], t0: float, window: Window) -> list[WindowEdges]:
    """Sample every server at the common window's start and end."""
    start, end = t0 + window.warmup_s, t0 + window.warmup_s + window.duration_s
    time.sleep(max(0.0, start - time.time()))
    before = [probe.sample() for probe in probes]
    time.sleep(max(0.0, end - time.time()))
    after = [probe.sample() for probe in probes]
    return [
        WindowEdges(start, end, b[0], a[0], a[1] - b[1]) for b, a in zip(before, after, strict=True)
    ]


# ----------------------------------------------------------------------------- run


def layout_order(layouts: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, layout) in ABBA order: odd repeats reverse, so drift cancels in ratios."""
    order = []
    for repeat in range(repeats):
        names = list(layouts) if repeat % 2 == 0 else list(reversed(layouts))
        order += [(repeat, name) for name in names]
    return order


def run(config: MultiGpuConfig) -> dict[str, Any]:
    """Start the servers, measure every layout, and return the report (also written)."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    results: list[LayoutResult] = []
    with running_servers(config) as servers:
        seen = {
            visible: process_environment(s.process.pid, "CUDA_VISIBLE_DEVICES")
            for visible, s in servers.items()
        }
        for repeat, layout in layout_order(config.layouts, config.repeats):
            chosen = [servers[v] for v in visible_devices(layout, config.gpus)]
            scale = 1 if layout == "one" else config.gpus
            measured = measure_layout(
                chosen,
                config.frames,
                scale * config.cameras_per_gpu,
                scale * config.processes_per_gpu,
                config.window,
            )
            total = sum(m.throughput_fps for m in measured)
            results.append(LayoutResult(layout, repeat, total, measured))
            logger.info("%s (repeat %d): %.1f frames/s", layout, repeat, total)
    report = build_report(config, results, seen)
    (config.out_dir / "multi_gpu.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def build_report(
    config: MultiGpuConfig, results: list[LayoutResult], seen: dict[str, str | None]
) -> dict[str, Any]:
    """Frames/s per layout, ratios to ``one`` (median of per-repeat ratios), the choice."""
    from camdet.perf.report import machine_info

    by_repeat = {(r.repeat, r.layout): r for r in results}
    layouts = {}
    for layout in config.layouts:
        mine = [r for r in results if r.layout == layout]
        ratios = [r.throughput_fps / by_repeat[(r.repeat, "one")].throughput_fps for r in mine]
        layouts[layout] = {
            "servers": visible_devices(layout, config.gpus),
            "throughput_fps": statistics.median(r.throughput_fps for r in mine),
            "ratio_to_one": statistics.median(ratios),
            "failed": sum(r.failed for r in mine),
        }
    candidates = [name for name in config.layouts if name != "one"]
    choice = max(candidates, key=lambda name: layouts[name]["ratio_to_one"])
    return {
        "machine": machine_info(),
        "settings": {k: v for k, v in asdict(config).items() if k != "frames"}
        | {"frame_count": len(config.frames)},
        "visible_devices_seen": seen,
        "layouts": layouts,
        "choice": choice,
        "results": [{**asdict(r), "servers": [s.row() for s in r.servers]} for r in results],
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few lines of text."""
    lines = [f"{'layout':<9} {'servers':<12} {'frames/s':>9} {'x one':>6} {'failed':>6}"]
    for name, row in report["layouts"].items():
        lines.append(
            f"{name:<9} {' '.join(row['servers']):<12} {row['throughput_fps']:>9.1f} "
            f"{row['ratio_to_one']:>6.2f} {row['failed']:>6}"
        )
    choice = report["choice"]
    lines.append(f"choice: {choice} ({report['layouts'][choice]['ratio_to_one']:.2f}x one GPU)")
    return lines


# ------------------------------------------------------------------------------- CLI
# ``camdet perf multi-gpu``; ``python -m camdet.perf.multi_gpu`` runs the same command.

app = typer.Typer(add_completion=False)


def load_frames(
    input_data: Path | None, count: int, size: str, repository: Path, out_dir: Path
) -> list[bytes]:
    """The run's frames, always read back from an ensemble input-data JSON (as the bench)."""
    from camdet.perf.input_data import read_encoded_frames, write_input_data

    if input_data is None:
        frames = synthetic_frames(count, (parse_size(size),))
        input_data = write_input_data(
            out_dir / "input_data", frames, repository, models=("detect",)
        )["detect"]
    return read_encoded_frames(input_data)


@app.command()
def multi_gpu(
    gpus: Annotated[int, typer.Option(min=2, help="GPUs of the 2-GPU layouts (0..gpus-1).")] = 2,
    cameras_per_gpu: Annotated[
        int, typer.Option(min=1, help="Cameras per GPU, capacity mode (saturation).")
    ] = 256,
    processes_per_gpu: Annotated[
        int, typer.Option(min=1, help="Client worker processes per GPU.")
    ] = 8,
    layouts: Annotated[
        str, typer.Option(help=f"Comma-separated, 'one' included: {', '.join(LAYOUTS)}.")
    ] = ",".join(LAYOUTS),
    warmup: Annotated[float, typer.Option(help="Warm-up before each window, seconds.")] = 5.0,
    duration: Annotated[float, typer.Option(help="Counted window, seconds.")] = 15.0,
    repeats: Annotated[int, typer.Option(min=1, help="Measurements per layout, ABBA.")] = 2,
    input_data: Annotated[
        Path | None,
        typer.Option(help="perf_analyzer input data of 'detect' (else synthetic frames)."),
    ] = None,
    frames: Annotated[int, typer.Option(min=1, help="Synthetic frames to cycle.")] = 64,
    size: Annotated[str, typer.Option(help="Synthetic frame size WIDTHxHEIGHT.")] = "1920x1080",
    repository: Annotated[
        Path, typer.Option(help="Production model repository.")
    ] = PRODUCTION_REPOSITORY,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("bench-out/multi-gpu"),
    require_ratio: Annotated[
        float | None,
        typer.Option(help="Exit 1 unless the better multi-GPU layout reaches this x one GPU."),
    ] = None,
) -> None:
    """One server on GPU 0 vs one server per GPU vs one server on every GPU, one run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = MultiGpuConfig(
        gpus=gpus,
        cameras_per_gpu=cameras_per_gpu,
        processes_per_gpu=processes_per_gpu,
        window=Window(warmup, duration),
        repeats=repeats,
        layouts=tuple(name.strip() for name in layouts.split(",")),
        frames=load_frames(input_data, frames, size, repository, out),
        repository=repository,
        out_dir=out,
    )
    report = run(config)
    for line in summary_lines(report):
        typer.echo(line)
    typer.echo(f"report: {out / 'multi_gpu.json'}")
    best = report["layouts"][report["choice"]]["ratio_to_one"]
    if require_ratio is not None and best < require_ratio:
        typer.echo(f"FAILED: {best:.2f}x < required {require_ratio:.2f}x", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.multi_gpu")
