"""Object outlines as polygons: class shapes, poses, areas, boxes and clipping to the frame.

All coordinates are frame pixels, pixel-edge convention (see :mod:`camdet.scenes`).
"""

from __future__ import annotations

import math

import numpy as np

from camdet.scenes.frame import (
    BOX,
    CLASSES,
    DISC,
    MAX_SIZE_DIVISOR,
    MIN_SIZE_DIVISOR,
    STAR,
    TRIANGLE,
)

_ROTATING = frozenset({TRIANGLE, STAR})

_ASPECT_LIMITS = {DISC: 1.5, BOX: 2.5, TRIANGLE: 1.6, STAR: 1.35}  # max width/height stretch


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def size_range(width: int, height: int) -> tuple[float, float]:
    """Smallest and largest object size for a frame.

    Args:
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        ``(min, max)`` longer box side in pixels.
    """
    short_side = min(width, height)
    return short_side / MIN_SIZE_DIVISOR, short_side / MAX_SIZE_DIVISOR


def letterboxed_size(width: int, height: int) -> tuple[int, int]:
    """Size a camera frame shrinks to inside the detector's letterboxed input.

    Rendering a scene directly at this size is the cheap way to make training data: since
    object sizes scale with the frame's short side, it matches the camera-size frame
    letterboxed down (a 1920x1080 camera renders at 640x360, ~9x faster).

    Args:
        width: Camera frame width in pixels.
        height: Camera frame height in pixels.

    Returns:
        ``(width, height)`` in detector input pixels, as :mod:`camdet.geometry` computes it.
    """
    # Imported here because camdet.geometry pulls in torch, which the CLI need not load.
    from camdet.geometry import letterbox_params

    params = letterbox_params(height, width)
    return params.new_width, params.new_height


def _disc_vertex_count(radius: float) -> int:
    # Enough vertices that the polygon strays < 0.2 px from the true ellipse; a multiple
    # of 4 so the extreme points are vertices and the box is the ellipse's own box.
    step = math.acos(max(1.0 - 0.2 / max(radius, 1.0), -1.0))
    return max(24, 4 * math.ceil(math.pi / step / 4))


def unit_shape(rng: np.random.Generator, class_id: int, aspect: float, size: float) -> np.ndarray:
    """Build a class's shape around the origin, stretched to a width/height ratio.

    Args:
        rng: Random source (star inner radius).
        class_id: Index into :data:`CLASSES`.
        aspect: Width/height stretch factor (> 0).
        size: Approximate size in pixels the shape will be drawn at (disc smoothness).

    Returns:
        ``[K, 2]`` float64 vertices, of order 1 in magnitude, counter-clockwise in image
        coordinates.

    Raises:
        ValueError: If ``class_id`` is not a class index.
    """
    if class_id == DISC:
        count = _disc_vertex_count(size / 2 * max(aspect, 1 / aspect))
        theta = np.arange(count) * (2 * math.pi / count)
        points = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    elif class_id == BOX:
        points = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    elif class_id == TRIANGLE:
        theta = -math.pi / 2 + np.arange(3) * (2 * math.pi / 3)
        points = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    elif class_id == STAR:
        radii = np.tile([1.0, rng.uniform(0.36, 0.46)], 5)
        theta = -math.pi / 2 + np.arange(10) * (math.pi / 5)
        points = np.stack([radii * np.cos(theta), radii * np.sin(theta)], axis=1)
    else:
        raise ValueError(f"class_id must be in [0, {len(CLASSES)}), got {class_id}")
    return points * np.array([math.sqrt(aspect), 1.0 / math.sqrt(aspect)])


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate points about the origin.

    Args:
        points: ``[K, 2]`` ``(x, y)`` points.
        angle: Rotation in radians (clockwise on screen, since y points down).

    Returns:
        ``[K, 2]`` rotated points.
    """
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def fit_scale(points: np.ndarray, size: float) -> float:
    """Scale factor that makes the longer side of the points' box equal ``size``.

    Args:
        points: ``[K, 2]`` points.
        size: Wanted longer box side in pixels.

    Returns:
        The factor to multiply ``points`` by.
    """
    extent = points.max(axis=0) - points.min(axis=0)
    return size / float(extent.max())


def polygon_box(polygon: np.ndarray) -> np.ndarray:
    """Tight box of a polygon.

    Args:
        polygon: ``[K, 2]`` vertices in pixels.

    Returns:
        ``[4]`` float64 ``x1, y1, x2, y2``.
    """
    return np.concatenate([polygon.min(axis=0), polygon.max(axis=0)])


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula).

    Args:
        polygon: ``[K, 2]`` vertices in pixels.

    Returns:
        The area in square pixels.
    """
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_polygon(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip a polygon to the frame (Sutherland-Hodgman; fine for concave polygons too).

    Args:
        polygon: ``[K, 2]`` vertices in pixels.
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        ``[M, 2]`` vertices of the part inside ``[0, width] x [0, height]`` (M may be 0).
    """
    for axis, limit, sign in ((0, 0.0, 1.0), (0, width, -1.0), (1, 0.0, 1.0), (1, height, -1.0)):
        if len(polygon) == 0:
            break
        inside = sign * (polygon[:, axis] - limit) >= 0
        previous = np.roll(polygon, 1, axis=0)
        crosses = inside != np.roll(inside, 1)
        # Edges parallel to the clip line give inf/nan here, but they never cross it.
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (limit - previous[:, axis]) / (polygon[:, axis] - previous[:, axis])
            crossing = previous + t[:, None] * (polygon - previous)
        # Each vertex emits the edge's crossing point (if any), then itself (if inside).
        candidates = np.stack([crossing, polygon], axis=1).reshape(-1, 2)
        polygon = candidates[np.stack([crosses, inside], axis=1).ravel()]
    return polygon


def in_frame_fraction(polygon: np.ndarray, width: int, height: int) -> float:
    """Share of a polygon's area inside the frame.

    Args:
        polygon: ``[K, 2]`` vertices in pixels.
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        A value in ``[0, 1]``.
    """
    x1, y1, x2, y2 = polygon_box(polygon)
    if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
        return 1.0
    clipped = clip_polygon(polygon, width, height)
    return polygon_area(clipped) / polygon_area(polygon) if len(clipped) >= 3 else 0.0


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip boxes to the frame.

    Args:
        boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in pixels.
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        ``[N, 4]`` float32 boxes inside ``[0, width] x [0, height]``.
    """
    limits = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(boxes, 0.0, limits).astype(np.float32)
