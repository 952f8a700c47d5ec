"""Convert the detector's ONNX file to the precision TensorRT will build, before TensorRT.

TensorRT 11 builds only strongly typed networks: every tensor's type comes from the ONNX
file, and the precision flags and implicit INT8 calibration of TensorRT 10 are gone. So
the precision is put into the graph here, with NVIDIA ModelOpt, and the same converted
file builds on TensorRT 10 (``STRONGLY_TYPED`` flag) and 11:

- ``fp32``: the export as is.
- ``fp16``: ModelOpt AutoCast; nodes whose values would overflow FP16 (the box decode
  reaches 640 px, above AutoCast's ``data_max``) stay FP32.
- ``int8``: ModelOpt ONNX post-training quantization: explicit QuantizeLinear /
  DequantizeLinear pairs, scales from entropy calibration on letterboxed frames
  (:mod:`camdet.engine.calibration`), the rest in FP16.

Afterwards the graph's input and output get the config's data type (FP16 in production,
so ``preprocess``'s FP16 tensor feeds the engine with no cast). Everything here runs with
ONNX Runtime on the CPU, so the converted files are tested and scored on any machine.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from camdet.engine.contract import Precision
from camdet.engine.errors import PrecisionConversionError
from camdet.engine.files import atomic_write, file_sha256

if TYPE_CHECKING:
    import numpy as np
    import onnx

logger = logging.getLogger(__name__)

CONFIG_ONNX_TYPES = {"TYPE_FP16": 10, "TYPE_FP32": 1}
"""Config data type -> ONNX ``TensorProto`` element type."""

CalibrationData = Callable[[], "np.ndarray"]
"""Returns ``[N, 3, H, W]`` float32 letterboxed frames; called only if INT8 calibrates."""


@dataclass(frozen=True)
class ConvertedOnnx:
    """A converted ONNX file ready for a strongly typed build.

    Attributes:
        path: The converted file.
        precision: Its precision.
        sha256: Hash of the converted file.
        modelopt_version: ModelOpt that converted it (empty for FP32).
        reused: It was found in the cache, not converted now.
    """

    path: Path
    precision: Precision
    sha256: str
    modelopt_version: str
    reused: bool = False


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _rename_inputs(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _set_input_dtype(graph: onnx.GraphProto, value: onnx.ValueInfoProto, elem: int) -> None:
    from onnx import helper

    have = value.type.tensor_type.elem_type
    consumers = [n for n in graph.node if value.name in n.input]
    if consumers and all(n.op_type == "Cast" and _cast_to(n) == elem for n in consumers):
        # The converter kept the old type and cast straight to ours: drop that cast.
        for cast in consumers:
            _rename_inputs(graph, cast.output[0], value.name)
            graph.node.remove(cast)
    else:
        inner = f"{value.name}__cast_in"
        _rename_inputs(graph, value.name, inner)
        graph.node.insert(0, helper.make_node("Cast", [value.name], [inner], to=have))
    value.type.tensor_type.elem_type = elem


def _set_output_dtype(graph: onnx.GraphProto, value: onnx.ValueInfoProto, elem: int) -> None:
    from onnx import helper

    inner = f"{value.name}__cast_out"
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == value.name:
                node.output[i] = inner
    _rename_inputs(graph, value.name, inner)
    graph.node.append(helper.make_node("Cast", [inner], [value.name], to=elem))
    value.type.tensor_type.elem_type = elem


def set_io_dtype(model: onnx.ModelProto, data_type: str) -> onnx.ModelProto:
    """Give the graph's input and output the config's data type, with Cast nodes.

    Args:
        model: The converted model (changed in place).
        data_type: Config type, ``TYPE_FP16`` or ``TYPE_FP32``.

    Returns:
        ``model``, its I/O now of ``data_type``.
    """
    elem = CONFIG_ONNX_TYPES[data_type]
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    for value in [v for v in graph.input if v.name not in initializers]:
        if value.type.tensor_type.elem_type != elem:
            _set_input_dtype(graph, value, elem)
    for value in graph.output:
        if value.type.tensor_type.elem_type != elem:
            _set_output_dtype(graph, value, elem)
    # Stale value_info would contradict the new types; TensorRT and ORT re-infer them.
    del graph.value_info[:]
    return model


def restore_output_shapes(model: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Copy the source's declared output dims (converters leave them symbolic)."""
    declared = {o.name: o.type.tensor_type.shape for o in source.graph.output}
    for output in model.graph.output:
        if output.name in declared:
            output.type.tensor_type.shape.CopyFrom(declared[output.name])


def _modelopt_version() -> str:
    try:
        import modelopt
    except ImportError as err:
        raise PrecisionConversionError(
            f"cannot import ModelOpt ({err}): pip install 'camdet[precision]' "
            "(nvidia-modelopt with its ONNX dependencies)"
        ) from err
    return str(modelopt.__version__)


