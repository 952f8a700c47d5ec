"""Build the detector's TensorRT plan from its ONNX export, and tell when a plan is stale.

    python build_engine.py validate            # ONNX + config + labels agree? (no TensorRT)
    python build_engine.py build               # -> model_repository/detector/1/model.plan
    python build_engine.py build --precision int8 --calibration-images frames/
    python build_engine.py check               # does the plan fit this TensorRT and GPU?
    python build_engine.py update-config --max-batch 32 --opt-batch 16

``model_repository/detector/config.pbtxt`` is the contract. Before TensorRT is touched,
the ONNX file is checked against it with the ``onnx`` package (tensor names, float32/16,
a dynamic batch axis, the YOLO head ``[batch, 4 + classes, 8400]`` with ``classes`` from
``postprocess/labels.txt``); every problem is collected and reported at once. The plan
gets the config's I/O types (FP16 in production, so the FP16 output of ``preprocess``
feeds it with no cast) and one optimization profile derived from the config's batching:

    min = 1,  opt = the largest preferred_batch_size (max_batch_size if none),
    max = max_batch_size.

One profile, not one per preferred size: Triton's TensorRT backend runs every instance
on profile 0 unless ``instance_group.profile`` names others, each extra profile costs
build time and engine memory, and a batch of any size in [1, max] is valid in one
profile anyway. The opt shape is where the tactics are timed; under camera load the
dynamic batcher fills the largest preferred batch, which is where GPU time goes.

The plan is TensorRT's raw serialized engine (no metadata prefix: Triton's TensorRT
backend reads the file as is). What it was built from and for goes beside it in
``model.plan.json``; :func:`check_plan_compatibility` and :func:`check_plan_freshness`
compare that sidecar with the TensorRT, GPU, ONNX file and config at hand, and
``python build_engine.py check`` exits non-zero on any mismatch, so the compose file
runs ``check || build``. Plans only deserialize in the TensorRT version that built them
and are tuned for one GPU model, so a container upgrade or a new GPU means a rebuild.

TensorRT is imported lazily: everything but ``build`` runs without it. The builder API
used here (``BuilderFlag.FP16``/``INT8``, ``IInt8EntropyCalibrator2``) is TensorRT 10's;
TensorRT 11 removed it, so ``build`` refuses other major versions with a clear error.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from rich.progress import Progress, TaskID
    from tritonclient.grpc.model_config_pb2 import ModelConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO_ROOT / "model_repository" / "detector" / "config.pbtxt"
DEFAULT_ONNX = REPO_ROOT / "model_repository" / "detector" / "1" / "model.onnx"
DEFAULT_PLAN = REPO_ROOT / "model_repository" / "detector" / "1" / "model.plan"
DEFAULT_LABELS = REPO_ROOT / "model_repository" / "postprocess" / "labels.txt"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "camdet"
DEFAULT_TIMING_CACHE = DEFAULT_CACHE_DIR / "tensorrt" / "timing.cache"

HEAD_STRIDES: tuple[int, ...] = (8, 16, 32)
"""Strides of the three YOLO detection scales; each gives (INPUT_SIZE / s)^2 anchors."""

BOX_ROWS = 4
"""Rows of the head before the class scores: cx, cy, w, h."""

SUPPORTED_TENSORRT_MAJOR = 10
SIDECAR_FORMAT = 1
NEEDS_TENSORRT = "needs TensorRT and a GPU (NGC TensorRT container)"

IO_DATA_TYPES = ("TYPE_FP16", "TYPE_FP32")
"""Config data types the detector's input and output may have."""

TRT_DTYPE_NAMES = {"TYPE_FP16": "HALF", "TYPE_FP32": "FLOAT"}
"""Config data type -> ``tensorrt.DataType`` member name."""

ONNX_FLOAT_TYPES = {1: "float32", 10: "float16"}
"""ONNX ``TensorProto`` element types accepted for the detector's I/O."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CAMERA_SIZES: tuple[tuple[int, int], ...] = (
    (1920, 1080),
    (1280, 720),
    (2560, 1440),
    (640, 480),
    (1080, 1920),
)
"""(width, height) cycled through for synthetic calibration frames, so the letterbox
sees landscape, portrait, up- and down-scaling as real cameras give it."""


# --------------------------------------------------------------------------- errors


class BuildEngineError(Exception):
    """Base of every error this module raises on purpose."""


class ProblemsError(BuildEngineError):
    """Several independent problems, all reported together.

    Attributes:
        problems: One sentence per problem.
    """

    def __init__(self, summary: str, problems: Sequence[str]) -> None:
        self.summary = summary
        self.problems = list(problems)
        super().__init__(summary + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class ContractError(ProblemsError):
    """The ONNX file, the detector's config.pbtxt and the labels file disagree."""


class OnnxParseError(ProblemsError):
    """TensorRT's ONNX parser rejected the file; ``problems`` lists each parser error."""


class EngineContractError(ProblemsError):
    """The built engine's tensors disagree with the config (nothing was written)."""


class ProfileMismatchError(BuildEngineError):
    """The requested batch profile disagrees with the config and may not rewrite it."""


class TensorRTUnavailableError(BuildEngineError):
    """TensorRT cannot be imported here, or is a major version this builder cannot use."""


class EngineBuildError(BuildEngineError):
    """TensorRT returned no plan."""


class CalibrationError(BuildEngineError):
    """INT8 calibration has no usable data."""


class GpuQueryError(BuildEngineError):
    """The GPU's name and compute capability could not be read."""


class SidecarError(BuildEngineError):
    """A plan's sidecar JSON is missing fields or unreadable."""


# --------------------------------------------------------------------------- config


