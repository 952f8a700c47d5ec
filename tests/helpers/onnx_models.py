"""Real ONNX detector heads made with ``onnx.helper``, run with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from camdet.constants import INPUT_SIZE


def yolo_onnx(
    path: Path,
    *,
    num_classes: int = 4,
    input_name: str = "images",
    output_name: str = "output0",
    batch: int | str = "batch",
    strides: tuple[int, ...] = (8, 16, 32),
    size: int = INPUT_SIZE,
    declared_output: list[int | str] | None = None,
    input_type: int = TensorProto.FLOAT,
) -> Path:
    """A real YOLO-layout head: one strided conv per scale, flattened and concatenated.

    Output ``[batch, 4 + num_classes, sum((size / s)^2)]``, sigmoid scores.
    """
    rows = 4 + num_classes
    anchors = sum((size // s) ** 2 for s in strides)
    rng = np.random.default_rng(0)
    nodes, inits, flats = [], [], []
    source = input_name
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT))
        source = "as_float"
    inits.append(helper.make_tensor("flat_shape", TensorProto.INT64, [3], [0, rows, -1]))
    for s in strides:
        weight = rng.normal(0, 0.01, (rows, 3, s, s)).astype(np.float32)
        inits.append(helper.make_tensor(f"w{s}", TensorProto.FLOAT, weight.shape, weight.ravel()))
        nodes.append(helper.make_node("Conv", [source, f"w{s}"], [f"c{s}"], strides=[s, s]))
        nodes.append(helper.make_node("Reshape", [f"c{s}", "flat_shape"], [f"f{s}"]))
        flats.append(f"f{s}")
    nodes.append(helper.make_node("Concat", flats, ["cat"], axis=2))
    nodes.append(helper.make_node("Sigmoid", ["cat"], [output_name]))
    graph = helper.make_graph(
        nodes,
        "yolo_head",
        [helper.make_tensor_value_info(input_name, input_type, [batch, 3, size, size])],
        [
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, declared_output or [batch, rows, anchors]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run_onnx(path: Path, batch: int = 2) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    return session.run(None, {inp.name: np.zeros((batch, 3, 640, 640), dtype)})[0]
