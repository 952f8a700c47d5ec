"""YOLO head decoding, class-aware NMS, rescaling and box colours on the CPU, without torch.

The torch-free twin of :mod:`camdet.steps.postprocess.detections` (the torch path, which
the GPU runs), so that a CPU server needs no torch install (its PyPI build pulls ~4 GB of
CUDA libraries): numpy for the decoding and bookkeeping, OpenCV's
``cv2.dnn.NMSBoxesBatched`` for the class-aware NMS and ONNX Runtime's ``RoiAlign`` for
the box colours. Each step keeps the torch path's semantics, so that both give the same
detections on the same head output (``tests/test_postprocess_host.py``):

- Candidates: each anchor's first best class, scores above the frame's threshold
  (exclusive), at most :data:`MAX_NMS_CANDIDATES` per frame, in anchor order; the same
  float32 operations as the torch path, so the same boxes bit for bit.
- NMS: OpenCV and torchvision both suppress a box whose IoU with a kept, higher-scored box
  of its group exceeds the threshold (``>``, IoU in float64), and both rank candidates by a
  stable descending sort, so equal scores (frequent: the head is FP16) keep candidate
  order. OpenCV separates the groups by offsetting each by ``group * (max coordinate + 1)``,
  which only works for non-negative coordinates: the boxes are shifted to start at 0.
- Colours: ONNX ``RoiAlign`` with ``half_pixel`` coordinates is torchvision's
  ``roi_align(aligned=True)`` (same sample points, same border rules; equal bit for bit in
  float32). It runs here in float32; the torch path runs it in the images' FP16 with the
  boxes rounded to FP16, so the two paths' colours agree to ~1e-2, not bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from camdet.contract import FrameDetections
from camdet.geometry import INPUT_SHAPE, Size, scale_boxes_to_original
from camdet.steps.postprocess.thresholds import (
    COLOR_REGION,
    COLOR_SAMPLES,
    MAX_NMS_CANDIDATES,
    Thresholds,
)

_ROI_ALIGN_OPSET = 16
"""The first opset whose ``RoiAlign`` has ``coordinate_transformation_mode``."""


@dataclass(frozen=True)
class HostDetections:
    """Final detections of a whole batch, frame after frame in flat numpy arrays.

    Attributes:
        boxes: ``[M, 4]`` float32 xyxy in original frame pixels, clipped to the frame.
        scores: ``[M]`` float32, descending within each frame.
        class_ids: ``[M]`` int64.
        counts: Detections per frame (sums to M).
        colors: ``[M, 3]`` float32 mean RGB in ``[0, 1]`` of each box's centre, or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    counts: list[int]
    colors: np.ndarray | None = None

    def frames(self) -> list[FrameDetections]:
        """Split into one :class:`~camdet.contract.FrameDetections` per frame (views)."""
        bounds = np.cumsum(self.counts)[:-1]
        parts = [np.split(a, bounds) for a in (self.boxes, self.scores, self.class_ids)]
        colors = (
            np.split(self.colors, bounds) if self.colors is not None else [None] * len(parts[0])
        )
        return [FrameDetections(*row) for row in zip(*parts, colors, strict=True)]


