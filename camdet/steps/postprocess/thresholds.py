"""The postprocess's settings: per-frame thresholds and the constants both paths share.

Torch-free, so that the CPU path (:mod:`camdet.steps.postprocess.host`) and the request
checks import it without the torch path (:mod:`camdet.steps.postprocess.detections`).
"""

from __future__ import annotations

from dataclasses import dataclass

from camdet.steps.parameters import MAX_DETECTIONS_LIMIT, check_number

DEFAULT_CONFIDENCE: float = 0.25
DEFAULT_IOU: float = 0.7
DEFAULT_MAX_DETECTIONS: int = 300
MAX_NMS_CANDIDATES: int = MAX_DETECTIONS_LIMIT
"""Per-frame cap on boxes entering NMS (ultralytics' ``max_nms``), bounding NMS time."""
COLOR_REGION: float = 0.5
"""Share of a box's width and height, around its centre, that the box colours average:
mostly the object itself even for a star or a person, little of the background."""
COLOR_SAMPLES: int = 8
"""Bilinear samples per side of that region (64 in all)."""


@dataclass(frozen=True)
class Thresholds:
    """Filtering settings of one frame.

    Attributes:
        confidence: Minimum class score, exclusive, in [0, 1).
        iou: IoU above which a lower-scored box of the same class is suppressed, in (0, 1].
        max_detections: Most detections kept for the frame, in [0, 30000].

    Raises:
        camdet.steps.parameters.RequestParameterError: (a ``ValueError``) for a value
            of the wrong type or out of range, as for a request parameter.
    """

    confidence: float = DEFAULT_CONFIDENCE
    iou: float = DEFAULT_IOU
    max_detections: int = DEFAULT_MAX_DETECTIONS

    def __post_init__(self) -> None:
        # The request parameters' own checks, so no setting can reach the batch-wide
        # arrays of either path (an int64 overflow there fails every frame of the batch).
        check_number("confidence_threshold", self.confidence)
        check_number("iou_threshold", self.iou)
        check_number("max_detections", self.max_detections)
