"""Build the detector's TensorRT plan from its ONNX export, and tell when a plan is stale.

    python build_engine.py validate            # ONNX + config + labels agree? (no TensorRT)
    python build_engine.py convert fp16.onnx   # the precision conversion alone (no TensorRT)
    python build_engine.py build               # -> model_repository/detector/1/model.plan
    python build_engine.py build --precision int8 --calibration-images frames/
    python build_engine.py check               # does the plan fit this TensorRT and GPU?
    python build_engine.py update-config --max-batch 32 --opt-batch 16

A thin command line over :mod:`camdet.engine`, which does the work and raises typed
errors; this file only parses options, prints results and turns errors into exit code 1.
``build`` converts the ONNX file to the precision with NVIDIA ModelOpt (AutoCast FP16,
INT8 with explicit Q/DQ) and builds a strongly typed network, so the same code builds on
TensorRT 10 and 11.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from camdet.engine.builder import (
    DEFAULT_TIMING_CACHE,
    BuildRequest,
    BuildResult,
    build_engine,
    convert_for_build,
)
from camdet.engine.calibration import CalibrationSource
from camdet.engine.config_edit import ensemble_batch_warnings, update_config_batching
from camdet.engine.contract import BatchProfile, Precision, derive_profile, load_model_config
from camdet.engine.errors import BuildEngineError, TensorRTUnavailableError
from camdet.engine.onnx_checks import validate_inputs
from camdet.engine.sidecar import NEEDS_TENSORRT, GpuInfo, plan_problems, query_gpu

# Beside this script, not beside the installed package: the builder image installs camdet
# into site-packages and runs this file from its checkout (/opt/camdet).
REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO_ROOT / "model_repository" / "detector" / "config.pbtxt"
DEFAULT_ONNX = REPO_ROOT / "model_repository" / "detector" / "1" / "model.onnx"
DEFAULT_PLAN = REPO_ROOT / "model_repository" / "detector" / "1" / "model.plan"
DEFAULT_LABELS = REPO_ROOT / "model_repository" / "postprocess" / "labels.txt"

logger = logging.getLogger("camdet.engine")
"""The package's logger: the CLI shows its records (and TensorRT's, forwarded to it)."""

app = typer.Typer(
    help=(
        "Build the camdet detector's TensorRT plan from ONNX, check a plan against this "
        "TensorRT/GPU, and keep the plan, its ONNX file and detector/config.pbtxt in step."
    ),
    no_args_is_help=True,
    add_completion=False,
)

OnnxOption = Annotated[
    Path, typer.Option("--onnx", help="Detector ONNX export.", envvar="CAMDET_ONNX")
]
ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", help="Detector config.pbtxt (the contract).", envvar="CAMDET_DETECTOR_CONFIG"
    ),
]
LabelsOption = Annotated[
    Path, typer.Option("--labels", help="Class names, one per line.", envvar="CAMDET_LABELS")
]
PlanOption = Annotated[
    Path, typer.Option("--plan", help="Plan file; its sidecar is PLAN.json.", envvar="CAMDET_PLAN")
]
PrecisionOption = Annotated[
    Precision,
    typer.Option("--precision", help="Compute precision of the engine.", envvar="CAMDET_PRECISION"),
]
CalibrationImagesOption = Annotated[
    Path | None,
    typer.Option(
        "--calibration-images",
        help="Folder of JPEG/PNG camera frames for INT8 (default: synthetic scenes).",
    ),
]
CalibrationFramesOption = Annotated[
    int,
    typer.Option(
        "--calibration-frames", min=8, help="Most calibration frames (4.9 MB each at 640)."
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of synthetic calibration scenes.")]
GpuIndexOption = Annotated[
    int,
    typer.Option(
        "--gpu-index", help="nvidia-smi index of the GPU.", envvar="CAMDET_BUILD_GPU_INDEX"
    ),
]


@app.callback()
def _main(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Debug logging, TensorRT's verbose messages too."),
    ] = False,
) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # This module's loggers only: the root logger (and whoever else configured it, such
    # as a test runner) is left alone. A fresh handler per run binds the current stderr.
    for old in [h for h in logger.handlers if getattr(h, "camdet_cli", False)]:
        logger.removeHandler(old)
    handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
    handler.camdet_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _fail(err: BuildEngineError) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(1)


@app.command()
def validate(
    onnx_path: OnnxOption = DEFAULT_ONNX,
    config: ConfigOption = DEFAULT_CONFIG,
    labels: LabelsOption = DEFAULT_LABELS,
) -> None:
    """Check that the ONNX file, detector config and labels agree (no TensorRT needed)."""
    try:
        inputs = validate_inputs(onnx_path, config, labels)
    except BuildEngineError as err:
        raise _fail(err) from err
    contract = inputs.contract
    shapes = contract.profile.shapes(contract.input.dims)
    typer.echo(
        f"OK: {onnx_path.name} matches {config} and {labels.name} ({contract.num_classes} classes)"
    )
    typer.echo(
        f"profile {contract.profile}: MIN {shapes['min']} OPT {shapes['opt']} MAX {shapes['max']}"
    )


@app.command("update-config")
def update_config(
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="New max_batch_size (profile MAX).")
    ],
    opt_batch: Annotated[
        int | None,
        typer.Option("--opt-batch", help="Profile OPT; becomes the largest preferred_batch_size."),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Rewrite the config's max_batch_size and preferred_batch_size for a profile."""
    try:
        current = load_model_config(config)
        old = derive_profile(current.max_batch_size, current.dynamic_batching.preferred_batch_size)
        profile = BatchProfile(
            1, opt_batch if opt_batch is not None else min(old.opt, max_batch), max_batch
        )
        sizes = update_config_batching(config, profile)
    except BuildEngineError as err:
        raise _fail(err) from err
    typer.echo(
        f"{config}: profile {old} -> {profile} "
        f"(max_batch_size {profile.max}, preferred_batch_size {sizes})"
    )
    for warning in ensemble_batch_warnings(config.parent.parent, current.name, profile.max):
        typer.echo(f"warning: {warning}", err=True)