class Precision(StrEnum):
    """Precision the engine computes in (its I/O types always come from the config)."""

    FP16 = "fp16"
    FP32 = "fp32"
    INT8 = "int8"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the config, without the batch dimension.

    Attributes:
        name: Tensor name shared by the config, the ONNX graph and the plan.
        data_type: Config type, ``TYPE_FP16`` or ``TYPE_FP32``.
        dims: Per-sample dims, e.g. ``(3, 640, 640)``.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class BatchProfile:
    """MIN/OPT/MAX batch size of the engine's optimization profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ProfileMismatchError(
                f"batch profile needs 1 <= min <= opt <= max, got "
                f"min={self.min} opt={self.opt} max={self.max}"
            )

    def __str__(self) -> str:
        return f"min={self.min} opt={self.opt} max={self.max}"

    def shapes(self, dims: Sequence[int]) -> dict[str, list[int]]:
        """Full MIN/OPT/MAX shapes of a tensor whose per-sample dims are ``dims``."""
        return {
            "min": [self.min, *dims],
            "opt": [self.opt, *dims],
            "max": [self.max, *dims],
        }


def derive_profile(max_batch_size: int, preferred: Sequence[int]) -> BatchProfile:
    """The profile a config's batching asks for (the rule is in the module docstring).

    Args:
        max_batch_size: The config's ``max_batch_size``.
        preferred: The config's ``dynamic_batching.preferred_batch_size``.

    Returns:
        ``min=1``, ``opt=max(preferred)`` (or ``max_batch_size``), ``max=max_batch_size``.
    """
    return BatchProfile(1, max(preferred) if preferred else max_batch_size, max_batch_size)


@dataclass(frozen=True)
class DetectorContract:
    """What the config says the detector is.

    Attributes:
        name: Model name in the config.
        input: The image input.
        output: The raw head output.
        max_batch_size: The config's ``max_batch_size``.
        preferred_batch_sizes: The dynamic batcher's preferred sizes.
        num_classes: Classes in the labels file.
    """

    name: str
    input: TensorSpec
    output: TensorSpec
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    num_classes: int

    @property
    def profile(self) -> BatchProfile:
        """The optimization profile this config asks for."""
        return derive_profile(self.max_batch_size, self.preferred_batch_sizes)

    def profile_record(self, profile: BatchProfile) -> dict[str, Any]:
        """The profile as stored in the sidecar: input name and full shapes."""
        return {"input": self.input.name, **profile.shapes(self.input.dims)}


def _model_config_pb2() -> ModuleType:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def input_size() -> int:
    """Side of the square detector input, from the project's one constants module."""
    from camdet.constants import INPUT_SIZE

    return INPUT_SIZE