def autocast_fp16(source: Path) -> onnx.ModelProto:
    """FP16 mixed precision by ModelOpt AutoCast (FP16 I/O; overflow-prone nodes FP32)."""
    from modelopt.onnx.autocast import convert_to_mixed_precision

    return convert_to_mixed_precision(
        str(source), low_precision_type="fp16", keep_io_types=False, providers=["cpu"]
    )


def quantize_int8(
    source: Path, calibration: np.ndarray, calibration_eps: tuple[str, ...] = ("cpu",)
) -> onnx.ModelProto:
    """INT8 with explicit Q/DQ nodes by ModelOpt's ONNX post-training quantization.

    Args:
        source: The FP32 ONNX export.
        calibration: ``[N, 3, H, W]`` float32 letterboxed frames in [0, 1].
        calibration_eps: ONNX Runtime providers for calibration, in order of preference
            (``cpu``, ``cuda:0``, ``trt``).

    Returns:
        The quantized model; unquantized nodes in FP16.
    """
    import onnx
    from modelopt.onnx.quantization import quantize

    with tempfile.TemporaryDirectory(prefix="camdet-int8-") as tmp:
        # ModelOpt rewrites its input file in place (shape inference, opset bump): it gets
        # a copy, so the repository's model.onnx, and its hash in the sidecar, stay as is.
        copy = Path(tmp) / "source.onnx"
        shutil.copyfile(source, copy)
        out = Path(tmp) / "int8.onnx"
        quantize(
            str(copy),
            quantize_mode="int8",
            calibration_data=calibration,
            calibration_method="entropy",
            calibration_eps=list(calibration_eps),
            output_path=str(out),
            high_precision_dtype="fp16",
            log_level="WARNING",
        )
        return onnx.load(str(out))


def convert_model(
    source: Path,
    precision: Precision,
    io_data_type: str,
    calibration: CalibrationData | None = None,
    calibration_eps: tuple[str, ...] = ("cpu",),
) -> tuple[onnx.ModelProto, str]:
    """Convert ``source`` to ``precision`` with I/O of ``io_data_type``.

    Returns:
        The converted model and the ModelOpt version used (empty for FP32).

    Raises:
        PrecisionConversionError: ModelOpt is missing, INT8 has no calibration data, or
            the conversion failed.
    """
    import onnx

    original = onnx.load(str(source))
    version = ""
    try:
        if precision is Precision.FP32:
            model = onnx.load(str(source))
        elif precision is Precision.FP16:
            version = _modelopt_version()
            model = autocast_fp16(source)
        else:
            version = _modelopt_version()
            if calibration is None:
                raise PrecisionConversionError("INT8 needs calibration frames")
            model = quantize_int8(source, calibration(), calibration_eps)
    except PrecisionConversionError:
        raise
    except Exception as err:  # ModelOpt and ORT raise many types; one typed error out
        raise PrecisionConversionError(
            f"ModelOpt could not convert {source} to {precision.value}: {err}"
        ) from err
    set_io_dtype(model, io_data_type)
    restore_output_shapes(model, original)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise PrecisionConversionError(
            f"converted {precision.value} model is invalid: {err}"
        ) from err
    return model, version


def converted_path(cache_dir: Path, onnx_sha256: str, precision: Precision, shape: str) -> Path:
    """Where a conversion is kept: keyed by the source's hash, precision and input size."""
    return Path(cache_dir) / f"detector-{onnx_sha256[:16]}-{shape}-{precision.value}.onnx"


def convert_onnx(
    source: Path,
    out: Path,
    precision: Precision,
    io_data_type: str,
    calibration: CalibrationData | None = None,
    calibration_eps: tuple[str, ...] = ("cpu",),
    reuse: bool = True,
) -> ConvertedOnnx:
    """Convert ``source`` into ``out`` unless ``out`` already holds that conversion.

    INT8 calibration is slow (ONNX Runtime runs every frame), so a kept file is reused:
    its name carries the source's hash (:func:`converted_path`).

    Raises:
        PrecisionConversionError: As :func:`convert_model`.
    """
    out = Path(out)
    if reuse and out.is_file() and out.stat().st_size > 0:
        logger.info("reusing the %s conversion %s", precision.value, out)
        version = _modelopt_version() if precision is not Precision.FP32 else ""
        return ConvertedOnnx(out, precision, file_sha256(out), version, reused=True)
    model, version = convert_model(source, precision, io_data_type, calibration, calibration_eps)
    atomic_write(out, model.SerializeToString())
    logger.info("converted %s to %s: %s", source, precision.value, out)
    return ConvertedOnnx(out, precision, file_sha256(out), version)
