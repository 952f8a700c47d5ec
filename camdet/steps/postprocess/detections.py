"""YOLO head decoding, class-aware NMS and mapping back to original pixels, in torch.

Everything here is plain torch on whatever device the inputs live: the Triton
``postprocess`` model runs it on the GPU, and a whole batch goes through one
``torchvision.ops.nms`` call. On a CPU the model runs the torch-free twin of this module,
:mod:`camdet.steps.postprocess.host` (OpenCV's NMS, ONNX Runtime's RoiAlign), which gives
the same detections (``tests/test_postprocess_host.py``) without installing torch.

Each detection also gets the mean colour of its box's centre, read from the letterboxed
input (:func:`box_colors`): the appearance cue the per-camera tracker uses to tell objects
apart when motion alone cannot (an object coming out from behind an occluder).

The head layout is ultralytics' YOLOv8/YOLO11 export: ``[B, 4 + nc, N]`` with rows
cx, cy, w, h in letterboxed input pixels, then one score per class (already sigmoid).
Semantics follow ultralytics' ``non_max_suppression`` with ``agnostic=False`` and
``multi_label=False``: each anchor keeps its best class, scores must exceed the
confidence threshold, NMS is per class, at most ``max_detections`` per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import nms, roi_align

from camdet.contract import FrameDetections
from camdet.geometry import INPUT_SHAPE, Size, scale_boxes_to_original
from camdet.steps.postprocess.host import HostDetections
from camdet.steps.postprocess.thresholds import (
    COLOR_REGION,
    COLOR_SAMPLES,
    DEFAULT_CONFIDENCE,
    DEFAULT_IOU,
    DEFAULT_MAX_DETECTIONS,
    MAX_NMS_CANDIDATES,
    Thresholds,
)

__all__ = [
    "COLOR_REGION",
    "COLOR_SAMPLES",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_IOU",
    "DEFAULT_MAX_DETECTIONS",
    "MAX_NMS_CANDIDATES",
    "BatchDetections",
    "Detections",
    "Thresholds",
    "box_colors",
    "postprocess",
    "postprocess_batch",
    "postprocess_flat",
    "postprocess_to_host",
    "xywh_to_xyxy",
]


@dataclass(frozen=True)
class Detections:
    """Final detections of one frame.

    Attributes:
        boxes: ``[n, 4]`` float32 xyxy in original frame pixels, clipped to the frame.
        scores: ``[n]`` float32 class scores, descending.
        class_ids: ``[n]`` int64 class indices.
        colors: ``[n, 3]`` float32 mean RGB in ``[0, 1]`` of each box's centre
            (:func:`box_colors`), or None when the input images were not given.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor
    colors: torch.Tensor | None = None

    def numpy(self) -> FrameDetections:
        """The same detections as numpy arrays on the host."""
        return FrameDetections(
            self.boxes.cpu().numpy(),
            self.scores.cpu().numpy(),
            self.class_ids.cpu().numpy().astype(np.int64),
            None if self.colors is None else self.colors.cpu().numpy(),
        )