def expected_anchors(size: int, strides: Sequence[int] = HEAD_STRIDES) -> int:
    """Anchors of a YOLO head on a ``size`` x ``size`` input: sum of (size / s)^2."""
    return sum((size // s) ** 2 for s in strides)


def load_model_config(path: Path) -> ModelConfig:
    """Parse a ``config.pbtxt`` into ``ModelConfig``.

    Raises:
        ContractError: If the file is missing or not valid ModelConfig text.
    """
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    try:
        return text_format.Parse(Path(path).read_text(), pb2.ModelConfig())
    except FileNotFoundError as err:
        raise ContractError(f"cannot read {path}", [f"{path} does not exist"]) from err
    except text_format.ParseError as err:
        raise ContractError(f"cannot parse {path}", [str(err)]) from err


def read_labels(path: Path) -> list[str]:
    """Class names, one per non-empty line.

    Raises:
        ContractError: If the file is missing or lists no class.
    """
    try:
        labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError as err:
        raise ContractError(f"cannot read {path}", [f"{path} does not exist"]) from err
    if not labels:
        raise ContractError(f"cannot read {path}", [f"{path} lists no class"])
    return labels


def _config_tensor(tensors: Sequence[Any], kind: str, problems: list[str]) -> TensorSpec | None:
    if len(tensors) != 1:
        problems.append(f"config has {len(tensors)} {kind}s, the detector takes exactly one")
        return None
    pb2 = _model_config_pb2()
    tensor = tensors[0]
    spec = TensorSpec(tensor.name, pb2.DataType.Name(tensor.data_type), tuple(tensor.dims))
    if spec.data_type not in IO_DATA_TYPES:
        problems.append(
            f"config {kind} {spec.name!r} is {spec.data_type}, expected TYPE_FP16 or TYPE_FP32"
        )
    return spec


def _check_config_batching(config: ModelConfig, problems: list[str]) -> None:
    if config.max_batch_size < 1:
        problems.append(
            f"config max_batch_size is {config.max_batch_size}; the engine needs a batch "
            "dimension, so it must be >= 1"
        )
    preferred = list(config.dynamic_batching.preferred_batch_size)
    bad = [p for p in preferred if not 1 <= p <= config.max_batch_size]
    if bad:
        problems.append(
            f"config preferred_batch_size {preferred} has sizes outside "
            f"[1, max_batch_size={config.max_batch_size}]: {bad}"
        )


def _check_config_shapes(
    inp: TensorSpec | None, out: TensorSpec | None, num_classes: int, problems: list[str]
) -> None:
    size = input_size()
    if inp is not None and inp.dims != (3, size, size):
        problems.append(
            f"config input {inp.name!r} dims are {list(inp.dims)}, expected [3, {size}, {size}] "
            "(camdet.constants.INPUT_SIZE)"
        )
    want = (BOX_ROWS + num_classes, expected_anchors(size))
    if out is not None and out.dims != want:
        problems.append(
            f"config output {out.name!r} dims are {list(out.dims)}, expected {list(want)} "
            f"= [4 + {num_classes} classes, anchors]"
        )


def detector_contract(
    config: ModelConfig, num_classes: int
) -> tuple[DetectorContract | None, list[str]]:
    """Read the detector's contract from its config and check the config itself.

    Args:
        config: The parsed ``detector/config.pbtxt``.
        num_classes: Classes in the labels file.

    Returns:
        The contract (``None`` if the config lacks a single input/output) and the
        config's problems.
    """
    problems: list[str] = []
    if config.platform != "tensorrt_plan":
        problems.append(f"config platform is {config.platform!r}, expected 'tensorrt_plan'")
    inp = _config_tensor(config.input, "input", problems)
    out = _config_tensor(config.output, "output", problems)
    _check_config_batching(config, problems)
    _check_config_shapes(inp, out, num_classes, problems)
    if inp is None or out is None or config.max_batch_size < 1:
        return None, problems
    contract = DetectorContract(
        name=config.name,
        input=inp,
        output=out,
        max_batch_size=config.max_batch_size,
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
        num_classes=num_classes,
    )
    return contract, problems


# --------------------------------------------------------------------------- ONNX checks

Dim = int | str
"""An ONNX dimension: a positive size, or a symbolic name (``'?'`` if unnamed)."""


def _value_shape(value: onnx.ValueInfoProto) -> list[Dim] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
        for d in tensor_type.shape.dim
    ]


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _pinned_output_shapes(model: onnx.ModelProto, pinned: Sequence[int]) -> dict[str, list[Dim]]:
    """Output shapes inferred with the single input pinned to ``pinned`` (empty on failure).

    Exporters often leave static head dims symbolic; with the input fixed to the config's
    shape, ONNX shape inference usually resolves them.
    """
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inputs = _graph_inputs(copy)
    if len(inputs) != 1:
        return {}
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(pinned):
        return {}
    for dim, value in zip(dims, pinned, strict=True):
        dim.Clear()
        dim.dim_value = value
    for output in copy.graph.output:
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception as err:  # any inference failure just leaves those dims unverified
        logger.debug("ONNX shape inference failed: %s", err)
        return {}
    return {o.name: shape for o in inferred.graph.output if (shape := _value_shape(o)) is not None}


def _fmt_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_float(value: onnx.ValueInfoProto, kind: str, problems: list[str]) -> None:
    import onnx

    elem = value.type.tensor_type.elem_type
    if elem not in ONNX_FLOAT_TYPES:
        name = onnx.TensorProto.DataType.Name(elem) if elem else "untyped"
        problems.append(f"ONNX {kind} {value.name!r} is {name}, expected float32 or float16")


def _check_batch_dim(shape: Sequence[Dim], kind: str, name: str, max_batch: int) -> str | None:
    if isinstance(shape[0], int):
        return (
            f"ONNX {kind} {name!r} has a static batch dimension {shape[0]}; re-export it with "
            f"a dynamic batch axis (ultralytics: dynamic=True) so the engine can batch up to "
            f"max_batch_size {max_batch}"
        )
    return None


def _check_onnx_input(value: onnx.ValueInfoProto, contract: DetectorContract) -> list[str]:
    problems: list[str] = []
    spec = contract.input
    if value.name != spec.name:
        problems.append(f"ONNX input is named {value.name!r} but the config input is {spec.name!r}")
    _check_float(value, "input", problems)
    shape = _value_shape(value)
    if shape is None or len(shape) != 1 + len(spec.dims):
        problems.append(
            f"ONNX input {value.name!r} has shape {_fmt_shape(shape or [])}, expected "
            f"{_fmt_shape(['batch', *spec.dims])}"
        )
        return problems
    if (batch := _check_batch_dim(shape, "input", value.name, contract.max_batch_size)) is not None:
        problems.append(batch)
    for axis, (dim, want) in enumerate(zip(shape[1:], spec.dims, strict=True), start=1):
        # A symbolic spatial dim is fine: the profile pins it to the config's size.
        if isinstance(dim, int) and dim != want:
            problems.append(
                f"ONNX input {value.name!r} dimension {axis} is {dim}, the config says {want}"
            )
    return problems


def _head_rows_problem(name: str, rows: int, num_classes: int) -> str | None:
    if rows == BOX_ROWS + num_classes:
        return None
    return (
        f"ONNX output {name!r} has {rows} rows = 4 box + {rows - BOX_ROWS} class scores, "
        f"but the labels file lists {num_classes} classes"
    )


def _anchors_problem(name: str, anchors: int) -> str | None:
    size = input_size()
    want = expected_anchors(size)
    if anchors == want:
        return None
    terms = " + ".join(f"({size}/{s})^2" for s in HEAD_STRIDES)
    return f"ONNX output {name!r} has {anchors} anchors, expected {want} = {terms}"


def resolve_output_shape(
    declared: list[Dim] | None, inferred: list[Dim] | None
) -> list[Dim] | None:
    """The output shape: declared dims, with symbolic ones filled in from shape inference.

    The batch dim stays as declared (inference ran with the batch pinned to 1).
    """
    if declared is None:
        return None if inferred is None else ["?", *inferred[1:]]
    if inferred is None or len(inferred) != len(declared):
        return declared
    filled = [
        d if isinstance(d, int) else i for d, i in zip(declared[1:], inferred[1:], strict=True)
    ]
    return [declared[0], *filled]


def _head_dim_findings(
    name: str, shape: list[Dim], num_classes: int
) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    notes: list[str] = []
    for label, dim, check in (
        ("rows", shape[1], lambda v: _head_rows_problem(name, v, num_classes)),
        ("anchors", shape[2], lambda v: _anchors_problem(name, v)),
    ):
        if isinstance(dim, int):
            problems.extend([p] if (p := check(dim)) else [])
        else:
            notes.append(
                f"ONNX output {name!r} {label} dimension {dim!r} is symbolic and shape "
                "inference could not resolve it; it is checked on the built engine instead"
            )
    return problems, notes


def _check_onnx_output(
    value: onnx.ValueInfoProto, shape: list[Dim] | None, contract: DetectorContract
) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    spec = contract.output
    if value.name != spec.name:
        problems.append(
            f"ONNX output is named {value.name!r} but the config output is {spec.name!r}"
        )
    _check_float(value, "output", problems)
    if shape is None or len(shape) != 3:
        layout = _fmt_shape(["batch", BOX_ROWS + contract.num_classes, spec.dims[-1]])
        problems.append(
            f"ONNX output {value.name!r} has shape {_fmt_shape(shape or [])}, expected the YOLO "
            f"head layout [batch, 4 + classes, anchors] = {layout}"
        )
        return problems, []
    declared = _value_shape(value)
    if declared is not None:
        batch = _check_batch_dim(declared, "output", value.name, contract.max_batch_size)
        problems.extend([batch] if batch else [])
    head_problems, notes = _head_dim_findings(value.name, shape, contract.num_classes)
    return problems + head_problems, notes


@dataclass(frozen=True)
class OnnxReport:
    """What the ONNX check found.

    Attributes:
        problems: Disagreements with the config; any one refuses the build.
        notes: Dims that could only be checked after the build.
        input_shape: The graph input's declared shape.
        output_shape: The graph output's shape, symbolic dims resolved where inference could.
    """

    problems: list[str]
    notes: list[str]
    input_shape: list[Dim] | None
    output_shape: list[Dim] | None


def check_onnx(model: onnx.ModelProto, contract: DetectorContract) -> OnnxReport:
    """Compare an ONNX detector with the config's contract.

    Args:
        model: The loaded ONNX model.
        contract: What the config and labels say.

    Returns:
        Every problem found (not just the first) and notes on unverifiable dims.
    """
    inputs = _graph_inputs(model)
    outputs = list(model.graph.output)
    problems: list[str] = []
    if len(inputs) != 1:
        problems.append(
            f"ONNX has {len(inputs)} inputs {[v.name for v in inputs]}, expected one input "
            f"named {contract.input.name!r}"
        )
    if len(outputs) != 1:
        problems.append(
            f"ONNX has {len(outputs)} outputs {[v.name for v in outputs]}, expected one output "
            f"named {contract.output.name!r}"
        )
    if problems:
        return OnnxReport(problems, [], None, None)
    problems.extend(_check_onnx_input(inputs[0], contract))
    pinned = [1, *contract.input.dims]
    inferred = _pinned_output_shapes(model, pinned).get(outputs[0].name)
    shape = resolve_output_shape(_value_shape(outputs[0]), inferred)
    output_problems, notes = _check_onnx_output(outputs[0], shape, contract)
    problems.extend(output_problems)
    return OnnxReport(problems, notes, _value_shape(inputs[0]), shape)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ValidatedInputs:
    """Build inputs that were checked to agree.

    Attributes:
        contract: The config's contract.
        onnx_sha256: Hash of the ONNX file.
        report: The ONNX check's findings.
        labels: Class names.
    """

    contract: DetectorContract
    onnx_sha256: str
    report: OnnxReport
    labels: list[str]


def _load_onnx(path: Path) -> tuple[onnx.ModelProto | None, list[str]]:
    import onnx

    if not Path(path).is_file():
        return None, [f"ONNX file {path} does not exist"]
    try:
        # Structure only: external weights (if any) stay on disk for TensorRT's parser.
        return onnx.load(str(path), load_external_data=False), []
    except Exception as err:  # protobuf raises several types for a bad file
        return None, [f"ONNX file {path} cannot be read: {err}"]


def validate_inputs(onnx_path: Path, config_path: Path, labels_path: Path) -> ValidatedInputs:
    """Check that the ONNX file, the detector config and the labels agree.

    Args:
        onnx_path: The detector's ONNX export.
        config_path: ``detector/config.pbtxt``.
        labels_path: ``postprocess/labels.txt``.

    Returns:
        The contract, ONNX hash and check report.

    Raises:
        ContractError: With every problem of the config and of the ONNX file at once.
    """
    labels = read_labels(labels_path)
    config = load_model_config(config_path)
    contract, problems = detector_contract(config, len(labels))
    model, load_problems = _load_onnx(onnx_path)
    problems.extend(load_problems)
    report = OnnxReport([], [], None, None)
    if contract is not None and model is not None:
        report = check_onnx(model, contract)
        problems.extend(report.problems)
    if problems or contract is None:
        raise ContractError(
            f"{onnx_path.name} does not match {config_path} and {labels_path.name}", problems
        )
    for note in report.notes:
        logger.warning("%s", note)
    return ValidatedInputs(contract, file_sha256(onnx_path), report, labels)


# --------------------------------------------------------------------------- profiles & config


def requested_profile(
    contract: DetectorContract, max_batch: int | None, opt_batch: int | None
) -> BatchProfile:
    """The profile asked for on the command line, defaulting to the config's.

    Args:
        contract: The config's contract.
        max_batch: Requested MAX batch, or ``None`` for the config's.
        opt_batch: Requested OPT batch, or ``None`` (the derived OPT, capped at ``max_batch``).
    """
    derived = contract.profile
    new_max = max_batch if max_batch is not None else derived.max
    new_opt = opt_batch if opt_batch is not None else min(derived.opt, new_max)
    return BatchProfile(1, new_opt, new_max)


def profile_mismatch(
    requested: BatchProfile, contract: DetectorContract, config_path: Path
) -> str | None:
    """Why ``requested`` disagrees with the config, or ``None`` if it agrees."""
    derived = contract.profile
    if requested == derived:
        return None
    return (
        f"requested profile {requested} disagrees with {config_path} (max_batch_size "
        f"{contract.max_batch_size}, preferred_batch_size {list(contract.preferred_batch_sizes)} "
        f"-> {derived}); pass --update-config to rewrite the config's batch settings"
    )


def preferred_sizes_for(profile: BatchProfile, current: Sequence[int]) -> list[int]:
    """Preferred batch sizes that make :func:`derive_profile` give back ``profile``.

    The current sizes up to OPT are kept and OPT is added, so OPT is the largest.
    """
    return sorted({p for p in current if p <= profile.opt} | {profile.opt})


_MAX_BATCH_RE = re.compile(r"^(\s*max_batch_size\s*:\s*)\d+", re.MULTILINE)
_PREFERRED_LIST_RE = re.compile(r"preferred_batch_size\s*:\s*\[[^\]]*\]")
_PREFERRED_SCALAR_RE = re.compile(r"^[ \t]*preferred_batch_size\s*:\s*\d+[ \t]*\n", re.MULTILINE)
_DYNAMIC_BATCHING_RE = re.compile(r"^([ \t]*)dynamic_batching\s*\{[ \t]*\n", re.MULTILINE)


def _set_preferred(text: str, sizes: Sequence[int]) -> str:
    listing = "preferred_batch_size: [ " + ", ".join(str(s) for s in sizes) + " ]"
    if _PREFERRED_LIST_RE.search(text):
        return _PREFERRED_LIST_RE.sub(listing, text, count=1)
    text = _PREFERRED_SCALAR_RE.sub("", text)
    match = _DYNAMIC_BATCHING_RE.search(text)
    if match:
        indent = match.group(1) + "  "
        return text[: match.end()] + f"{indent}{listing}\n" + text[match.end() :]
    return text.rstrip("\n") + f"\ndynamic_batching {{\n  {listing}\n}}\n"


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def update_config_batching(config_path: Path, profile: BatchProfile) -> list[int]:
    """Rewrite a config's ``max_batch_size`` and ``preferred_batch_size`` for ``profile``.

    Only those two settings change; comments and layout are kept. The result is parsed
    back and must derive ``profile`` exactly before it replaces the file.

    Args:
        config_path: The ``config.pbtxt`` to rewrite in place.
        profile: The profile the config must describe afterwards.

    Returns:
        The new preferred batch sizes.

    Raises:
        ContractError: If the file has no ``max_batch_size`` line or the rewrite does not
            round-trip.
    """
    from google.protobuf import text_format

    text = Path(config_path).read_text()
    config = load_model_config(config_path)
    sizes = preferred_sizes_for(profile, config.dynamic_batching.preferred_batch_size)
    new_text, count = _MAX_BATCH_RE.subn(rf"\g<1>{profile.max}", text, count=1)
    if count != 1:
        raise ContractError(f"cannot update {config_path}", ["it has no max_batch_size line"])
    new_text = _set_preferred(new_text, sizes)
    check = text_format.Parse(new_text, _model_config_pb2().ModelConfig())
    got = derive_profile(check.max_batch_size, check.dynamic_batching.preferred_batch_size)
    if got != profile:
        raise ContractError(
            f"cannot update {config_path}", [f"the rewritten config derives {got}, not {profile}"]
        )
    _atomic_write(Path(config_path), new_text.encode())
    logger.info(
        "rewrote %s: max_batch_size %d, preferred_batch_size %s", config_path, profile.max, sizes
    )
    return sizes


def ensemble_batch_warnings(repository: Path, model_name: str, max_batch: int) -> list[str]:
    """Ensembles whose ``max_batch_size`` would exceed the detector's new one.

    Triton requires an ensemble's ``max_batch_size`` to be at most that of each step.
    """
    warnings = []
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = load_model_config(path)
        except ContractError:
            continue  # another model's broken config is Triton's to report, not ours
        steps = {step.model_name for step in config.ensemble_scheduling.step}
        if (
            config.platform == "ensemble"
            and model_name in steps
            and config.max_batch_size > max_batch
        ):
            warnings.append(
                f"ensemble {config.name!r} has max_batch_size {config.max_batch_size} > "
                f"{model_name} max_batch_size {max_batch}; lower it in {path} (Triton requires "
                "an ensemble's max_batch_size to be at most each step's)"
            )
    return warnings


# --------------------------------------------------------------------------- GPU & sidecar


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


# --------------------------------------------------------------------------- engine inspection


@dataclass(frozen=True)
class IoTensor:
    """One I/O tensor of a built engine.

    Attributes:
        name: Tensor name.
        is_input: Input (else output).
        dtype: ``tensorrt.DataType`` member name, e.g. ``HALF``.
        profile_shapes: For inputs, profile 0's MIN/OPT/MAX shapes.
        opt_shape: The shape at the OPT input shape (outputs: as the context resolves it).
    """

    name: str
    is_input: bool
    dtype: str
    profile_shapes: dict[str, list[int]] | None
    opt_shape: list[int]


def check_engine_io(
    io: Sequence[IoTensor], contract: DetectorContract, profile: BatchProfile
) -> list[str]:
    """Compare a built engine's I/O with the config and the requested profile.

    Returns:
        One sentence per disagreement; the plan is written only if this is empty.
    """
    problems = []
    inputs = [t for t in io if t.is_input]
    outputs = [t for t in io if not t.is_input]
    for kind, tensors, spec in (
        ("input", inputs, contract.input),
        ("output", outputs, contract.output),
    ):
        if [t.name for t in tensors] != [spec.name]:
            problems.append(
                f"engine {kind}s are {[t.name for t in tensors]}, the config has [{spec.name!r}]"
            )
            continue
        tensor = tensors[0]
        if tensor.dtype != TRT_DTYPE_NAMES[spec.data_type]:
            problems.append(
                f"engine {kind} {tensor.name!r} is {tensor.dtype}, the config says {spec.data_type}"
            )
        want = [profile.opt, *spec.dims]
        if tensor.opt_shape != want:
            problems.append(
                f"engine {kind} {tensor.name!r} has shape {tensor.opt_shape} at OPT, "
                f"expected {want}"
            )
    if len(inputs) == 1 and inputs[0].profile_shapes != profile.shapes(contract.input.dims):
        problems.append(
            f"engine profile 0 is {inputs[0].profile_shapes}, expected "
            f"{profile.shapes(contract.input.dims)}"
        )
    return problems


@dataclass(frozen=True)
class LayerSummary:
    """Layers of a built engine by precision and type.

    Attributes:
        count: Number of engine layers.
        by_precision: Layer count per output precision (``FP16``, ``INT8``...).
        by_type: Layer count per TensorRT layer type.
    """

    count: int
    by_precision: dict[str, int]
    by_type: dict[str, int]


_PRECISION_WORDS = (
    ("INT8", ("int8",)),
    ("FP8", ("fp8",)),
    ("BF16", ("bf16",)),
    ("FP16", ("fp16", "half")),
    ("FP32", ("fp32", "float")),
    ("INT32", ("int32",)),
    ("INT64", ("int64",)),
    ("BOOL", ("bool",)),
)


def _precision_of(text: str) -> str:
    lowered = text.lower()
    for name, words in _PRECISION_WORDS:
        if any(word in lowered for word in words):
            return name
    return "other"


def _tensor_format(tensor: dict[str, Any]) -> str:
    # TensorRT 10 writes "Format/Datatype"; 11 splits it into "Format" and "DataType".
    return str(
        tensor.get("Format/Datatype") or tensor.get("DataType") or tensor.get("Format") or ""
    )


def layer_precision(layer: dict[str, Any]) -> str:
    """Precision of one engine-inspector layer record, from its outputs (else inputs)."""
    tensors = layer.get("Outputs") or layer.get("Inputs") or []
    precisions = [_precision_of(_tensor_format(t)) for t in tensors if isinstance(t, dict)]
    known = [p for p in precisions if p != "other"]
    return known[0] if known else "other"


def summarize_engine_information(info_json: str) -> LayerSummary:
    """Count layers by precision and type from ``get_engine_information(JSON)``.

    With ``ProfilingVerbosity.DETAILED`` each layer is a record; with names only, its
    precision is unknown.
    """
    layers = json.loads(info_json).get("Layers", [])
    by_precision: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    for layer in layers:
        if isinstance(layer, dict):
            by_precision[layer_precision(layer)] += 1
            by_type[str(layer.get("LayerType", "?"))] += 1
        else:
            by_precision["unknown"] += 1
    return LayerSummary(len(layers), dict(by_precision), dict(by_type))


# --------------------------------------------------------------------------- calibration data


@dataclass(frozen=True)
class CalibrationSource:
    """Where INT8 calibration frames come from.

    Attributes:
        images: A folder of JPEG/PNG camera frames, or ``None`` for synthetic scenes.
        frames: Most frames to use.
        seed: Seed of the synthetic scenes.
    """

    images: Path | None
    frames: int
    seed: int = 0

    def describe(self) -> str:
        """One line for the log."""
        if self.images is not None:
            return f"up to {self.frames} frames from {self.images}"
        return f"{self.frames} synthetic scenes (camdet.scenes.render_frame, seed {self.seed})"

    def image_paths(self) -> list[Path]:
        """The folder's images, sorted (empty for synthetic frames)."""
        if self.images is None:
            return []
        return sorted(p for p in Path(self.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    def available(self) -> int:
        """How many frames this source can give."""
        if self.images is None:
            return self.frames
        return min(self.frames, len(self.image_paths()))

    def frames_rgb(self) -> Iterator[np.ndarray]:
        """Frames ``[H, W, 3]`` uint8 RGB, as a camera gives them."""
        if self.images is None:
            return synthetic_frames(self.frames, self.seed)
        return folder_frames(self.image_paths()[: self.frames])


def folder_frames(paths: Iterable[Path]) -> Iterator[np.ndarray]:
    """Decode image files to RGB; an unreadable file is logged and skipped."""
    import cv2

    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            logger.warning("skipping unreadable calibration image %s", path)
            continue
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def synthetic_frames(count: int, seed: int) -> Iterator[np.ndarray]:
    """``count`` synthetic camera scenes at the sizes of :data:`CAMERA_SIZES`.

    Raises:
        CalibrationError: At once (not at the first frame) if ``camdet.scenes`` is missing.
    """
    import numpy as np

    try:
        from camdet.scenes import render_frame
    except ImportError as err:
        raise CalibrationError(
            f"synthetic calibration needs camdet.scenes ({err}); pass --calibration-images"
        ) from err
    rng = np.random.default_rng(seed)
    sizes = itertools.islice(itertools.cycle(CAMERA_SIZES), count)
    return (render_frame(rng, width, height).image for width, height in sizes)


def calibration_batches(
    frames: Iterable[np.ndarray], batch_size: int, dtype: Any
) -> Iterator[np.ndarray]:
    """Letterbox frames exactly as serving does and group them into full batches.

    Args:
        frames: ``[H, W, 3]`` uint8 RGB frames.
        batch_size: Frames per batch; a last partial batch is dropped because the
            calibration profile has a fixed batch.
        dtype: Element type of the engine input (float16 in production).

    Yields:
        ``[batch_size, 3, INPUT_SIZE, INPUT_SIZE]`` contiguous arrays in [0, 1].
    """
    import numpy as np

    from camdet.geometry import letterbox_image, to_model_input

    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(to_model_input(letterbox_image(frame), dtype))
        if len(batch) == batch_size:
            yield np.ascontiguousarray(np.stack(batch))
            batch = []


# --------------------------------------------------------------------------- TensorRT glue


def tensorrt_version_problem(version: str) -> str | None:
    """Why this TensorRT version cannot run the builder (``None`` if it can)."""
    major = version.split(".", 1)[0]
    if major.isdigit() and int(major) == SUPPORTED_TENSORRT_MAJOR:
        return None
    return (
        f"TensorRT {version} is not supported: build_engine.py uses the TensorRT 10 builder "
        "API (BuilderFlag.FP16/INT8, IInt8EntropyCalibrator2), which TensorRT 11 removed; "
        "build in an NGC release that ships TensorRT 10 (see docker/README.md)"
    )


def import_tensorrt() -> ModuleType:
    """Import TensorRT 10.

    Raises:
        TensorRTUnavailableError: If it is missing or of another major version.
    """
    try:
        import tensorrt as trt
    except ImportError as err:
        raise TensorRTUnavailableError(f"cannot import tensorrt ({err}): {NEEDS_TENSORRT}") from err
    problem = tensorrt_version_problem(trt.__version__)
    if problem:
        raise TensorRTUnavailableError(problem)
    return trt


def make_trt_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging` and keeps the errors it saw."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }

    class LoggingTrtLogger(trt.ILogger):
        """TensorRT messages as ``logging`` records of logger ``<module>.tensorrt``."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self._log = logging.getLogger(f"{__name__}.tensorrt")

        def log(self, sev: Any, msg: str) -> None:
            """Forward one message."""
            level = levels.get(sev, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            self._log.log(level, "%s", msg)

    return LoggingTrtLogger()


def describe_parser_error(error: Any) -> str:
    """One line for a TensorRT ``IParserError``: node, operator, description, code."""
    where = f"node {error.node()}"
    name, operator = error.node_name(), error.node_operator()
    if name or operator:
        where += f" ({name or '?'}: {operator or '?'})"
    return f"{where}: {error.desc()} [{error.code()}]"


def parse_onnx(trt: ModuleType, builder: Any, trt_logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """Parse the ONNX file into a new network (explicit batch, TensorRT 10's default).

    Returns:
        ``(network, parser)``; keep the parser alive until the build: it owns the weights.

    Raises:
        OnnxParseError: Listing every parser error.
    """
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    if not ok or errors:
        raise OnnxParseError(
            f"TensorRT's ONNX parser rejected {onnx_path}",
            errors or ["parse_from_file returned False without reporting an error"],
        )
    return network, parser


def configure_io(trt: ModuleType, network: Any, contract: DetectorContract) -> None:
    """Give the network's input and output the config's types in linear layout.

    With FP16 in the config, the engine takes preprocess's FP16 CHW tensor and returns
    FP16 to postprocess directly: no cast, no reformat at the boundaries.

    Raises:
        EngineContractError: If the parsed network's I/O names differ from the config.
    """
    pairs = [
        ([network.get_input(i) for i in range(network.num_inputs)], contract.input),
        ([network.get_output(i) for i in range(network.num_outputs)], contract.output),
    ]
    problems = [
        f"network tensors {[t.name for t in tensors]} differ from the config's [{spec.name!r}]"
        for tensors, spec in pairs
        if [t.name for t in tensors] != [spec.name]
    ]
    if problems:
        raise EngineContractError("the parsed network disagrees with the config", problems)
    for tensors, spec in pairs:
        tensor = tensors[0]
        tensor.dtype = getattr(trt.DataType, TRT_DTYPE_NAMES[spec.data_type])
        tensor.allowed_formats = 1 << int(trt.TensorFormat.LINEAR)
        logger.info(
            "network %s %r: shape %s, dtype %s, linear format",
            "input" if tensor.is_network_input else "output",
            tensor.name,
            list(tensor.shape),
            spec.data_type,
        )


def add_profile(
    builder: Any, config: Any, contract: DetectorContract, profile: BatchProfile
) -> None:
    """Add the one optimization profile and log its MIN/OPT/MAX shapes.

    Raises:
        EngineBuildError: If TensorRT rejects the profile.
    """
    shapes = profile.shapes(contract.input.dims)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(contract.input.name, shapes["min"], shapes["opt"], shapes["max"])
    if config.add_optimization_profile(opt_profile) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile {shapes}")
    logger.info(
        "profile 0 input %r: MIN %s OPT %s MAX %s",
        contract.input.name,
        shapes["min"],
        shapes["opt"],
        shapes["max"],
    )


class DeviceBuffer:
    """A CUDA device allocation through the container's own ``libcudart``.

    ctypes on the CUDA runtime C API avoids a cuda-python wheel whose CUDA major must
    match the container's; the NGC TensorRT image ships ``libcudart``.
    """

    _HOST_TO_DEVICE = 1  # cudaMemcpyHostToDevice

    def __init__(self, nbytes: int) -> None:
        self._cudart = _load_cudart()
        pointer = ctypes.c_void_p()
        self._check(
            self._cudart.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(nbytes)), "cudaMalloc"
        )
        self.ptr = int(pointer.value or 0)
        self.nbytes = nbytes

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            self._cudart.cudaGetErrorString.restype = ctypes.c_char_p
            text = self._cudart.cudaGetErrorString(status).decode()
            raise CalibrationError(f"{what} failed: {text} ({status})")

    def upload(self, array: np.ndarray) -> None:
        """Copy a contiguous host array into the buffer."""
        if array.nbytes > self.nbytes or not array.flags.c_contiguous:
            raise CalibrationError(f"cannot upload {array.nbytes} bytes into {self.nbytes}")
        status = self._cudart.cudaMemcpy(
            ctypes.c_void_p(self.ptr),
            ctypes.c_void_p(array.ctypes.data),
            ctypes.c_size_t(array.nbytes),
            ctypes.c_int(self._HOST_TO_DEVICE),
        )
        self._check(status, "cudaMemcpy")

    def free(self) -> None:
        """Release the allocation (idempotent)."""
        if self.ptr:
            self._cudart.cudaFree(ctypes.c_void_p(self.ptr))
            self.ptr = 0


def _load_cudart() -> ctypes.CDLL:
    names = [
        ctypes.util.find_library("cudart"),
        "libcudart.so",
        "libcudart.so.13",
        "libcudart.so.12",
    ]
    errors = []
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError as err:
            errors.append(str(err))
    raise CalibrationError(f"cannot load the CUDA runtime: {'; '.join(errors) or 'not found'}")


class CalibrationFeeder:
    """The calibrator's logic, free of TensorRT: batches to device pointers, cache I/O.

    Args:
        batches: ``[B, 3, S, S]`` contiguous arrays (see :func:`calibration_batches`).
        cache_path: Calibration cache file, read if present and written by TensorRT.
        make_buffer: Allocates a device buffer of N bytes (default :class:`DeviceBuffer`).
    """

    def __init__(
        self,
        batches: Iterator[np.ndarray],
        cache_path: Path,
        make_buffer: Callable[[int], DeviceBuffer] | None = None,
    ) -> None:
        self._batches = batches
        self._cache_path = Path(cache_path)
        self._make_buffer = make_buffer or DeviceBuffer
        self._buffer: DeviceBuffer | None = None
        self.batches_served = 0
        self.trt_calibrator: Any = None
        """The TensorRT calibrator forwarding here, held so it outlives the build."""

    def next_pointers(self, names: Sequence[str]) -> list[int] | None:
        """Upload the next batch; its device pointer for the single input, None at the end.

        Never raises: an exception must not cross into TensorRT's C++.
        """
        try:
            batch = next(self._batches)
            if self._buffer is None:
                self._buffer = self._make_buffer(batch.nbytes)
            self._buffer.upload(batch)
        except StopIteration:
            logger.info("calibration used %d batches", self.batches_served)
            return None
        except Exception:
            logger.exception("calibration batch %d failed", self.batches_served + 1)
            return None
        self.batches_served += 1
        logger.info("calibration batch %d for %s", self.batches_served, list(names))
        return [self._buffer.ptr]

    def read_cache(self) -> bytes | None:
        """The cached scales, if a non-empty cache file exists."""
        if self._cache_path.is_file() and self._cache_path.stat().st_size > 0:
            logger.info("using calibration cache %s", self._cache_path)
            return self._cache_path.read_bytes()
        return None

    def write_cache(self, cache: Any) -> None:
        """Keep the scales TensorRT computed for the next build."""
        _atomic_write(self._cache_path, bytes(cache))
        logger.info("wrote calibration cache %s", self._cache_path)

    def free(self) -> None:
        """Release the device buffer."""
        if self._buffer is not None:
            self._buffer.free()
            self._buffer = None


def make_calibrator(trt: ModuleType, feeder: CalibrationFeeder, batch_size: int) -> Any:
    """An ``IInt8EntropyCalibrator2`` that forwards to ``feeder``.

    With a calibration cache TensorRT reads it and asks for no batch.
    """

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds letterboxed frames to TensorRT's INT8 calibration."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            """Frames per calibration batch (the calibration profile's batch)."""
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            """Device pointers of the next batch, or None when calibration data ends."""
            return feeder.next_pointers(names)

        def read_calibration_cache(self) -> bytes | None:
            """Cached scales, if any."""
            return feeder.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            """Store the scales."""
            feeder.write_cache(cache)

    return EntropyCalibrator()


class PhaseTracker:
    """Nested build phases of TensorRT's progress callbacks, mapped onto rich tasks.

    Kept free of TensorRT so it can be tested without it; the ``IProgressMonitor``
    subclass in :func:`make_progress_monitor` only forwards to it.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}
        self._depth: dict[str, int] = {}

    def start(self, phase: str, parent: str | None, steps: int) -> None:
        """A phase began (under ``parent``, if any) with ``steps`` steps."""
        depth = self._depth.get(parent, -1) + 1 if parent is not None else 0
        self._depth[phase] = depth
        self._tasks[phase] = self._progress.add_task("  " * depth + phase, total=max(steps, 1))

    def step(self, phase: str, step: int) -> None:
        """Step ``step`` (0-based) of ``phase`` completed."""
        if phase in self._tasks:
            self._progress.update(self._tasks[phase], completed=step + 1)

    def finish(self, phase: str) -> None:
        """``phase`` ended."""
        task = self._tasks.pop(phase, None)
        self._depth.pop(phase, None)
        if task is not None:
            self._progress.remove_task(task)


def make_progress_monitor(trt: ModuleType, tracker: PhaseTracker) -> Any:
    """A ``trt.IProgressMonitor`` forwarding to ``tracker``; Ctrl-C cancels the build."""

    class RichProgressMonitor(trt.IProgressMonitor):
        """TensorRT build phases as rich progress bars."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            """Forward a phase start."""
            try:
                tracker.start(phase_name, parent_phase, num_steps)
            except KeyboardInterrupt:
                self.cancelled = True

        def step_complete(self, phase_name: str, step: int) -> bool:
            """Forward a step; returning False cancels the build."""
            try:
                tracker.step(phase_name, step)
            except KeyboardInterrupt:
                self.cancelled = True
            return not self.cancelled

        def phase_finish(self, phase_name: str) -> None:
            """Forward a phase end."""
            try:
                tracker.finish(phase_name)
            except KeyboardInterrupt:
                self.cancelled = True

    return RichProgressMonitor()


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildRequest:
    """Everything ``build`` needs.

    Attributes:
        onnx: ONNX file.
        config: ``detector/config.pbtxt``.
        labels: ``postprocess/labels.txt``.
        plan: Output plan path (sidecar beside it).
        precision: Compute precision.
        max_batch: Requested MAX batch (``None``: the config's).
        opt_batch: Requested OPT batch (``None``: derived).
        update_config: Rewrite the config's batching to match the requested profile.
        workspace_gib: Builder workspace limit, GiB.
        optimization_level: Builder optimization level 0..5.
        timing_cache: Timing cache file, loaded if present and saved after the build.
        calibration_cache: INT8 calibration cache (``None``: per ONNX hash in the cache dir).
        calibration: INT8 calibration frames.
        calibration_batch: Frames per calibration batch.
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
    calibration_cache: Path | None = None
    calibration: CalibrationSource = field(default_factory=lambda: CalibrationSource(None, 512))
    calibration_batch: int = 8
    gpu_index: int = 0
    progress: bool = True

    def calibration_cache_for(self, onnx_sha256: str) -> Path:
        """The calibration cache path: explicit, or keyed by the ONNX file's hash."""
        if self.calibration_cache is not None:
            return self.calibration_cache
        return self.timing_cache.parent / f"calibration-{onnx_sha256[:16]}.cache"


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


def _configure_precision(
    trt: ModuleType,
    builder: Any,
    network: Any,
    config: Any,
    request: BuildRequest,
    inputs: ValidatedInputs,
) -> CalibrationFeeder | None:
    """Set precision flags; for INT8 also the calibrator (its feeder is returned)."""
    if request.precision in (Precision.FP16, Precision.INT8):
        config.set_flag(trt.BuilderFlag.FP16)
    if request.precision is not Precision.INT8:
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    cache = request.calibration_cache_for(inputs.onnx_sha256)
    source = request.calibration
    if not cache.is_file() and source.available() < request.calibration_batch:
        raise CalibrationError(
            f"INT8 needs at least {request.calibration_batch} calibration frames and "
            f"{source.describe()} gives {source.available()}; no calibration cache at {cache}"
        )
    contract = inputs.contract
    dtype = trt.nptype(network.get_input(0).dtype)
    calibration_profile = builder.create_optimization_profile()
    shape = [request.calibration_batch, *contract.input.dims]
    calibration_profile.set_shape(contract.input.name, shape, shape, shape)
    config.set_calibration_profile(calibration_profile)
    # With a cache TensorRT asks for no batch, so the frames are not even opened.
    frames = iter(()) if cache.is_file() else source.frames_rgb()
    batches = calibration_batches(frames, request.calibration_batch, dtype)
    feeder = CalibrationFeeder(batches, cache)
    feeder.trt_calibrator = make_calibrator(trt, feeder, request.calibration_batch)
    config.int8_calibrator = feeder.trt_calibrator
    logger.info("INT8 calibration: %s, batch %s, cache %s", source.describe(), shape, cache)
    return feeder


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
    _atomic_write(path, bytes(config.get_timing_cache().serialize()))
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


def _engine_io(
    trt: ModuleType, engine: Any, contract: DetectorContract, profile: BatchProfile
) -> list[IoTensor]:
    context = engine.create_execution_context()
    context.set_input_shape(contract.input.name, profile.shapes(contract.input.dims)["opt"])
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shapes = None
        if is_input:
            low, opt, high = engine.get_tensor_profile_shape(name, 0)
            shapes = {"min": list(low), "opt": list(opt), "max": list(high)}
        io.append(
            IoTensor(
                name,
                is_input,
                engine.get_tensor_dtype(name).name,
                shapes,
                list(context.get_tensor_shape(name)),
            )
        )
    return io


def inspect_plan(
    trt: ModuleType, trt_logger: Any, plan: bytes, contract: DetectorContract, profile: BatchProfile
) -> tuple[list[IoTensor], LayerSummary]:
    """Deserialize the new plan and read its I/O and layers, as Triton will load it.

    Raises:
        EngineBuildError: If the plan does not deserialize.
    """
    runtime = trt.Runtime(trt_logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineBuildError("the new plan does not deserialize")
    io = _engine_io(trt, engine, contract, profile)
    inspector = engine.create_engine_inspector()
    summary = summarize_engine_information(
        inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    )
    return io, summary


def _build_plan(
    trt: ModuleType, request: BuildRequest, inputs: ValidatedInputs, profile: BatchProfile
) -> tuple[bytes, float, list[IoTensor], LayerSummary]:
    trt_logger = make_trt_logger(trt)
    builder = trt.Builder(trt_logger)
    network, parser = parse_onnx(trt, builder, trt_logger, request.onnx)
    configure_io(trt, network, inputs.contract)
    config = builder.create_builder_config()
    _configure_builder(trt, config, request)
    add_profile(builder, config, inputs.contract, profile)
    feeder = _configure_precision(trt, builder, network, config, request, inputs)
    _load_timing_cache(config, request.timing_cache)
    try:
        plan, seconds = _serialize(trt, builder, network, config, request, trt_logger)
    finally:
        if feeder is not None:
            feeder.free()
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
    plan, seconds, io, summary = _build_plan(trt, request, inputs, profile)
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
    )
    _atomic_write(request.plan, plan)
    _atomic_write(sidecar_path(request.plan), sidecar.to_json().encode())
    logger.info("wrote %s and %s", request.plan, sidecar_path(request.plan))
    return BuildResult(request.plan, sidecar, summary, io)


# --------------------------------------------------------------------------- CLI

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
    calibration_cache: Annotated[
        Path | None,
        typer.Option(
            "--calibration-cache",
            help="INT8 calibration cache (default: per ONNX hash beside the timing cache).",
            envvar="CAMDET_CALIBRATION_CACHE",
        ),
    ] = None,
    calibration_images: Annotated[
        Path | None,
        typer.Option(
            "--calibration-images",
            help="Folder of JPEG/PNG camera frames for INT8 (default: synthetic scenes).",
        ),
    ] = None,
    calibration_frames: Annotated[
        int, typer.Option("--calibration-frames", min=1, help="Most calibration frames.")
    ] = 512,
    calibration_batch: Annotated[
        int, typer.Option("--calibration-batch", min=1, help="Frames per calibration batch.")
    ] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of synthetic calibration scenes.")] = 0,
    gpu_index: GpuIndexOption = 0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Rich progress bars while building.")
    ] = True,
) -> None:
    """Build the raw TensorRT plan and its sidecar from the ONNX export."""
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
        calibration_cache=calibration_cache,
        calibration=CalibrationSource(calibration_images, calibration_frames, seed),
        calibration_batch=calibration_batch,
        gpu_index=gpu_index,
        progress=progress,
    )
    try:
        result = build_engine(request)
    except BuildEngineError as err:
        raise _fail(err) from err
    _print_summary(result)


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
