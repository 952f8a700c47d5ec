"""The plan's sidecar ``model.plan.json``, and whether a plan is stale.

The plan is TensorRT's raw serialized engine (no metadata prefix: Triton's TensorRT
backend reads the file as is). What it was built from and for goes beside it in
``model.plan.json``; :func:`check_plan_compatibility` and :func:`check_plan_freshness`
compare that sidecar with the TensorRT, GPU, ONNX file and config at hand, so the
compose file runs ``check || build``. Plans only deserialize in the TensorRT version that
built them and are tuned for one GPU model, so a container upgrade or a new GPU means a
rebuild.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camdet.engine.errors import GpuQueryError, SidecarError
from camdet.engine.files import file_sha256
from camdet.engine.onnx_checks import ValidatedInputs

NEEDS_TENSORRT = "needs TensorRT and a GPU (NGC TensorRT container)"

SIDECAR_FORMAT = 2
"""2: the plan is a strongly typed network built from a converted ONNX file. Plans of
format 1 were weakly typed (TensorRT 10's precision flags) and are rebuilt."""


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as ``nvidia-smi`` reports it.

    Attributes:
        index: nvidia-smi index.
        name: Product name, e.g. ``NVIDIA H100 80GB HBM3``.
        compute_capability: ``major.minor``, e.g. ``9.0``.
    """

    index: int
    name: str
    compute_capability: str


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name,compute_cap --format=csv,noheader``.

    Raises:
        GpuQueryError: If a line does not have the three fields.
    """
    gpus = []
    for line in text.strip().splitlines():
        index, _, rest = line.partition(",")
        name, _, capability = rest.rpartition(",")
        index, name, capability = index.strip(), name.strip(), capability.strip()
        if not (index.isdigit() and name and re.fullmatch(r"\d+\.\d+", capability)):
            raise GpuQueryError(f"unexpected nvidia-smi line: {line!r}")
        gpus.append(GpuInfo(int(index), name, capability))
    return gpus


def query_gpu(index: int = 0) -> GpuInfo:
    """Name and compute capability of GPU ``index``, from ``nvidia-smi``.

    Raises:
        GpuQueryError: If nvidia-smi is missing, fails, or lists no such GPU.
    """
    command = [
        "nvidia-smi",
        f"--id={index}",
        "--query-gpu=index,name,compute_cap",
        "--format=csv,noheader",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as err:
        raise GpuQueryError(f"cannot run nvidia-smi ({err}): {NEEDS_TENSORRT}") from err
    if result.returncode != 0:
        raise GpuQueryError(f"nvidia-smi failed: {result.stderr.strip() or result.stdout.strip()}")
    gpus = parse_nvidia_smi(result.stdout)
    if not gpus:
        raise GpuQueryError(f"nvidia-smi lists no GPU {index}")
    return gpus[0]


def sidecar_path(plan_path: Path) -> Path:
    """Where a plan's sidecar lives: ``model.plan`` -> ``model.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


@dataclass
class PlanSidecar:
    """What a plan was built from and for (``model.plan.json``).

    Attributes:
        tensorrt_version: ``tensorrt.__version__`` of the builder.
        gpu_name: GPU the plan was built (and tuned) on.
        compute_capability: That GPU's ``major.minor``.
        precision: ``fp16``, ``fp32`` or ``int8``.
        profiles: Per profile: input name and MIN/OPT/MAX shapes.
        onnx_sha256: Hash of the ONNX file built from.
        plan_sha256: Hash of the plan written.
        built_at: ISO 8601 UTC time of the build.
        inputs: Input tensors: name, config data type, per-sample dims.
        outputs: Output tensors, likewise.
        build_seconds: Wall time of ``build_serialized_network``.
        builder_optimization_level: TensorRT builder optimization level.
        layers: Layer count and per-precision / per-type counts.
        strongly_typed: The network was strongly typed (precision from the ONNX file).
        converted_onnx_sha256: Hash of the converted ONNX file TensorRT parsed.
        modelopt_version: ModelOpt that converted it (empty for FP32: no conversion).
        format: Sidecar schema version.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: list[dict[str, Any]]
    onnx_sha256: str
    plan_sha256: str
    built_at: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    build_seconds: float = 0.0
    builder_optimization_level: int = 3
    layers: dict[str, Any] = field(default_factory=dict)
    strongly_typed: bool = True
    converted_onnx_sha256: str = ""
    modelopt_version: str = ""
    format: int = SIDECAR_FORMAT

    def to_json(self) -> str:
        """The sidecar as indented JSON text."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PlanSidecar:
        """Parse sidecar JSON.

        Raises:
            SidecarError: If it is not JSON or lacks a required field.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SidecarError(f"sidecar is not JSON: {err}") from err
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        required -= {
            f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise SidecarError(f"sidecar lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def read_sidecar(plan_path: Path) -> PlanSidecar:
    """Read the sidecar of ``plan_path``.

    Raises:
        SidecarError: If it is missing or invalid.
    """
    path = sidecar_path(plan_path)
    try:
        return PlanSidecar.from_json(path.read_text())
    except FileNotFoundError as err:
        raise SidecarError(f"no sidecar {path}") from err
    except SidecarError as err:
        raise SidecarError(f"{path}: {err}") from err


def check_plan_compatibility(
    sidecar: PlanSidecar, trt_version: str, gpu_name: str, compute_capability: str
) -> list[str]:
    """Why a plan cannot (or should not) be served with this TensorRT on this GPU.

    A plan deserializes only in the exact TensorRT version that built it, only on GPUs
    of its compute capability, and its tactics were timed on one GPU model.

    Args:
        sidecar: The plan's sidecar.
        trt_version: TensorRT version that will load the plan.
        gpu_name: GPU it will run on.
        compute_capability: That GPU's ``major.minor``.

    Returns:
        One sentence per mismatch; empty if the plan fits.
    """
    problems = []
    if sidecar.tensorrt_version != trt_version:
        problems.append(
            f"plan was built with TensorRT {sidecar.tensorrt_version} but this is TensorRT "
            f"{trt_version}; a plan only loads in the TensorRT version that built it"
        )
    if sidecar.compute_capability != compute_capability:
        problems.append(
            f"plan was built for compute capability {sidecar.compute_capability} but this GPU "
            f"has {compute_capability}; plans are specific to the compute capability"
        )
    if sidecar.gpu_name != gpu_name:
        problems.append(
            f"plan was built on {sidecar.gpu_name!r} but this GPU is {gpu_name!r}; TensorRT "
            "timed its kernels for the GPU model it was built on"
        )
    return problems


def check_plan_freshness(
    sidecar: PlanSidecar,
    *,
    onnx_sha256: str,
    precision: str,
    profile_record: dict[str, Any],
    plan_sha256: str | None,
) -> list[str]:
    """Why a plan no longer matches what it should be built from.

    Args:
        sidecar: The plan's sidecar.
        onnx_sha256: Hash of the current ONNX file.
        precision: Precision asked for now.
        profile_record: The profile the current config derives
            (:meth:`DetectorContract.profile_record`).
        plan_sha256: Hash of the plan file on disk, or ``None`` to skip that check.

    Returns:
        One sentence per mismatch; empty if the plan is current.
    """
    problems = []
    if sidecar.format < SIDECAR_FORMAT or not sidecar.strongly_typed:
        problems.append(
            f"plan was built as a weakly typed network (sidecar format {sidecar.format}); "
            "TensorRT 11 removed those, rebuild it strongly typed from the converted ONNX"
        )
    if sidecar.onnx_sha256 != onnx_sha256:
        problems.append(
            f"ONNX file changed since the build (sha256 {sidecar.onnx_sha256[:12]}... -> "
            f"{onnx_sha256[:12]}...)"
        )
    if sidecar.precision != precision:
        problems.append(f"plan precision is {sidecar.precision}, {precision} was asked for")
    if sidecar.profiles != [profile_record]:
        problems.append(
            f"plan profiles {sidecar.profiles} differ from the config's {[profile_record]}"
        )
    if plan_sha256 is not None and sidecar.plan_sha256 != plan_sha256:
        problems.append("plan file differs from the one the sidecar describes (sha256 mismatch)")
    return problems


def plan_problems(
    plan_path: Path,
    inputs: ValidatedInputs,
    precision: str,
    trt_version: str,
    gpu: GpuInfo,
) -> list[str]:
    """Every reason to rebuild ``plan_path`` (empty: it can be served as is)."""
    if not Path(plan_path).is_file():
        return [f"no plan at {plan_path}"]
    try:
        sidecar = read_sidecar(plan_path)
    except SidecarError as err:
        return [str(err)]
    return check_plan_compatibility(
        sidecar, trt_version, gpu.name, gpu.compute_capability
    ) + check_plan_freshness(
        sidecar,
        onnx_sha256=inputs.onnx_sha256,
        precision=precision,
        profile_record=inputs.contract.profile_record(inputs.contract.profile),
        plan_sha256=file_sha256(plan_path),
    )