def _print_summary(result: BuildResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{result.plan} ({result.sidecar.precision}, {result.summary.count} layers)"
    )
    table.add_column("layer precision")
    table.add_column("layers", justify="right")
    for precision, count in sorted(result.summary.by_precision.items(), key=lambda kv: -kv[1]):
        table.add_row(precision, str(count))
    io = Table(title="engine I/O")
    for column in ("tensor", "mode", "dtype", "shape at OPT", "profile MIN / OPT / MAX"):
        io.add_column(column)
    for tensor in result.io:
        profile = (
            " / ".join(str(s) for s in tensor.profile_shapes.values())
            if tensor.profile_shapes
            else ""
        )
        io.add_row(
            tensor.name,
            "input" if tensor.is_input else "output",
            tensor.dtype,
            str(tensor.opt_shape),
            profile,
        )
    console = Console()
    console.print(table)
    console.print(io)


@app.command()
def build(
    onnx_path: OnnxOption = DEFAULT_ONNX,
    config: ConfigOption = DEFAULT_CONFIG,
    labels: LabelsOption = DEFAULT_LABELS,
    plan: PlanOption = DEFAULT_PLAN,
    precision: PrecisionOption = Precision.FP16,
    max_batch: Annotated[
        int | None,
        typer.Option("--max-batch", help="Profile MAX (default: config max_batch_size)."),
    ] = None,
    opt_batch: Annotated[
        int | None,
        typer.Option("--opt-batch", help="Profile OPT (default: largest preferred_batch_size)."),
    ] = None,
    update_config_flag: Annotated[
        bool,
        typer.Option(
            "--update-config",
            help="Rewrite the config's batching to match --max-batch/--opt-batch, not refuse.",
        ),
    ] = False,
    workspace_gib: Annotated[
        float, typer.Option("--workspace-gib", help="Builder workspace limit in GiB.")
    ] = 4.0,
    optimization_level: Annotated[
        int,
        typer.Option(
            "--optimization-level", min=0, max=5, help="TensorRT builder optimization level."
        ),
    ] = 3,
    timing_cache: Annotated[
        Path,
        typer.Option(
            "--timing-cache",
            help="Timing cache, reused across builds.",
            envvar="CAMDET_TIMING_CACHE",
        ),
    ] = DEFAULT_TIMING_CACHE,
    converted_onnx: Annotated[
        Path | None,
        typer.Option(
            "--converted-onnx",
            help="Keep/reuse the precision-converted ONNX here (default: per ONNX hash, input "
            "size and precision beside the timing cache; INT8 calibrates once).",
            envvar="CAMDET_CONVERTED_ONNX",
        ),
    ] = None,
    calibration_images: CalibrationImagesOption = None,
    calibration_frames: CalibrationFramesOption = 256,
    calibration_eps: Annotated[
        str,
        typer.Option(
            "--calibration-eps",
            help="ONNX Runtime providers for INT8 calibration, comma-separated: cpu, cuda:0, trt.",
        ),
    ] = "cpu",
    seed: SeedOption = 0,
    gpu_index: GpuIndexOption = 0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Rich progress bars while building.")
    ] = True,
) -> None:
    """Convert the ONNX file to the precision, build the strongly typed plan and its sidecar."""
    request = BuildRequest(
        onnx=onnx_path,
        config=config,
        labels=labels,
        plan=plan,
        precision=precision,
        max_batch=max_batch,
        opt_batch=opt_batch,
        update_config=update_config_flag,
        workspace_gib=workspace_gib,
        optimization_level=optimization_level,
        timing_cache=timing_cache,
        converted_onnx=converted_onnx,
        calibration=CalibrationSource(calibration_images, calibration_frames, seed),
        calibration_eps=tuple(e.strip() for e in calibration_eps.split(",") if e.strip()),
        gpu_index=gpu_index,
        progress=progress,
    )
    try:
        result = build_engine(request)
    except BuildEngineError as err:
        raise _fail(err) from err
    _print_summary(result)


