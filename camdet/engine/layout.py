"""Recognize ONNX detector layouts camdet does not serve, and say so by name.

camdet serves the ultralytics anchor-free head: one input ``[batch, 3, H, W]`` and one
output ``[batch, 4 + nc, N]`` (cx, cy, w, h, then class scores; N anchors), with NMS done
by ``postprocess``. Three exports look like a detector but are not that, and a list of
shape mismatches would not tell the user why:

- **NMS inside the graph** (``yolo export ... nms=True``, TensorRT's ``EfficientNMS_TRT``,
  ONNX ``NonMaxSuppression``): the output is already final boxes, ``[batch, 300, 6]`` or
  several ``num_dets``/``det_boxes`` tensors.
- **YOLOv5's anchor-based head** ``[batch, 3 * N, 5 + nc]``: three anchor boxes per cell
  and an objectness column; its box decode differs, so it is refused, not converted
  (YOLOv5u, YOLOv8 and YOLO11 export the supported head).
- **The supported head transposed**, ``[batch, N, 4 + nc]`` (some export scripts add a
  ``Transpose``): refused with the fix, since ``postprocess`` reads rows as features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from camdet.engine.contract import BOX_ROWS

if TYPE_CHECKING:
    import onnx

NMS_OPERATORS = frozenset(
    {"NonMaxSuppression", "EfficientNMS_TRT", "BatchedNMSDynamic_TRT", "BatchedNMS_TRT"}
)
"""Operators that mean the graph does its own NMS."""

YOLOV5_ANCHORS_PER_CELL = 3
"""YOLOv5 predicts three anchor boxes in every cell of every scale."""

MIN_OPSET = 13
"""Oldest default-domain opset accepted: per-channel Q/DQ (INT8) needs opset 13."""

REEXPORT = "re-export with `yolo export model=MODEL.pt format=onnx opset=17 dynamic=True`"


def opset_problem(model: onnx.ModelProto) -> str | None:
    """Why the model's default-domain opset is too old (``None`` if it is fine)."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if versions and max(versions) < MIN_OPSET:
        return f"ONNX opset {max(versions)} is older than {MIN_OPSET}; {REEXPORT}"
    return None


def nms_problem(model: onnx.ModelProto) -> str | None:
    """Why the graph looks exported with NMS inside (``None`` if it does not)."""
    found = sorted({node.op_type for node in model.graph.node} & NMS_OPERATORS)
    names = [o.name for o in model.graph.output]
    if found or any(name in ("num_dets", "det_boxes", "num_detections") for name in names):
        what = f"operators {found}" if found else f"outputs {names}"
        return (
            f"the ONNX file was exported with NMS inside ({what}); camdet runs NMS in "
            f"postprocess, so export without it: {REEXPORT} (no nms=True)"
        )
    return None


def head_layout_problem(shape: Sequence[int | str], num_classes: int, anchors: int) -> str | None:
    """Name a known foreign head layout from the output shape, else ``None``.

    Args:
        shape: The output's ``[batch, d1, d2]`` (symbolic dims are strings).
        num_classes: Classes in the labels file.
        anchors: Anchors the supported head has at the configured input size.

    Returns:
        One sentence naming the layout and the fix, or ``None``.
    """
    if len(shape) != 3 or not all(isinstance(d, int) for d in shape[1:]):
        return None
    rows, cols = int(shape[1]), int(shape[2])
    if cols == 6 and rows != BOX_ROWS + num_classes:
        return (
            f"output [batch, {rows}, 6] holds final detections (x1, y1, x2, y2, score, class): "
            f"the model was exported with NMS inside; {REEXPORT} (no nms=True)"
        )
    if rows == YOLOV5_ANCHORS_PER_CELL * anchors and cols == BOX_ROWS + 1 + num_classes:
        return (
            f"output [batch, {rows}, {cols}] is YOLOv5's anchor-based layout [batch, 3 x "
            f"{anchors} anchors, 5 + {num_classes}] (objectness column), which camdet does not "
            "decode; export the same weights as YOLOv5u, or a YOLOv8/YOLO11 model "
            "(anchor-free head [batch, 4 + nc, anchors])"
        )
    if rows == anchors and cols == BOX_ROWS + num_classes:
        return (
            f"output [batch, {rows}, {cols}] is the YOLO head transposed; camdet expects "
            f"[batch, 4 + nc, anchors] = [batch, {cols}, {rows}]: drop the final Transpose"
        )
    return None
