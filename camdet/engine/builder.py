"""Build the plan: check, convert the precision, build strongly typed, verify, write.

    validate_inputs -> profile -> TensorRT + GPU -> convert_for_build (ModelOpt) ->
    parse (STRONGLY_TYPED) -> I/O check -> profile -> build -> inspect -> plan + sidecar

Nothing is written unless the engine's I/O matches the config. The build sets no
precision flag: the converted ONNX file carries every type, so TensorRT 10 and 11 build
it alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from camdet.contract import TensorSpec
from camdet.engine.calibration import CalibrationSource, calibration_array
from camdet.engine.config_edit import (
    ensemble_batch_warnings,
    profile_mismatch,
    requested_profile,
    update_config_batching,
)
from camdet.engine.contract import (
    BatchProfile,
    DetectorContract,
    Precision,
    input_size_setting,
)
from camdet.engine.errors import (
    CalibrationError,
    EngineBuildError,
    EngineContractError,
    ProfileMismatchError,
)
from camdet.engine.files import atomic_write
from camdet.engine.inspection import (
    IoTensor,
    LayerSummary,
    check_engine_io,
    inspect_plan,
)
from camdet.engine.network import (
    add_profile,
    check_network_io,
    import_tensorrt,
    make_trt_logger,
    parse_onnx,
)
from camdet.engine.onnx_checks import ValidatedInputs, validate_inputs
from camdet.engine.precision import ConvertedOnnx, convert_onnx, converted_path
from camdet.engine.progress import PhaseTracker, make_progress_monitor
from camdet.engine.sidecar import GpuInfo, PlanSidecar, query_gpu, sidecar_path
from camdet.serving.repository import PRODUCTION_REPOSITORY

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = PRODUCTION_REPOSITORY / "detector" / "config.pbtxt"
DEFAULT_ONNX = PRODUCTION_REPOSITORY / "detector" / "1" / "model.onnx"
DEFAULT_PLAN = PRODUCTION_REPOSITORY / "detector" / "1" / "model.plan"
DEFAULT_LABELS = PRODUCTION_REPOSITORY / "postprocess" / "labels.txt"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "camdet"
DEFAULT_TIMING_CACHE = DEFAULT_CACHE_DIR / "tensorrt" / "timing.cache"

MIN_CALIBRATION_FRAMES = 8
"""Fewest frames INT8 calibration accepts: entropy calibration needs a histogram."""


@dataclass(frozen=True)
class BuildRequest:
    """Everything ``build`` needs.

    Attributes:
        onnx: ONNX file (the FP32 export).
        config: ``detector/config.pbtxt``.
        labels: ``postprocess/labels.txt``.
        plan: Output plan path (sidecar beside it).
        precision: Compute precision, put into the ONNX file before the build.
        max_batch: Requested MAX batch (``None``: the config's).
        opt_batch: Requested OPT batch (``None``: derived).
        update_config: Rewrite the config's batching to match the requested profile.
        workspace_gib: Builder workspace limit, GiB.
        optimization_level: Builder optimization level 0..5.
        timing_cache: Timing cache file, loaded if present and saved after the build.
        converted_onnx: Where the converted ONNX file is kept (``None``: per ONNX hash,
            precision and input size beside the timing cache); an existing one is reused,
            so INT8 calibrates once.
        calibration: INT8 calibration frames.
        calibration_eps: ONNX Runtime providers that run INT8 calibration.
        gpu_index: nvidia-smi index of the build GPU.
        progress: Show rich progress bars.
    """

    onnx: Path = DEFAULT_ONNX
    config: Path = DEFAULT_CONFIG
    labels: Path = DEFAULT_LABELS
    plan: Path = DEFAULT_PLAN
    precision: Precision = Precision.FP16
    max_batch: int | None = None
    opt_batch: int | None = None
    update_config: bool = False
    workspace_gib: float = 4.0
    optimization_level: int = 3
    timing_cache: Path = DEFAULT_TIMING_CACHE
    converted_onnx: Path | None = None
    calibration: CalibrationSource = field(default_factory=lambda: CalibrationSource(None, 256))
    calibration_eps: tuple[str, ...] = ("cpu",)
    gpu_index: int = 0
    progress: bool = True

    def converted_onnx_for(self, onnx_sha256: str) -> Path:
        """The converted file: explicit, or keyed by ONNX hash, input size and precision."""
        if self.converted_onnx is not None:
            return self.converted_onnx
        return converted_path(
            self.timing_cache.parent, onnx_sha256, self.precision, input_size_setting()
        )


@dataclass(frozen=True)
class BuildResult:
    """A written plan and what it holds.

    Attributes:
        plan: The plan path.
        sidecar: Its sidecar.
        summary: Layers by precision and type.
        io: The engine's I/O tensors.
    """

    plan: Path
    sidecar: PlanSidecar
    summary: LayerSummary
    io: list[IoTensor]


def resolve_profile(request: BuildRequest, inputs: ValidatedInputs) -> BatchProfile:
    """The profile to build, refusing one that disagrees with the config.

    Raises:
        ProfileMismatchError: If it disagrees and ``update_config`` is not set.
    """
    profile = requested_profile(inputs.contract, request.max_batch, request.opt_batch)
    mismatch = profile_mismatch(profile, inputs.contract, request.config)
    if mismatch and not request.update_config:
        raise ProfileMismatchError(mismatch)
    return profile


def _configure_builder(trt: ModuleType, config: Any, request: BuildRequest) -> None:
    config.set_memory_pool_limit(
        trt.MemoryPoolType.WORKSPACE, int(request.workspace_gib * (1 << 30))
    )
    config.builder_optimization_level = request.optimization_level
    # DETAILED keeps per-layer formats in the plan, for the precision summary.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    logger.info(
        "builder: workspace %.1f GiB, optimization level %d",
        request.workspace_gib,
        request.optimization_level,
    )


def convert_for_build(request: BuildRequest, inputs: ValidatedInputs) -> ConvertedOnnx:
    """Put the requested precision into the ONNX file (or reuse the kept conversion).

    Raises:
        CalibrationError: INT8 without a kept conversion and without enough frames.
        PrecisionConversionError: ModelOpt failed.
    """
    out = request.converted_onnx_for(inputs.onnx_sha256)
    source = request.calibration
    if request.precision is Precision.INT8 and not out.is_file():
        if source.available() < MIN_CALIBRATION_FRAMES:
            raise CalibrationError(
                f"INT8 needs at least {MIN_CALIBRATION_FRAMES} calibration frames and "
                f"{source.describe()} gives {source.available()}; no kept conversion at {out}"
            )
        logger.info("INT8 calibration: %s on %s", source.describe(), list(request.calibration_eps))
    return convert_onnx(
        request.onnx,
        out,
        request.precision,
        inputs.contract.input.data_type,
        calibration=lambda: calibration_array(source.frames_rgb()),
        calibration_eps=request.calibration_eps,
    )


def _load_timing_cache(config: Any, path: Path) -> None:
    blob = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(blob)
    except (RuntimeError, TypeError, ValueError) as err:
        logger.warning("timing cache %s is unreadable (%s)", path, err)
        cache = None
    if cache is None or not config.set_timing_cache(cache, False):
        # A cache from another TensorRT version or GPU: start afresh rather than mix.
        logger.warning("timing cache %s does not fit this TensorRT/GPU; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    else:
        logger.info("timing cache %s (%d bytes)", path, len(blob))


def _save_timing_cache(config: Any, path: Path) -> None:
    atomic_write(path, bytes(config.get_timing_cache().serialize()))
    logger.info("saved timing cache %s", path)


@contextlib.contextmanager
def _progress(trt: ModuleType, config: Any, enabled: bool) -> Iterator[None]:
    if not enabled or not hasattr(trt, "IProgressMonitor"):
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        config.progress_monitor = make_progress_monitor(trt, PhaseTracker(progress))
        yield


def _serialize(
    trt: ModuleType, builder: Any, network: Any, config: Any, request: BuildRequest, trt_logger: Any
) -> tuple[bytes, float]:
    started = time.monotonic()
    with _progress(trt, config, request.progress):
        serialized = builder.build_serialized_network(network, config)
    seconds = time.monotonic() - started
    if serialized is None:
        detail = "; ".join(trt_logger.errors[-5:]) or "no error was logged"
        raise EngineBuildError(f"TensorRT built no plan after {seconds:.0f} s: {detail}")
    logger.info("built a %d-byte plan in %.1f s", serialized.nbytes, seconds)
    return bytes(serialized), seconds


def _build_plan(
    trt: ModuleType,
    request: BuildRequest,
    inputs: ValidatedInputs,
    profile: BatchProfile,
    onnx_path: Path,
) -> tuple[bytes, float, list[IoTensor], LayerSummary]:
    trt_logger = make_trt_logger(trt)
    builder = trt.Builder(trt_logger)
    network, parser = parse_onnx(trt, builder, trt_logger, onnx_path)
    check_network_io(trt, network, inputs.contract)
    config = builder.create_builder_config()
    _configure_builder(trt, config, request)
    add_profile(builder, config, inputs.contract, profile)
    _load_timing_cache(config, request.timing_cache)
    plan, seconds = _serialize(trt, builder, network, config, request, trt_logger)
    _save_timing_cache(config, request.timing_cache)
    del parser  # the network's weights may live in the parser until here
    io, summary = inspect_plan(trt, trt_logger, plan, inputs.contract, profile)
    return plan, seconds, io, summary


def _io_records(contract: DetectorContract) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def record(spec: TensorSpec) -> dict[str, Any]:
        return {"name": spec.name, "data_type": spec.data_type, "dims": list(spec.dims)}

    return [record(contract.input)], [record(contract.output)]


def _log_build_inputs(
    request: BuildRequest, inputs: ValidatedInputs, trt_version: str, gpu: GpuInfo
) -> None:
    contract = inputs.contract
    logger.info("ONNX %s (sha256 %s)", request.onnx, inputs.onnx_sha256)
    logger.info(
        "ONNX input shape %s, output shape %s",
        inputs.report.input_shape,
        inputs.report.output_shape,
    )
    logger.info(
        "config %s: %s %s %s -> %s %s %s, max_batch_size %d, preferred %s",
        request.config,
        contract.input.name,
        contract.input.data_type,
        list(contract.input.dims),
        contract.output.name,
        contract.output.data_type,
        list(contract.output.dims),
        contract.max_batch_size,
        list(contract.preferred_batch_sizes),
    )
    logger.info("labels %s: %d classes %s", request.labels, len(inputs.labels), inputs.labels)
    logger.info(
        "TensorRT %s on GPU %d %s (compute capability %s)",
        trt_version,
        gpu.index,
        gpu.name,
        gpu.compute_capability,
    )
    logger.info("precision %s -> plan %s", request.precision.value, request.plan)


def build_engine(request: BuildRequest) -> BuildResult:
    """Check the inputs, build the plan, verify it and write it with its sidecar.

    Nothing is written unless the engine's I/O matches the config.

    Raises:
        ContractError: The ONNX file, config and labels disagree (before TensorRT runs).
        ProfileMismatchError: The requested profile disagrees with the config.
        TensorRTUnavailableError: No usable TensorRT here.
        GpuQueryError: The GPU cannot be identified.
        OnnxParseError: TensorRT's parser rejected the ONNX file.
        CalibrationError: INT8 without usable calibration data.
        PrecisionConversionError: ModelOpt could not convert the ONNX file.
        EngineBuildError: TensorRT produced no plan.
        EngineContractError: The built engine disagrees with the config.
    """
    inputs = validate_inputs(request.onnx, request.config, request.labels)
    profile = resolve_profile(request, inputs)
    trt = import_tensorrt()
    gpu = query_gpu(request.gpu_index)
    if profile != inputs.contract.profile:
        update_config_batching(request.config, profile)
        for warning in ensemble_batch_warnings(
            request.config.parent.parent, inputs.contract.name, profile.max
        ):
            logger.warning("%s", warning)
        inputs = validate_inputs(request.onnx, request.config, request.labels)
    _log_build_inputs(request, inputs, trt.__version__, gpu)
    converted = convert_for_build(request, inputs)
    plan, seconds, io, summary = _build_plan(trt, request, inputs, profile, converted.path)
    problems = check_engine_io(io, inputs.contract, profile)
    if problems:
        raise EngineContractError(
            f"the engine built from {request.onnx} disagrees with {request.config}", problems
        )
    ins, outs = _io_records(inputs.contract)
    sidecar = PlanSidecar(
        tensorrt_version=trt.__version__,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=request.precision.value,
        profiles=[inputs.contract.profile_record(profile)],
        onnx_sha256=inputs.onnx_sha256,
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        inputs=ins,
        outputs=outs,
        build_seconds=round(seconds, 3),
        builder_optimization_level=request.optimization_level,
        layers=dataclasses.asdict(summary),
        strongly_typed=True,
        converted_onnx_sha256=converted.sha256,
        modelopt_version=converted.modelopt_version,
    )
    atomic_write(request.plan, plan)
    atomic_write(sidecar_path(request.plan), sidecar.to_json().encode())
    logger.info("wrote %s and %s", request.plan, sidecar_path(request.plan))
    return BuildResult(request.plan, sidecar, summary, io)
