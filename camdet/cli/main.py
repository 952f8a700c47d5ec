"""The ``camdet`` command line: serve the ensemble, send frames to it, run the demo."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from camdet.cli.backends import app as backends_app
from camdet.cli.doctor import doctor
from camdet.cli.model import app as model_app
from camdet.cli.scenes import app as scenes_app
from camdet.cli.scripts import detector_app, perf_app, track_app
from camdet.client.cli import ingest
from camdet.client.view.options import (
    ViewFpsOption,
    ViewKeyOption,
    ViewOption,
    ViewWidthOption,
)
from camdet.perf.cli import register as register_bench
from camdet.serving.repository import find_repository

app = typer.Typer(
    help=(
        "Real-time object detection for many cameras on NVIDIA Triton.\n\n"
        "Start with `camdet demo`; serve with `camdet serve`; send images with `camdet infer`."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()

RepositoryOption = Annotated[
    Path | None,
    typer.Option(
        "--repository",
        envvar="CAMDET_MODEL_REPOSITORY",
        help="Production model repository (the portable one is derived from it). Default: "
        "./model_repository if present, else the installed camdet's.",
    ),
]


def _served_repository(repository: Path | None) -> Path:
    """Resolve the repository option and say which repository is served."""
    path, why = find_repository(repository)
    console.print(f"model repository: {path} ({why})", markup=False)
    return path


UrlOption = Annotated[
    str, typer.Option("--url", envvar="CAMDET_URL", help="Server gRPC endpoint host:port.")
]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


@app.command()
def serve(
    repository: RepositoryOption = None,
    http_port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    portable: Annotated[
        bool | None,
        typer.Option(
            "--portable/--container",
            help="Force the portable server (pip-installed, Python backend) or the container's "
            "tritonserver (DALI + TensorRT). Default: the container's if on PATH.",
        ),
    ] = None,
    log_verbose: Annotated[
        bool, typer.Option(help="Triton verbose log (tensor devices of each step).")
    ] = False,
    address: Annotated[
        str,
        typer.Option(
            envvar="CAMDET_ADDRESS",
            help="Address all ports bind to. Default: loopback only; 0.0.0.0 (or an "
            "interface's address) serves other machines.",
        ),
    ] = "127.0.0.1",
    grpc_tls_cert: Annotated[
        Path | None, typer.Option(help="PEM server certificate: TLS on gRPC.", exists=True)
    ] = None,
    grpc_tls_key: Annotated[
        Path | None, typer.Option(help="PEM key of --grpc-tls-cert.", exists=True)
    ] = None,
    grpc_tls_client_ca: Annotated[
        Path | None,
        typer.Option(help="PEM CA of client certificates: mutual TLS on gRPC.", exists=True),
    ] = None,
    restrict_apis: Annotated[
        str | None,
        typer.Option(
            envvar="CAMDET_RESTRICT_APIS",
            help="KEY=VALUE: model-repository, model-config, shared-memory, statistics, "
            "trace and logging APIs (gRPC and HTTP) answer only requests with header "
            "KEY: VALUE. Prefer the environment variable: arguments show in ps.",
        ),
    ] = None,
) -> None:
    """Serve the detection ensemble until Ctrl-C (or SIGTERM)."""
    from camdet.serving.launch import ServerError
    from camdet.serving.security import endpoint_lines, exposure_from_options
    from camdet.serving.server import Ports
    from camdet.serving.server import serve as start

    try:
        exposure = exposure_from_options(
            address, grpc_tls_cert, grpc_tls_key, grpc_tls_client_ca, restrict_apis
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    repository = _served_repository(repository)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ports = Ports(http_port, grpc_port, metrics_port)
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(
                start(repository, ports, portable, log_verbose, exposure=exposure)
            )
        except ServerError as error:  # a port in use is one line naming its holder
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        mode = "portable" if server.launch.portable else "container"
        console.print(f"[green]tritonserver ready[/] ({mode}), ensemble [bold]detect[/]")
        for line in endpoint_lines(exposure, http_port, grpc_port, metrics_port):
            console.print(line, markup=False)
        console.print("Ctrl-C to stop.")
        while not stop.wait(0.5):
            if not server.is_running():
                console.print(server.death_report(), style="red", markup=False)
                raise typer.Exit(1)
        console.print("stopping ...")
    console.print("stopped.")


@app.command()
def infer(
    images: Annotated[list[Path], typer.Argument(help="JPEG or PNG files.", exists=True)],
    url: UrlOption = "localhost:8001",
    confidence: Annotated[float | None, typer.Option(help="Confidence threshold.")] = None,
    iou: Annotated[float | None, typer.Option(help="NMS IoU threshold.")] = None,
    max_detections: Annotated[int | None, typer.Option(help="Max detections per image.")] = None,
) -> None:
    """Send image files through the ensemble over gRPC and print JSON detections.

    One JSON object per line: the file, and its detections (xyxy boxes in the image's
    own pixels, score, class id, label) or the server's error for that file.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from camdet.contract import detect, threshold_parameters

    params = threshold_parameters(confidence, iou, max_detections)
    failed = 0
    with grpcclient.InferenceServerClient(url) as client:
        for path in images:
            try:
                found = detect(client, path.read_bytes(), params)
                record = {"image": str(path), "detections": [d.as_dict() for d in found]}
            except InferenceServerException as exc:
                failed += 1
                record = {"image": str(path), "error": exc.message()}
            typer.echo(json.dumps(record))
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    cameras: Annotated[int, typer.Option(help="Number of synthetic cameras.")] = 4,
    frames: Annotated[int, typer.Option(help="Frames per camera.")] = 30,
    width: Annotated[int, typer.Option(help="Frame width, pixels.")] = 1280,
    height: Annotated[int, typer.Option(help="Frame height, pixels.")] = 720,
    seed: Annotated[int, typer.Option(help="Scene seed of the first camera.")] = 0,
    repository: RepositoryOption = None,
    view: ViewOption = None,
    view_key: ViewKeyOption = None,
    view_fps: ViewFpsOption = 5.0,
    view_width: ViewWidthOption = 640,
    duration: Annotated[
        float | None,
        typer.Option(help="With --view: stop after this many seconds (default: Ctrl-C)."),
    ] = None,
) -> None:
    """Start the portable server, stream synthetic cameras through it, print detections.

    Every camera renders moving objects with exact ground truth, sends JPEG frames over
    gRPC (one request per frame, batched by the server across cameras), and the table
    shows frame rates, latency and how the detections match the truth. With --view, the
    cameras loop (with a count line) through camdet ingest's pipeline and a live page
    shows them until Ctrl-C.
    """
    from camdet.cli.demo import run_demo, run_view_demo
    from camdet.client.view.options import view_settings
    from camdet.serving.server import Ports
    from camdet.serving.server import serve as start

    ports = Ports.free()
    try:
        metrics = [f"http://127.0.0.1:{ports.metrics}/metrics"]
        settings = view_settings(view, view_key, view_fps, view_width, metrics, [])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    repository = _served_repository(repository)
    with console.status("starting the portable tritonserver ..."):
        server_cm = start(repository, ports, portable=True)
        server = server_cm.__enter__()
    try:
        console.print(f"[green]tritonserver ready[/] on {server.grpc_url} (portable)")
        if settings is None:
            run_demo(server.grpc_url, cameras, frames, width, height, seed, console)
        else:
            run_view_demo(server, cameras, width, height, seed, settings, duration, console)
    finally:
        with console.status("stopping the server ..."):
            server_cm.__exit__(None, None, None)
    console.print("server stopped.")


app.add_typer(scenes_app, name="scenes", help="Synthetic camera scenes with ground truth.")
app.add_typer(model_app, name="model", help="Bring your own YOLO model; list the served one.")
app.command("ingest")(ingest)
app.command("doctor")(doctor)
register_bench(app)
app.add_typer(detector_app, name="detector")
app.add_typer(track_app, name="track")
app.add_typer(perf_app, name="perf")
app.add_typer(
    backends_app, name="backends", help="Build Triton backends the pip-installed server lacks."
)


if __name__ == "__main__":
    app()
