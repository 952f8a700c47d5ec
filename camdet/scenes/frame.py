"""What a scene is made of: the classes, the visibility rules, and a frame's ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES: tuple[str, ...] = ("disc", "box", "triangle", "star")
"""Object classes, indexed by ``class_id``. Their shapes differ in corner count and
convexity: ellipse, axis-aligned rectangle, rotated triangle, rotated five-pointed star."""

DISC, BOX, TRIANGLE, STAR = range(len(CLASSES))

CATEGORY_ID_OFFSET: int = 1
"""COCO ``category_id`` minus ``class_id`` (COCO ids start at 1, 0 means background)."""

MAX_OBJECTS: int = 12
"""Most objects in one random frame; the count is uniform in ``[0, MAX_OBJECTS]``."""

MIN_SIZE_DIVISOR: float = 30.0
"""Smallest object: longer box side = short frame side / this (24 px at 720p)."""

MAX_SIZE_DIVISOR: float = 3.0
"""Largest object: longer box side = short frame side / this (240 px at 720p)."""

MIN_IN_FRAME_FRACTION: float = 0.5
"""Truncation rule: share of an object's area that must lie inside the frame."""

MIN_UNOCCLUDED_FRACTION: float = 0.6
"""Occlusion rule: share of an object's in-frame pixels that objects in front may not hide."""

MIN_COLOR_DISTANCE: float = 80.0
"""Euclidean RGB distance, in the output image before noise, between an object and the
mean of what lies under it and the objects it touches. Static frames always reach it;
sequences, whose objects must stand out anywhere they move, get the best of many tries
(rarely under 60)."""


@dataclass(frozen=True)
class HiddenObjects:
    """Objects drawn in a frame but too hidden by occluders to be labelled (not scored).

    Only scenes with occluders (:mod:`camdet.scenes.events`) have them; they are the MOT
    rows with ``conf`` 0, which evaluation ignores.

    Attributes:
        boxes: ``[M, 4]`` float32 ``x1, y1, x2, y2`` in frame pixels: the box clipped to the
            frame and to the occluders as a labelled box is (unchanged where nothing shows).
        class_ids: ``[M]`` int64 indices into :data:`CLASSES`.
        track_ids: ``[M]`` int64 identities (see :attr:`Frame.track_ids`).
        visibility: ``[M]`` float32 share of each object's in-frame area no occluder
            hides, below what the label rule needs.
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray
    visibility: np.ndarray


@dataclass
class Frame:
    """One rendered camera frame and its exact ground truth.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB image.
        boxes: ``[N, 4]`` float32 ``x1, y1, x2, y2`` in pixels of this frame, pixel-edge
            convention (``x2``/``y2`` exclusive), clipped to the frame; draw order.
        class_ids: ``[N]`` int64 indices into :data:`CLASSES`.
        track_ids: ``[N]`` int64 identity of each object: its index in the
            :class:`SceneSequence`, or its draw index for :func:`render_frame`.
        polygons: ``N`` float64 ``[K, 2]`` arrays, the drawn shapes as ``(x, y)`` vertices
            in the same coordinates as ``boxes`` (not clipped to the frame).
        visibility: ``[N]`` float32 share of each object's in-frame area that no occluder
            hides, or None where the scene has no occluders (all 1).
        hidden: Objects drawn behind occluders but not labelled, or None where the scene
            has no occluders.
        occluders: ``[K, 4]`` float32 ``x1, y1, x2, y2`` of the occluders drawn over the
            objects, in frame pixels (regions where nothing is scored), or None.
    """

    image: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None = None
    polygons: tuple[np.ndarray, ...] = ()
    visibility: np.ndarray | None = None
    hidden: HiddenObjects | None = None
    occluders: np.ndarray | None = None


@dataclass(frozen=True)
class SceneObject:
    """One drawn object.

    Attributes:
        class_id: Index into :data:`CLASSES`.
        polygon: ``[K, 2]`` float64 vertices in frame pixels (pixel-edge convention).
        color: Scene RGB colour, 0-255, before the camera's light falloff and tone curve.
        track_id: Identity of the object (see :attr:`Frame.track_ids`).
    """

    class_id: int
    polygon: np.ndarray
    color: tuple[int, int, int]
    track_id: int


def _check_size(width: int, height: int) -> None:
    if width < 32 or height < 32:
        raise ValueError(f"frame size must be at least 32x32, got {width}x{height}")
