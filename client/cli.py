"""``camdet ingest``: stream cameras to the ``detect`` ensemble and write the results.

The command only parses arguments; the work is done by :class:`camdet.client.streamer.Ingest`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from camdet.client.config import CameraConfig, camera_from_argument, check_unique, load_cameras
from camdet.client.ingest_options import IngestOptions, Mode
from camdet.client.metrics import IngestCollector, serve_metrics
from camdet.client.report import LiveView, totals_table
from camdet.client.servers import TlsFiles
from camdet.client.sharding import SHARD_ENV, Shard, choose_servers, shard_cameras
from camdet.client.sinks import AnnotatedVideoSink, JsonLinesSink, Sink
from camdet.client.sources import SourceError
from camdet.client.streamer import Ingest
from camdet.client.view.options import (
    MetricsOption,
    ViewFpsOption,
    ViewKeyOption,
    ViewOption,
    ViewSettings,
    ViewWidthOption,
    attach_view,
    view_settings,
)
from camdet.client.view.sink import ViewSink
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from camdet.contract import DEFAULT_URL, threshold_parameters
from camdet.tracking.lines import CountLine

if TYPE_CHECKING:
    from camdet.client.view.app import View

logger = logging.getLogger(__name__)

_EXISTING_FILE = {"exists": True, "dir_okay": False, "readable": True}


def _cameras(
    arguments: list[str], camera_file: Path | None, fps: float | None, loop: bool
) -> list[CameraConfig]:
    cameras = load_cameras(camera_file) if camera_file else []
    offset = len(cameras)
    cameras += [camera_from_argument(a, offset + i) for i, a in enumerate(arguments)]
    if not cameras:
        raise typer.BadParameter("give camera URLs as arguments or a --cameras file")
    return check_unique(replace(c, fps=c.fps or fps, loop=c.loop or loop) for c in cameras)


def _sinks(
    jsonl: Path | None, video_dir: Path | None, view: ViewSettings | None = None
) -> list[Sink]:
    sinks: list[Sink] = [] if view is None else [ViewSink(view.fps, view.max_width)]
    if jsonl is not None:
        sinks.append(JsonLinesSink(jsonl))
    if video_dir is not None:
        sinks.append(AnnotatedVideoSink(video_dir))
    return sinks


async def _run(
    ingest: Ingest,
    duration_s: float | None,
    view: View | None = None,
    on_view: Callable[[str], None] = print,
) -> None:
    """Run until the cameras end, ``duration_s`` passes, or SIGINT/SIGTERM.

    A first signal drains cleanly; a second one cuts the drain short (frames on the wire
    stay in flight). The view, if any, listens from before the first frame to the end.
    """
    loop = asyncio.get_running_loop()
    if view is not None:
        on_view(await view.start())
    try:
        await _run_until_stopped(ingest, duration_s, loop)
    finally:
        if view is not None:
            await view.close()


def run_with_view(
    ingest: Ingest,
    duration_s: float | None,
    view: View | None,
    on_view: Callable[[str], None] = print,
) -> None:
    """Run an ingest (and its view) on a new event loop until it ends or is stopped."""
    asyncio.run(_run(ingest, duration_s, view, on_view))


async def _run_until_stopped(
    ingest: Ingest, duration_s: float | None, loop: asyncio.AbstractEventLoop
) -> None:
    task = asyncio.ensure_future(ingest.run())
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            ingest.stop()
        else:
            ingest.abandon()  # no traceback, no frame failed by the stop

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if duration_s is not None:
        loop.call_later(duration_s, ingest.stop)
    try:
        await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def ingest(
    cameras: Annotated[
        list[str] | None,
        typer.Argument(
            help="Cameras: URL or ID=URL. rtsp:// or rtsps:// (TCP), http(s):// MJPEG, a video "
            "file, an image folder, /dev/videoN or usb:N.",
            show_default=False,
        ),
    ] = None,
    camera_file: Annotated[
        Path | None,
        typer.Option("--cameras", "-c", help="Camera list (.yaml/.yml/.toml).", **_EXISTING_FILE),
    ] = None,
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            "-s",
            envvar="CAMDET_URL",
            help="Server gRPC URL host:port (grpcs://host:port for TLS); repeat to spread "
            "cameras over several servers (consistent hashing by camera id) with fail-over. "
            f"Default: the --cameras file's 'servers', else {DEFAULT_URL}.",
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        Shard | None,
        typer.Option(
            envvar=SHARD_ENV,
            parser=Shard.parse,
            metavar="INDEX/COUNT",
            help="Stream only this replica's share of the cameras (stable by camera id), "
            "e.g. 0/3 .. 2/3 for three ingest replicas over one camera file.",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        Mode,
        typer.Option(help="realtime: drop stale frames, bounded latency; capacity: drop nothing."),
    ] = Mode.REALTIME,
    fps: Annotated[
        float | None, typer.Option(help="Target fps of cameras that set none (decimation).")
    ] = None,
    loop: Annotated[bool, typer.Option(help="Loop video files and image folders.")] = False,
    max_in_flight: Annotated[int, typer.Option(min=1, help="Requests in flight per camera.")] = 2,
    queue_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Frames buffered per camera. Default: 1 in realtime mode, "
            "--max-in-flight in capacity mode.",
        ),
    ] = None,
    max_frame_age: Annotated[
        float, typer.Option(help="Realtime: drop frames older than this many seconds.")
    ] = 2.0,
    jpeg_quality: Annotated[
        int, typer.Option(min=1, max=100, help="JPEG quality of re-encoded frames.")
    ] = 90,
    decode_on_client: Annotated[
        bool,
        typer.Option(
            help="Decode H.264/HEVC here and send JPEGs (servers without the detect_video "
            "ensemble; --fps decimation of such cameras). Default: their packets pass "
            "through undecoded and the server decodes them. Implied by --video-dir."
        ),
    ] = False,
    request_timeout: Annotated[float, typer.Option(help="Request deadline, seconds.")] = 30.0,
    confidence: Annotated[float | None, typer.Option(help="Confidence threshold.")] = None,
    iou: Annotated[float | None, typer.Option(help="NMS IoU threshold.")] = None,
    max_detections: Annotated[int | None, typer.Option(help="Detections per frame.")] = None,
    track: Annotated[
        bool, typer.Option(help="Give detections per-camera track ids (ByteTrack).")
    ] = True,
    count_line: Annotated[
        CountLine | None,
        typer.Option(
            help="Count tracks crossing the line x1,y1,x2,y2 (frame pixels) per camera; "
            "'in' = onto its right-hand side seen from x1,y1 to x2,y2. Implies --track.",
            parser=CountLine.parse,
            metavar="X1,Y1,X2,Y2",
        ),
    ] = None,
    jsonl: Annotated[Path | None, typer.Option(help="Write results as JSON Lines here.")] = None,
    video_dir: Annotated[
        Path | None,
        typer.Option(
            help="Write an annotated MP4 per camera into this folder (needs pixels: "
            "implies --decode-on-client)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = (
        "127.0.0.1"
    ),
    live: Annotated[
        bool | None, typer.Option(help="Live per-camera table. Default: when stdout is a terminal.")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    ssl: Annotated[bool, typer.Option(help="TLS to every server.")] = False,
    root_certificates: Annotated[
        Path | None, typer.Option(help="PEM CA certificates for TLS.", **_EXISTING_FILE)
    ] = None,
    private_key: Annotated[
        Path | None, typer.Option(help="PEM client key (mutual TLS).", **_EXISTING_FILE)
    ] = None,
    certificate_chain: Annotated[
        Path | None,
        typer.Option(help="PEM client certificate chain (mutual TLS).", **_EXISTING_FILE),
    ] = None,
    view: ViewOption = None,
    view_key: ViewKeyOption = None,
    view_fps: ViewFpsOption = 5.0,
    view_width: ViewWidthOption = 640,
    triton_metrics: MetricsOption = None,
) -> None:
    """Stream cameras to the detect ensemble; Ctrl-C or SIGTERM stops cleanly.

    Prints final per-camera totals (captured = answered + dropped + failed + in flight).
    """
    console = Console()
    options = IngestOptions(
        mode=mode,
        max_in_flight=max_in_flight,
        queue_size=queue_size,
        max_frame_age_s=max_frame_age,
        jpeg_quality=jpeg_quality,
        # The annotated videos need every answered frame's pixels on this machine.
        decode_on_client=decode_on_client or video_dir is not None,
        request_timeout_s=request_timeout,
        thresholds=threshold_parameters(confidence, iou, max_detections),
        track=track,
        count_line=count_line,
    )
    try:
        chosen = choose_servers(server, camera_file, DEFAULT_URL)
        urls = [f"grpcs://{u.split('://')[-1]}" if ssl else u for u in chosen]
        settings = view_settings(view, view_key, view_fps, view_width, triton_metrics, urls)
        selected = _cameras(cameras or [], camera_file, fps, loop)
        if shard is not None:
            selected = shard_cameras(selected, shard)
            console.print(f"shard {shard}: {len(selected)} cameras")
        runner = Ingest(
            selected,
            urls,
            _sinks(jsonl, video_dir, settings),
            options,
            TlsFiles(root_certificates, private_key, certificate_chain),
        )
    except (ValueError, SourceError) as error:  # ConfigError is a ValueError
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    crossings = runner.tracking.crossings if runner.tracking is not None else dict
    collector = IngestCollector(runner.accounting, runner.assignment, crossings)
    metrics = None if metrics_port is None else serve_metrics(collector, metrics_port, metrics_host)
    if metrics is not None:
        console.print(f"metrics at {metrics.url}")
    show_live = sys.stdout.isatty() if live is None else live
    table = LiveView(runner.accounting, runner.assignment, crossings)
    page = attach_view(runner, settings)

    def on_view(url: str) -> None:
        console.print(f"view at {url}" + (" (add ?key=<the view key>)" if view_key else ""))

    try:
        if show_live:
            with Live(get_renderable=table.render, console=console, refresh_per_second=1):
                asyncio.run(_run(runner, duration, page, on_view))
        else:
            asyncio.run(_run(runner, duration, page, on_view))
    finally:
        if metrics is not None:
            metrics.close()
        console.print(totals_table(runner.accounting.snapshot(), crossings=crossings()))
    _exit_if_nothing_captured(runner, console)


def _exit_if_nothing_captured(runner: Ingest, console: Console) -> None:
    """One line per camera that captured nothing, and exit 1 if none captured anything."""
    idle = runner.never_captured()
    for camera_id, reason in idle.items():
        line = f"[yellow]camera {escape(camera_id)}:[/] {escape(reason)}"
        console.print(line, highlight=False, soft_wrap=True)
    if idle and len(idle) == len(runner.cameras):
        console.print("[red]error:[/] no camera delivered a frame")
        raise typer.Exit(1)


def main() -> None:
    """Entry point of ``python -m camdet.client.cli``."""
    typer.run(ingest)


if __name__ == "__main__":
    main()
