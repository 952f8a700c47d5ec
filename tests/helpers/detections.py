"""Comparing two frames' detections box by box."""

from __future__ import annotations

import numpy as np
from camdet.perf.pipelines import FrameDetections


def assert_same_detections(a: FrameDetections, b: FrameDetections, tolerance_px: float) -> None:
    """Same count and classes; every box of ``a`` has its own box in ``b`` within tolerance."""
    assert len(a) == len(b), (a.class_ids, b.class_ids)
    assert sorted(a.class_ids.tolist()) == sorted(b.class_ids.tolist())
    unused = list(range(len(b)))
    for box, class_id in zip(a.boxes, a.class_ids, strict=True):
        distance = [
            np.abs(b.boxes[j] - box).max() if b.class_ids[j] == class_id else np.inf for j in unused
        ]
        best = int(np.argmin(distance))
        assert distance[best] <= tolerance_px, (box, b.boxes)
        unused.pop(best)