class BoxColors:
    """Mean colour of the central part of each box, by ONNX Runtime's ``RoiAlign``.

    One output cell averages :data:`COLOR_SAMPLES` squared bilinear samples of the central
    :data:`COLOR_REGION` of each box, as the torch path's ``roi_align`` does. One small
    session per images dtype, built on first use: a ``Cast`` to float32 (ONNX Runtime's
    vectorised conversion; numpy's FP16 cast is ~25x slower) and the ``RoiAlign``.
    """

    def __init__(self) -> None:
        self._sessions: dict[np.dtype, ort.InferenceSession] = {}

    def __call__(
        self, images: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray
    ) -> np.ndarray:
        """The boxes' colours.

        Args:
            images: ``[B, 3, H, W]`` letterboxed detector input, RGB in ``[0, 1]`` (FP16
                or FP32).
            frame_index: ``[M]`` integer frame of each box in ``images``.
            boxes: ``[M, 4]`` float32 xyxy in the same letterboxed input pixels.

        Returns:
            ``[M, 3]`` float32 mean RGB in ``[0, 1]``.
        """
        if len(boxes) == 0:
            return np.zeros((0, 3), np.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) * np.float32(COLOR_REGION / 2)
        rois = np.concatenate((centres - half, centres + half), axis=1).astype(np.float32)
        feeds = {"images": images, "rois": rois, "frame_index": frame_index.astype(np.int64)}
        (mean,) = self._session(images.dtype).run(None, feeds)
        return mean.reshape(-1, 3)

    def _session(self, dtype: np.dtype) -> ort.InferenceSession:
        session = self._sessions.get(dtype)
        if session is None:
            options = ort.SessionOptions()
            # A few boxes per batch: a thread pool costs more than it saves, and the cores
            # belong to the detector; no arena, so the batch's float32 copy is freed.
            options.intra_op_num_threads = 1
            options.enable_cpu_mem_arena = False
            model = _roi_align_model(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            self._sessions[dtype] = session
        return session


def _roi_align_model(image_type: int) -> onnx.ModelProto:
    """``images`` (``image_type``) -> float32 -> ``RoiAlign`` to one averaged cell per box."""
    nodes = [
        helper.make_node("Cast", ["images"], ["images_f32"], to=TensorProto.FLOAT),
        helper.make_node(
            "RoiAlign",
            ["images_f32", "rois", "frame_index"],
            ["colors"],
            mode="avg",
            output_height=1,
            output_width=1,
            sampling_ratio=COLOR_SAMPLES,
            spatial_scale=1.0,
            coordinate_transformation_mode="half_pixel",  # roi_align(aligned=True)
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "box_colors",
        [
            helper.make_tensor_value_info("images", image_type, [None, 3, None, None]),
            helper.make_tensor_value_info("rois", TensorProto.FLOAT, [None, 4]),
            helper.make_tensor_value_info("frame_index", TensorProto.INT64, [None]),
        ],
        [helper.make_tensor_value_info("colors", TensorProto.FLOAT, [None, 3, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _ROI_ALIGN_OPSET)])
    model.ir_version = 8  # what every ONNX Runtime of the pinned range reads
    return model


def _candidates(
    raw: np.ndarray, confidence: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pick each anchor's best class and keep anchors above their frame's threshold.

    Args:
        raw: ``[B, 4 + nc, N]`` head output.
        confidence: ``[B]`` float32 per-frame confidence thresholds.

    Returns:
        ``(frame_index [M], boxes [M, 4] xyxy input px float32, scores [M] float32,
        class_ids [M] int64)``, frame after frame in anchor order.
    """
    class_scores = raw[:, 4:]
    class_ids = class_scores.argmax(axis=1)  # the first best class, as torch's max
    scores = np.take_along_axis(class_scores, class_ids[:, None], axis=1)[:, 0]
    keep = scores.astype(np.float32) > confidence[:, None]
    frame_index, anchor = np.nonzero(keep)
    scores = scores[frame_index, anchor].astype(np.float32)
    if scores.size > MAX_NMS_CANDIDATES:
        frame_index, anchor, scores = _cap_per_frame(frame_index, anchor, scores)
    xywh = raw[frame_index, :4, anchor].astype(np.float32)
    center, half = xywh[:, :2], xywh[:, 2:] / 2
    boxes = np.concatenate((center - half, center + half), axis=1)
    return frame_index, boxes, scores, class_ids[frame_index, anchor].astype(np.int64)


def _cap_per_frame(
    frame_index: np.ndarray, anchor: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep each frame's ``MAX_NMS_CANDIDATES`` best-scored candidates."""
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(frame_index[order], kind="stable")]
    order = order[_rank_within_frame(frame_index[order]) < MAX_NMS_CANDIDATES]
    return frame_index[order], anchor[order], scores[order]


def _rank_within_frame(sorted_frame_index: np.ndarray) -> np.ndarray:
    """Position of each element inside its frame's run, for a frame-sorted index."""
    positions = np.arange(len(sorted_frame_index))
    is_start = np.ones(len(sorted_frame_index), dtype=bool)
    is_start[1:] = sorted_frame_index[1:] != sorted_frame_index[:-1]
    return positions - np.maximum.accumulate(np.where(is_start, positions, 0))


def _nms(
    groups: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    candidate_iou: np.ndarray,
    iou_values: list[float],
) -> np.ndarray:
    """Class-aware NMS of a whole batch: one OpenCV call per distinct IoU threshold.

    Args:
        groups: ``[M]`` int (frame, class) group of each candidate: NMS never compares
            boxes of different groups.
        boxes: ``[M, 4]`` xyxy candidates, input pixels.
        scores: ``[M]`` float32 scores.
        candidate_iou: ``[M]`` the IoU threshold of each candidate's frame.
        iou_values: The distinct values of ``candidate_iou``, ascending.

    Returns:
        Indices of kept candidates, sorted by descending score (stable).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    corners = boxes.astype(np.float64)
    # OpenCV's group offset (max coordinate + 1) separates groups only from 0 upwards.
    corners -= corners.min()
    rects = np.concatenate((corners[:, :2], corners[:, 2:] - corners[:, :2]), axis=1)
    group_ids = groups.astype(np.int32)
    kept = []
    for value in iou_values:
        members = np.flatnonzero(candidate_iou == value)
        picked = cv2.dnn.NMSBoxesBatched(
            rects[members], scores[members], group_ids[members], -1.0, value
        )
        kept.append(members[np.asarray(picked, dtype=np.int64).reshape(-1)])
    keep = np.concatenate(kept)
    return keep[np.argsort(-scores[keep], kind="stable")]


def postprocess_host(
    raw: np.ndarray,
    original_sizes: np.ndarray,
    thresholds: list[Thresholds],
    size: Size = INPUT_SHAPE,
    images: np.ndarray | None = None,
    colors: BoxColors | None = None,
) -> HostDetections:
    """A batch of YOLO head outputs -> final detections in original pixels, on the CPU.

    :func:`camdet.steps.postprocess.detections.postprocess_flat` without torch, with the
    same results (see the module's docstring).

    Args:
        raw: ``[B, 4 + nc, N]`` head output (float16 or float32), boxes in input pixels.
        original_sizes: ``[B, 2]`` integer (height, width) of each original frame, pixels;
            a 0 x 0 frame (a placeholder) gets no detections.
        thresholds: One setting per frame (requests in a batch may differ).
        size: Detector input ``(height, width)`` in pixels (``CAMDET_INPUT_SIZE``).
        images: ``[B, 3, H, W]`` the detector's letterboxed input in ``[0, 1]``, for the
            boxes' colours; or None (no colours).
        colors: The colour sampler to use (one per caller keeps its session); None: a
            new one.

    Returns:
        The batch's detections, frame after frame.

    Raises:
        ValueError: If shapes disagree or the head has no class rows.
    """
    batch, rows, _ = raw.shape
    if rows < 5:
        raise ValueError(f"head output must have 4 + nc >= 5 rows, got {rows}")
    if images is not None and images.shape[0] != batch:
        raise ValueError(f"batch of {batch} with {images.shape[0]} images")
    sizes = np.asarray(original_sizes).reshape(-1, 2)
    if sizes.shape[0] != batch or len(thresholds) != batch:
        raise ValueError(
            f"batch of {batch} with {sizes.shape[0]} sizes and {len(thresholds)} thresholds"
        )
    confidence = np.array([t.confidence for t in thresholds], dtype=np.float32)
    confidence[~(sizes > 0).all(axis=1)] = np.inf
    frame_iou = np.array([t.iou for t in thresholds])
    max_det = np.array([t.max_detections for t in thresholds])

    frame_index, boxes, scores, class_ids = _candidates(raw, confidence)
    groups = frame_index * (rows - 4) + class_ids
    keep = _nms(groups, boxes, scores, frame_iou[frame_index], sorted(set(frame_iou.tolist())))
    keep = keep[np.argsort(frame_index[keep], kind="stable")]
    keep = keep[_rank_within_frame(frame_index[keep]) < max_det[frame_index[keep]]]

    frame_index = frame_index[keep]
    box_colors = None
    if images is not None:
        box_colors = (colors or BoxColors())(images, frame_index, boxes[keep])
    original = scale_boxes_to_original(boxes[keep], sizes[frame_index], size)
    counts = np.bincount(frame_index, minlength=batch).tolist()
    return HostDetections(original, scores[keep], class_ids[keep], counts, box_colors)
