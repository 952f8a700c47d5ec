"""Check an ONNX detector against the config's contract with the ``onnx`` package.

Everything runs without TensorRT: tensor names, float32/16 I/O, a dynamic batch axis,
the input ``[batch, 3, H, W]`` at the configured input size and the YOLO head
``[batch, 4 + classes, anchors]`` with ``classes`` from ``postprocess/labels.txt``. Every
problem is collected and reported at once; layouts camdet does not serve (NMS inside,
YOLOv5, transposed) are named by :mod:`camdet.engine.layout`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from camdet.engine.contract import (
    BOX_ROWS,
    DetectorContract,
    anchor_terms,
    detector_contract,
    expected_anchors,
    input_shape,
    load_model_config,
    read_labels,
)
from camdet.engine.errors import ContractError
from camdet.engine.files import file_sha256
from camdet.engine.layout import head_layout_problem, nms_problem, opset_problem

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

ONNX_FLOAT_TYPES = {1: "float32", 10: "float16"}
"""ONNX ``TensorProto`` element types accepted for the detector's I/O."""

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
    shape = input_shape()
    want = expected_anchors(shape)
    if anchors == want:
        return None
    return f"ONNX output {name!r} has {anchors} anchors, expected {want} = {anchor_terms(shape)}"


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
    foreign = [p for p in (opset_problem(model), nms_problem(model)) if p]
    if problems or foreign:
        # A graph with NMS inside has several outputs: name the cause, not the count.
        return OnnxReport(foreign or problems, [], None, None)
    problems.extend(_check_onnx_input(inputs[0], contract))
    pinned = [1, *contract.input.dims]
    inferred = _pinned_output_shapes(model, pinned).get(outputs[0].name)
    shape = resolve_output_shape(_value_shape(outputs[0]), inferred)
    anchors = expected_anchors(contract.input.dims[1:])
    layout = head_layout_problem(shape or [], contract.num_classes, anchors)
    if layout is not None:
        return OnnxReport([f"ONNX output {outputs[0].name!r}: {layout}"], [], None, shape)
    output_problems, notes = _check_onnx_output(outputs[0], shape, contract)
    problems.extend(output_problems)
    return OnnxReport(problems, notes, _value_shape(inputs[0]), shape)


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