def box_colors(
    images: torch.Tensor, frame_index: torch.Tensor, boxes: torch.Tensor
) -> torch.Tensor:
    """Mean colour of the central part of each box, an appearance cue for tracking.

    ``torchvision.ops.roi_align`` with one output cell averages
    :data:`COLOR_SAMPLES` squared bilinear samples of the central :data:`COLOR_REGION` of
    each box, on the images' device and in their dtype (no float32 copy of the batch).

    Args:
        images: ``[B, 3, H, W]`` letterboxed detector input, RGB in ``[0, 1]``.
        frame_index: ``[M]`` integer frame of each box in ``images``.
        boxes: ``[M, 4]`` xyxy in the same letterboxed input pixels.

    Returns:
        ``[M, 3]`` float32 mean RGB in ``[0, 1]``.
    """
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (COLOR_REGION / 2)
    rois = torch.cat((frame_index[:, None].to(boxes.dtype), centres - half, centres + half), 1)
    rois = rois.to(images.device, images.dtype)
    mean = roi_align(images, rois, 1, spatial_scale=1.0, sampling_ratio=COLOR_SAMPLES, aligned=True)
    return mean.reshape(-1, 3).float()


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Convert center/size boxes to corner boxes.

    Args:
        boxes: ``[..., 4]`` (cx, cy, w, h).

    Returns:
        ``[..., 4]`` (x1, y1, x2, y2) in the same units.
    """
    center, half = boxes[..., :2], boxes[..., 2:] / 2
    return torch.cat((center - half, center + half), dim=-1)


def _candidates(
    raw: torch.Tensor, confidence: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick each anchor's best class and keep anchors above their frame's threshold.

    Args:
        raw: ``[B, 4 + nc, N]`` head output.
        confidence: ``[B]`` float32 per-frame confidence thresholds.

    Returns:
        ``(frame_index [M], boxes [M, 4] xyxy input px float32, scores [M], class_ids [M])``.
    """
    pred = raw.transpose(1, 2)
    scores, class_ids = pred[..., 4:].max(dim=-1)
    keep = scores.float() > confidence[:, None]
    frame_index, anchor = keep.nonzero(as_tuple=True)
    scores = scores[frame_index, anchor].float()
    if scores.numel() > MAX_NMS_CANDIDATES:
        frame_index, anchor, scores = _cap_per_frame(frame_index, anchor, scores)
    boxes = xywh_to_xyxy(pred[frame_index, anchor, :4].float())
    return frame_index, boxes, scores, class_ids[frame_index, anchor]


