"""What a built engine holds: its I/O against the config, its layers by precision."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from camdet.engine.contract import BatchProfile, DetectorContract
from camdet.engine.errors import EngineBuildError

TRT_DTYPE_NAMES = {"TYPE_FP16": "HALF", "TYPE_FP32": "FLOAT"}
"""Config data type -> ``tensorrt.DataType`` member name."""


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