@app.command()
def convert(
    out: Annotated[Path, typer.Argument(help="Where to write the converted ONNX file.")],
    onnx_path: OnnxOption = DEFAULT_ONNX,
    config: ConfigOption = DEFAULT_CONFIG,
    labels: LabelsOption = DEFAULT_LABELS,
    precision: PrecisionOption = Precision.FP16,
    calibration_images: CalibrationImagesOption = None,
    calibration_frames: CalibrationFramesOption = 256,
    seed: SeedOption = 0,
) -> None:
    """Write the ONNX file converted as build does it (ModelOpt; no TensorRT, no GPU)."""
    request = BuildRequest(
        onnx=onnx_path,
        config=config,
        labels=labels,
        precision=precision,
        converted_onnx=out,
        calibration=CalibrationSource(calibration_images, calibration_frames, seed),
    )
    try:
        converted = convert_for_build(request, validate_inputs(onnx_path, config, labels))
    except BuildEngineError as err:
        raise _fail(err) from err
    typer.echo(f"{converted.path}: {precision.value}, sha256 {converted.sha256}")


def _current_tensorrt_version(override: str | None) -> str:
    if override:
        return override
    try:
        import tensorrt as trt
    except ImportError as err:
        raise TensorRTUnavailableError(
            f"cannot import tensorrt ({err}): {NEEDS_TENSORRT}; or pass --tensorrt-version"
        ) from err
    return str(trt.__version__)


def _current_gpu(index: int, name: str | None, compute_capability: str | None) -> GpuInfo:
    if name and compute_capability:
        return GpuInfo(index, name, compute_capability)
    gpu = query_gpu(index)
    return GpuInfo(gpu.index, name or gpu.name, compute_capability or gpu.compute_capability)


@app.command()
def check(
    plan: PlanOption = DEFAULT_PLAN,
    onnx_path: OnnxOption = DEFAULT_ONNX,
    config: ConfigOption = DEFAULT_CONFIG,
    labels: LabelsOption = DEFAULT_LABELS,
    precision: PrecisionOption = Precision.FP16,
    tensorrt_version: Annotated[
        str | None,
        typer.Option(
            "--tensorrt-version",
            help="TensorRT that will load the plan (default: the importable one).",
            envvar="CAMDET_TENSORRT_VERSION",
        ),
    ] = None,
    gpu_name: Annotated[
        str | None,
        typer.Option("--gpu-name", help="GPU it will run on (default: from nvidia-smi)."),
    ] = None,
    compute_capability: Annotated[
        str | None,
        typer.Option(
            "--compute-capability", help="That GPU's major.minor (default: from nvidia-smi)."
        ),
    ] = None,
    gpu_index: GpuIndexOption = 0,
) -> None:
    """Exit 0 if the plan fits this TensorRT, GPU, ONNX file and config; else list why not."""
    try:
        inputs = validate_inputs(onnx_path, config, labels)
        trt_version = _current_tensorrt_version(tensorrt_version)
        gpu = _current_gpu(gpu_index, gpu_name, compute_capability)
    except BuildEngineError as err:
        raise _fail(err) from err
    problems = plan_problems(plan, inputs, precision.value, trt_version, gpu)
    if problems:
        typer.echo(f"{plan} must be rebuilt:")
        for problem in problems:
            typer.echo(f"  - {problem}")
        raise typer.Exit(1)
    typer.echo(
        f"{plan} fits TensorRT {trt_version} on {gpu.name} (compute capability "
        f"{gpu.compute_capability}), {precision.value}, profile {inputs.contract.profile}"
    )


if __name__ == "__main__":
    app()