def _cap_per_frame(
    frame_index: torch.Tensor, anchor: torch.Tensor, scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep each frame's ``MAX_NMS_CANDIDATES`` best-scored candidates."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(frame_index[order], stable=True)]
    rank = _rank_within_frame(frame_index[order])
    order = order[rank < MAX_NMS_CANDIDATES]
    return frame_index[order], anchor[order], scores[order]


def _rank_within_frame(sorted_frame_index: torch.Tensor) -> torch.Tensor:
    """Position of each element inside its frame's run, for a frame-sorted index."""
    n = sorted_frame_index.numel()
    positions = torch.arange(n, device=sorted_frame_index.device)
    is_start = torch.ones(n, dtype=torch.bool, device=sorted_frame_index.device)
    is_start[1:] = sorted_frame_index[1:] != sorted_frame_index[:-1]
    run_start = torch.cummax(torch.where(is_start, positions, 0), dim=0).values
    return positions - run_start


def _nms(
    frame_index: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_ids: torch.Tensor,
    num_classes: int,
    iou: torch.Tensor,
    iou_values: list[float],
) -> torch.Tensor:
    """Class-aware NMS of a whole batch: one ``nms`` kernel per distinct IoU threshold.

    Each (frame, class) group is moved to its own region of the plane by an offset larger
    than any box, so one plain NMS never compares boxes of different groups -
    ``torchvision.ops.batched_nms``' coordinate trick. torchvision takes that path only
    above 20,000 boxes on CUDA and otherwise launches one NMS per group (256 launches for
    64 frames of 4 classes, most of the postprocess time on the GPU). The offsets are
    added in float64 so that a batch of many frames and classes keeps sub-pixel boxes.

    Args:
        frame_index: ``[M]`` frame of each candidate.
        boxes: ``[M, 4]`` xyxy candidates, input pixels.
        scores: ``[M]`` scores.
        class_ids: ``[M]`` class of each candidate.
        num_classes: Classes of the head.
        iou: ``[B]`` per-frame IoU thresholds (on the candidates' device).
        iou_values: The distinct values of ``iou``, known on the host (no device sync).

    Returns:
        Indices of kept candidates, sorted by descending score.
    """
    if boxes.numel() == 0:
        return frame_index.new_zeros(0)
    groups = (frame_index * num_classes + class_ids).to(torch.float64)
    spread = boxes.to(torch.float64)
    spread = spread + (groups * (spread.max() - spread.min() + 1))[:, None]
    if len(iou_values) == 1:
        keep = nms(spread, scores.to(torch.float64), iou_values[0])
    else:
        candidate_iou = iou[frame_index]
        kept = []
        for value in iou_values:
            members = (candidate_iou == value).nonzero(as_tuple=True)[0]
            kept.append(members[nms(spread[members], scores[members].double(), value)])
        keep = torch.cat(kept)
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


def postprocess(
    raw: torch.Tensor,
    original_sizes: torch.Tensor,
    conf_threshold: float = DEFAULT_CONFIDENCE,
    iou_threshold: float = DEFAULT_IOU,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    size: Size = INPUT_SHAPE,
    images: torch.Tensor | None = None,
) -> list[Detections]:
    """Turn a batch of YOLO head outputs into per-frame detections, one setting for all.

    Args:
        raw: ``[B, 4 + nc, N]`` head output (float16 or float32), boxes in input pixels.
        original_sizes: ``[B, 2]`` integer (height, width) of each original frame, pixels.
        conf_threshold: Minimum class score, exclusive.
        iou_threshold: NMS IoU threshold.
        max_detections: Most detections per frame.
        size: Detector input ``(height, width)`` in pixels (``CAMDET_INPUT_SIZE``).
        images: ``[B, 3, H, W]`` the detector's input, for the boxes' colours; or None.

    Returns:
        One :class:`Detections` per frame, on ``raw``'s device.
    """
    thresholds = Thresholds(conf_threshold, iou_threshold, max_detections)
    return postprocess_flat(raw, original_sizes, [thresholds] * raw.shape[0], size, images).frames()


@dataclass(frozen=True)
class BatchDetections:
    """Final detections of a whole batch, frame after frame in flat tensors.

    Attributes:
        boxes: ``[M, 4]`` float32 xyxy in original frame pixels.
        scores: ``[M]`` float32, descending within each frame.
        class_ids: ``[M]`` int64.
        counts: Detections per frame (sums to M).
        colors: ``[M, 3]`` float32 mean RGB of each box's centre, or None.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor
    counts: list[int]
    colors: torch.Tensor | None = None

    def frames(self) -> list[Detections]:
        """Split into one :class:`Detections` per frame (views, no copies)."""
        parts = [t.split(self.counts) for t in (self.boxes, self.scores, self.class_ids)]
        colors = (
            self.colors.split(self.counts) if self.colors is not None else [None] * len(parts[0])
        )
        return [Detections(*row) for row in zip(*parts, colors, strict=True)]


def postprocess_batch(
    raw: torch.Tensor,
    original_sizes: torch.Tensor,
    thresholds: list[Thresholds],
    size: Size = INPUT_SHAPE,
) -> list[Detections]:
    """Turn a batch of YOLO head outputs into per-frame detections in original pixels.

    Args:
        raw: ``[B, 4 + nc, N]`` head output (float16 or float32), boxes in input pixels.
        original_sizes: ``[B, 2]`` integer (height, width) of each original frame, pixels.
        thresholds: One setting per frame (requests in a batch may differ).
        size: Detector input ``(height, width)`` in pixels (``CAMDET_INPUT_SIZE``).

    Returns:
        One :class:`Detections` per frame, on ``raw``'s device.
    """
    return postprocess_flat(raw, original_sizes, thresholds, size).frames()


def postprocess_flat(
    raw: torch.Tensor,
    original_sizes: torch.Tensor,
    thresholds: list[Thresholds],
    size: Size = INPUT_SHAPE,
    images: torch.Tensor | None = None,
) -> BatchDetections:
    """Like :func:`postprocess_batch`, but the detections stay in flat batch tensors.

    ``images`` (``[B, 3, H, W]``, the detector's letterboxed input) adds the boxes'
    colours (:func:`box_colors`).

    Raises:
        ValueError: If shapes disagree or the head has no class rows.
    """
    kept = _kept(raw, original_sizes, thresholds, size, images)
    # Boolean indexing and the counts' list each wait for the GPU; fine off the served path.
    keep = kept.within
    counts = torch.bincount(kept.frame_index[keep], minlength=raw.shape[0]).tolist()
    colors = None if kept.colors is None else kept.colors[keep]
    return BatchDetections(
        kept.boxes[keep], kept.scores[keep], kept.class_ids[keep], counts, colors
    )


def postprocess_to_host(
    raw: torch.Tensor,
    original_sizes: torch.Tensor,
    thresholds: list[Thresholds],
    images: torch.Tensor,
    size: Size = INPUT_SHAPE,
) -> HostDetections:
    """:func:`postprocess_flat`'s detections, brought to the host in one copy.

    The served path: NMS's survivors go to the host in one copy, with each one's frame
    and whether it is within its frame's ``max_detections``, and the host drops the rest
    and counts per frame. Each step that waits for the GPU waits for this process's
    turn there, so this waits twice per batch (the candidates, NMS) plus the copy, where
    :func:`postprocess_flat` then waits twice more (a boolean index, the counts).

    Args:
        raw: ``[B, 4 + nc, N]`` head output, boxes in input pixels.
        original_sizes: ``[B, 2]`` integer (height, width) of each original frame, pixels.
        thresholds: One setting per frame.
        images: ``[B, 3, H, W]`` the detector's input, for the boxes' colours.
        size: Detector input ``(height, width)`` in pixels.

    Returns:
        The batch's detections as numpy arrays (the same values as
        :func:`postprocess_flat`'s, colours included).
    """
    kept = _kept(raw, original_sizes, thresholds, size, images)
    columns = (
        kept.boxes,
        kept.scores[:, None],
        kept.class_ids[:, None].float(),
        kept.colors,
        kept.frame_index[:, None].float(),
        kept.within[:, None].float(),
    )
    flat = torch.cat(columns, dim=1).cpu().numpy()  # float32 holds ids and frames exactly
    flat = flat[flat[:, 10] > 0]
    frame_index = flat[:, 9].astype(np.int64)
    return HostDetections(
        boxes=np.ascontiguousarray(flat[:, :4]),
        scores=np.ascontiguousarray(flat[:, 4]),
        class_ids=flat[:, 5].astype(np.int64),
        counts=np.bincount(frame_index, minlength=raw.shape[0]).tolist(),
        colors=np.ascontiguousarray(flat[:, 6:9]),
    )


@dataclass(frozen=True)
class _Kept:
    """NMS's survivors of a batch, frame after frame, on the device.

    Attributes:
        frame_index: ``[K]`` frame of each.
        boxes: ``[K, 4]`` float32 xyxy in original frame pixels.
        scores: ``[K]`` float32, descending within each frame.
        class_ids: ``[K]`` int64.
        within: ``[K]`` bool: within its frame's ``max_detections`` (the final ones).
        colors: ``[K, 3]`` float32 mean RGB of each box's centre, or None.
    """

    frame_index: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor
    within: torch.Tensor
    colors: torch.Tensor | None


def _kept(
    raw: torch.Tensor,
    original_sizes: torch.Tensor,
    thresholds: list[Thresholds],
    size: Size,
    images: torch.Tensor | None,
) -> _Kept:
    """Candidates, class-aware NMS, the top ``max_detections`` marked, boxes rescaled.

    Raises:
        ValueError: If shapes disagree or the head has no class rows.
    """
    batch, rows, _ = raw.shape
    if rows < 5:
        raise ValueError(f"head output must have 4 + nc >= 5 rows, got {rows}")
    if images is not None and images.shape[0] != batch:
        raise ValueError(f"batch of {batch} with {images.shape[0]} images")
    if original_sizes.shape[0] != batch or len(thresholds) != batch:
        raise ValueError(
            f"batch of {batch} with {original_sizes.shape[0]} sizes "
            f"and {len(thresholds)} thresholds"
        )
    device = raw.device
    confidence = torch.tensor([t.confidence for t in thresholds], device=device)
    # A frame of size 0 x 0 is a placeholder (a video decoder that has no frame yet):
    # it gets no detections rather than boxes divided by a zero size.
    has_pixels = (original_sizes.to(device).reshape(batch, 2) > 0).all(dim=1)
    confidence = torch.where(has_pixels, confidence, torch.inf)
    iou = torch.tensor([t.iou for t in thresholds], device=device)
    max_det = torch.tensor([t.max_detections for t in thresholds], device=device)

    frame_index, boxes, scores, class_ids = _candidates(raw, confidence)
    iou_values = sorted({t.iou for t in thresholds})
    keep = _nms(frame_index, boxes, scores, class_ids, rows - 4, iou, iou_values)
    keep = keep[torch.argsort(frame_index[keep], stable=True)]
    frame_index = frame_index[keep]
    within = _rank_within_frame(frame_index) < max_det[frame_index]
    colors = None if images is None else box_colors(images, frame_index, boxes[keep])
    sizes = original_sizes.to(device).reshape(batch, 2)[frame_index]
    boxes = scale_boxes_to_original(boxes[keep], sizes, size)
    return _Kept(frame_index, boxes, scores[keep], class_ids[keep], within, colors)
