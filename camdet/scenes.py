"""Synthetic camera scenes with exact ground truth, for training and end-to-end tests.

No pretrained detector can be downloaded where camdet is built, so the project trains its
own small detector on these scenes and every end-to-end test checks boxes against their
truth. A scene is a textured, noisy background with clutter that is *not* any of the
:data:`CLASSES`, plus 0 to :data:`MAX_OBJECTS` filled shapes of the four classes, seen
through a simple camera model (illumination falloff, optical blur, sensor noise, levels /
gamma / colour cast, optional JPEG).

Conventions used everywhere in this module:

* Coordinates are in pixels of the frame, pixel-edge convention: pixel ``(col, row)``
  covers ``[col, col + 1) x [row, row + 1)``; a box ``(x1, y1, x2, y2)`` has exclusive
  right/bottom edges, so a 10 px wide object at x=5 has ``x1 = 5`` and ``x2 = 15``.
* Every shape is drawn as a polygon (discs as many-sided ones) with exact supersampled
  coverage anti-aliasing, and its ground-truth box is the tight box of that polygon,
  clipped to the frame. Occluded objects keep their full (amodal) box.
* Everything drawn that has a class shape is labelled; frames list objects in draw order,
  back to front.
* A labelled object has at least :data:`MIN_IN_FRAME_FRACTION` of its area inside the frame
  and at least :data:`MIN_UNOCCLUDED_FRACTION` of that in-frame part not hidden by objects
  drawn over it. Static frames resample placements that break this; sequences hide an
  object for the frames in which it breaks it.
* Object colours are random but keep :data:`MIN_COLOR_DISTANCE` from what lies under them
  in the output image, so no labelled object is invisible.
* COCO category ids are class indices + 1 (:func:`class_id_to_category_id`); COCO image
  ids are the frame's position in the list + 1.

Object sizes scale with the short side of the frame, so a frame rendered directly at the
detector's input scale (e.g. 640x360 for a 1280x720 camera) has the same statistics as the
camera-size frame letterboxed down, at a fraction of the cost (:func:`letterboxed_size`).
Light falloff and the tone curve are applied where colours are made (:class:`Exposure`), so
only blur and noise pass over every pixel: about 25 ms for a 1920x1080 frame on one core.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import av

logger = logging.getLogger(__name__)

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

SUPERSAMPLE: int = 4
"""Sub-pixels per pixel side when rasterising shapes, for exact coverage anti-aliasing."""

_SHIFT = 8  # fractional bits of the fixed-point vertices given to cv2.fillPoly
_BG_DOWNSCALE = 4  # background texture resolution divisor (texture grain of ~4 px)
_PLACEMENT_ATTEMPTS = 30
_COLOR_CANDIDATES = 256
_TRUNCATION_PROBABILITY = 0.2  # share of static-frame objects allowed to cross the border
_BOUNCE_MARGIN = 0.4  # moving centres stay >= this many half-extents inside the frame
_ROTATING = frozenset({TRIANGLE, STAR})
_ASPECT_LIMITS = {DISC: 1.5, BOX: 2.5, TRIANGLE: 1.6, STAR: 1.35}  # max width/height stretch

# Quantiles of the standard normal at the centres of 256 equal-probability bins: a uniform
# random byte looked up here is a Gaussian sample, which is ~10x cheaper than drawing one.
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])


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
    """

    image: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None = None
    polygons: tuple[np.ndarray, ...] = ()


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


@dataclass(frozen=True)
class Raster:
    """Anti-aliased coverage of one polygon over the part of the frame it touches.

    Attributes:
        x0: Column of the crop's left edge in frame pixels.
        y0: Row of the crop's top edge in frame pixels.
        alpha: ``[h, w]`` uint8 share of each pixel the polygon covers, 0-255.
        in_frame_fraction: Share of the polygon's area inside the frame, in ``[0, 1]``.
    """

    x0: int
    y0: int
    alpha: np.ndarray
    in_frame_fraction: float

    @property
    def mask(self) -> np.ndarray:
        """``[h, w]`` bool, pixels at least half covered: the pixels the object owns."""
        return self.alpha >= 128

    @property
    def window(self) -> tuple[slice, slice]:
        """Row and column slices of the crop in the frame."""
        h, w = self.alpha.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


# --------------------------------------------------------------------------- geometry


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


# ------------------------------------------------------------------------ rasterising


def rasterize(polygon: np.ndarray, width: int, height: int) -> Raster | None:
    """Compute a polygon's anti-aliased coverage of the frame's pixels.

    Coverage is exact to 1/``SUPERSAMPLE`` px: the polygon is filled at ``SUPERSAMPLE``
    times the resolution and area-averaged down. cv2's own ``LINE_AA`` fill bleeds about
    0.7 px outwards on every side, which would bias every box by ~1.4 px (6 % of a 24 px
    object), so it is not used for shapes.

    Args:
        polygon: ``[K, 2]`` vertices in frame pixels (pixel-edge convention).
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        The coverage of the in-frame part of the polygon's box, or None if that part is
        empty.
    """
    x1, y1, x2, y2 = polygon_box(polygon)
    col0, row0 = max(math.floor(x1), 0), max(math.floor(y1), 0)
    col1, row1 = min(math.ceil(x2), width), min(math.ceil(y2), height)
    if col1 <= col0 or row1 <= row0:
        return None
    scale = SUPERSAMPLE
    # cv2 fills sub-pixels whose centres lie within half a sub-pixel of the polygon; its
    # integer coordinates are sub-pixel centres, hence the -0.5.
    local = (polygon - (col0, row0)) * scale - 0.5
    fixed = np.round(local * (1 << _SHIFT)).astype(np.int32)
    fine = np.zeros(((row1 - row0) * scale, (col1 - col0) * scale), dtype=np.uint8)
    cv2.fillPoly(fine, [fixed], 255, cv2.LINE_8, _SHIFT)
    alpha = cv2.resize(fine, (col1 - col0, row1 - row0), interpolation=cv2.INTER_AREA)
    return Raster(col0, row0, alpha, in_frame_fraction(polygon, width, height))


def blend(image: np.ndarray, raster: Raster, paint: np.ndarray | Sequence[int]) -> None:
    """Paint over an image with a raster's coverage as opacity, in place.

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        raster: Where and how much to paint.
        paint: ``[h, w, 3]`` uint8 colours over the raster's window, or one RGB colour.
    """
    window = image[raster.window]
    weight = raster.alpha.astype(np.float32) * (1.0 / 255.0)
    if not isinstance(paint, np.ndarray) or paint.ndim == 1:
        flat = np.empty_like(window)
        flat[:] = np.asarray(paint, dtype=np.uint8)
        paint = flat
    window[:] = cv2.blendLinear(paint, window, weight, 1.0 - weight)


def draw_shape(image: np.ndarray, polygon: np.ndarray, color: Sequence[int]) -> Raster | None:
    """Draw one filled, anti-aliased polygon onto an image, in place.

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        polygon: ``[K, 2]`` vertices in frame pixels (pixel-edge convention).
        color: RGB colour, 0-255.

    Returns:
        The polygon's coverage, or None if it misses the frame.
    """
    raster = rasterize(polygon, image.shape[1], image.shape[0])
    if raster is not None:
        blend(image, raster, color)
    return raster


# ------------------------------------------------------------------------- occupancy


class Occupancy:
    """Which object owns each pixel, to enforce the truncation and occlusion rules.

    Objects can be added on top of the others (static frames, painted back to front) or
    behind them (sequences, decided front to back).
    """

    def __init__(self, width: int, height: int) -> None:
        """Start with an empty frame.

        Args:
            width: Frame width in pixels.
            height: Frame height in pixels.
        """
        self.owner = np.full((height, width), -1, dtype=np.int16)
        self.in_frame_pixels: list[int] = []
        self.visible_pixels: list[int] = []

    def _covered_counts(self, raster: Raster) -> np.ndarray:
        below = self.owner[raster.window][raster.mask]
        counts = np.bincount(below + 1, minlength=len(self.in_frame_pixels) + 1)
        return counts[1:]

    def fits_on_top(self, raster: Raster) -> bool:
        """Whether the object may be drawn over all objects added so far.

        Args:
            raster: Coverage of the new object.

        Returns:
            True if the new object is inside the frame enough and no object under it would
            be hidden too much.
        """
        if raster.in_frame_fraction < MIN_IN_FRAME_FRACTION:
            return False
        if not self.in_frame_pixels:
            return True
        left = np.asarray(self.visible_pixels) - self._covered_counts(raster)
        return bool(np.all(left >= MIN_UNOCCLUDED_FRACTION * np.asarray(self.in_frame_pixels)))

    def add_on_top(self, raster: Raster) -> None:
        """Record an object drawn over all objects added so far.

        Args:
            raster: Coverage of the new object.
        """
        mask = raster.mask
        if self.in_frame_pixels:
            self.visible_pixels = list(
                np.asarray(self.visible_pixels) - self._covered_counts(raster)
            )
        self.owner[raster.window][mask] = len(self.in_frame_pixels)
        count = int(mask.sum())
        self.in_frame_pixels.append(count)
        self.visible_pixels.append(count)

    def fits_behind(self, raster: Raster) -> bool:
        """Whether the object may be drawn under all objects added so far.

        Args:
            raster: Coverage of the new object.

        Returns:
            True if the new object is inside the frame enough and enough of it stays
            visible.
        """
        if raster.in_frame_fraction < MIN_IN_FRAME_FRACTION:
            return False
        mask = raster.mask
        free = np.count_nonzero(self.owner[raster.window][mask] < 0)
        return free >= MIN_UNOCCLUDED_FRACTION * np.count_nonzero(mask)

    def add_behind(self, raster: Raster) -> None:
        """Record an object drawn under all objects added so far.

        Args:
            raster: Coverage of the new object.
        """
        window = self.owner[raster.window]
        mask = raster.mask
        free = mask & (window < 0)
        window[free] = len(self.in_frame_pixels)
        self.in_frame_pixels.append(int(mask.sum()))
        self.visible_pixels.append(int(free.sum()))

    def owners_near(self, raster: Raster, margin: int = 2) -> np.ndarray:
        """Objects owning pixels in or just around a raster's box.

        Args:
            raster: Coverage of the new object.
            margin: Pixels around the box to include.

        Returns:
            ``[M]`` int indices of the objects, in add order.
        """
        rows, cols = raster.window
        height, width = self.owner.shape
        window = self.owner[
            max(rows.start - margin, 0) : min(rows.stop + margin, height),
            max(cols.start - margin, 0) : min(cols.stop + margin, width),
        ]
        ids = np.unique(window)
        return ids[ids >= 0]


# ---------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class CameraLook:
    """How a camera renders the scene: lighting, optics, sensor and image processing.

    Attributes:
        light: ``[9, 16]`` float32 light falloff (vignetting, uneven lighting) in
            ``[0.6, 1]``, stretched over the frame.
        blur_sigma: Gaussian blur of the optics in pixels (0 = sharp).
        noise_sigma: Standard deviation of the sensor noise in grey levels.
        gamma: Exponent of the tone curve.
        black: ``[3]`` output level of black per channel, in ``[0, 1]`` (colour cast).
        white: ``[3]`` output level of white per channel, in ``[0, 1]`` (colour cast).
    """

    light: np.ndarray
    blur_sigma: float
    noise_sigma: float
    gamma: float
    black: np.ndarray
    white: np.ndarray

    def tone_lut(self) -> np.ndarray:
        """Lookup table of the tone curve (levels, gamma, colour cast).

        The curve only compresses the range (black >= 0, white <= 1), so it never clips
        and never merges an object into its background.

        Returns:
            ``[256, 1, 3]`` uint8 table for ``cv2.LUT``.
        """
        x = (np.arange(256, dtype=np.float64) / 255.0) ** self.gamma
        curve = self.black[None, :] + (self.white - self.black)[None, :] * x[:, None]
        return np.round(curve * 255.0).astype(np.uint8).reshape(256, 1, 3)


def sample_camera_look(rng: np.random.Generator) -> CameraLook:
    """Draw random camera settings.

    Args:
        rng: Random source.

    Returns:
        The settings.
    """
    grid = rng.uniform(0.72, 1.0, size=(3, 4)).astype(np.float32)
    grid = cv2.resize(grid, (16, 9), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[-1:1:9j, -1:1:16j].astype(np.float32)
    vignette = 1.0 - rng.uniform(0.0, 0.3) * (xx**2 + yy**2) / 2
    black = rng.uniform(0.0, 0.12) + rng.uniform(-0.03, 0.03, size=3)
    white = rng.uniform(0.82, 1.0) + rng.uniform(-0.06, 0.06, size=3)
    return CameraLook(
        light=np.clip(grid * vignette, 0.6, 1.0),
        blur_sigma=float(rng.uniform(0.4, 1.0)) if rng.random() < 0.3 else 0.0,
        noise_sigma=float(rng.uniform(1.0, 8.0)),
        gamma=_log_uniform(rng, 0.7, 1.4),
        black=np.clip(black, 0.0, 0.2),
        white=np.clip(white, 0.75, 1.0),
    )


class Exposure:
    """A :class:`CameraLook` laid over one frame size: turns scene colours into output ones.

    Light falloff and the tone curve act pixel by pixel, so they are applied where colours
    are made (the low-resolution background, each object's paint, each stroke) instead of
    as extra passes over the whole frame: only blur and noise touch every pixel.
    """

    def __init__(self, look: CameraLook, width: int, height: int) -> None:
        """Prepare the look for a frame size.

        Args:
            look: Camera settings.
            width: Frame width in pixels.
            height: Frame height in pixels.
        """
        self.look, self.width, self.height = look, width, height
        self.lut = look.tone_lut()
        # Quantise the small grid, not the big map: the uint8 resize is 5x cheaper.
        grid = np.round(look.light * 255).astype(np.uint8)
        self.light = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
        """``[H, W]`` uint8 light falloff, 255 = full light."""

    def develop_layer(self, layer: np.ndarray) -> np.ndarray:
        """Light and tone-map a low-resolution planar layer spanning the frame.

        Args:
            layer: ``[3, h, w]`` float32 scene colours, 0-255 (modified in place).

        Returns:
            ``[h, w, 3]`` uint8 output colours.
        """
        light = cv2.resize(self.look.light, layer.shape[:0:-1], interpolation=cv2.INTER_LINEAR)
        layer *= light[None]
        np.clip(layer, 0, 255, out=layer)
        return cv2.LUT(cv2.merge(list(layer.astype(np.uint8))), self.lut)

    def develop_colors(self, colors: np.ndarray, x: float, y: float) -> np.ndarray:
        """Output colours of scene colours seen at one point of the frame.

        Args:
            colors: ``[M, 3]`` scene RGB colours, 0-255.
            x: Column of the point in frame pixels.
            y: Row of the point in frame pixels.

        Returns:
            ``[M, 3]`` int output RGB colours.
        """
        col = min(max(int(x), 0), self.width - 1)
        row = min(max(int(y), 0), self.height - 1)
        lit = np.round(np.asarray(colors, dtype=np.float64) * (self.light[row, col] / 255.0))
        return self.lut[:, 0, :][lit.astype(np.intp), np.arange(3)].astype(np.int64)

    def paint(self, color: Sequence[int], window: tuple[slice, slice]) -> np.ndarray:
        """Output colour of a flat scene colour over a window of the frame.

        Args:
            color: Scene RGB colour, 0-255.
            window: Row and column slices of the frame.

        Returns:
            ``[h, w, 3]`` uint8 output colours.
        """
        light = cv2.cvtColor(self.light[window], cv2.COLOR_GRAY2RGB)
        lit = cv2.multiply(light, (*(float(c) for c in color), 0.0), scale=1.0 / 255.0)
        return cv2.LUT(lit, self.lut)

    def draw(self, image: np.ndarray, raster: Raster, color: Sequence[int]) -> None:
        """Paint an object of a scene colour into the output image, in place.

        Args:
            image: ``[H, W, 3]`` uint8 RGB output image.
            raster: The object's coverage.
            color: Scene RGB colour, 0-255.
        """
        blend(image, raster, self.paint(color, raster.window))


def add_sensor_noise(
    image: np.ndarray, rng: np.random.Generator, sigma: float, offset: float = 0.0
) -> None:
    """Add Gaussian noise to an image, in place, saturating at 0 and 255.

    Uniform random bytes are mapped to signed Gaussian quantiles by two lookup tables
    (positive and negative part), which keeps everything in uint8 and costs ~1 ns a value.

    Args:
        image: ``[H, W, 3]`` uint8 image.
        rng: Random source.
        sigma: Standard deviation in grey levels.
        offset: Mean of the noise in grey levels (a global brightness change for free).
    """
    # Raw 64-bit draws viewed as bytes: 3x faster than Generator.bytes, same determinism.
    raw = rng.bit_generator.random_raw(-(-image.size // 8))
    uniform = raw.view(np.uint8)[: image.size].reshape(image.shape)
    values = np.round(_NORMAL_QUANTILES * sigma + offset)
    raise_lut = np.clip(values, 0, 255).astype(np.uint8)
    lower_lut = np.clip(-values, 0, 255).astype(np.uint8)
    cv2.add(image, cv2.LUT(uniform, raise_lut), dst=image)
    cv2.subtract(image, cv2.LUT(uniform, lower_lut), dst=image)


def apply_sensor(
    image: np.ndarray, look: CameraLook, rng: np.random.Generator, brightness: float = 0.0
) -> np.ndarray:
    """Blur of the optics, then sensor noise: the passes over every pixel of a frame.

    Args:
        image: ``[H, W, 3]`` uint8 RGB output image (modified in place).
        look: Camera settings.
        rng: Random source of the noise.
        brightness: Global brightness offset in grey levels (flicker).

    Returns:
        ``[H, W, 3]`` uint8 RGB camera image.
    """
    if look.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), look.blur_sigma)
    add_sensor_noise(image, rng, look.noise_sigma, brightness)
    return image


# ------------------------------------------------------------------------- colours


def pick_color(
    rng: np.random.Generator,
    avoid: np.ndarray,
    develop: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[int, int, int]:
    """Pick a random scene colour whose output colour stands out from given colours.

    Args:
        rng: Random source.
        avoid: ``[M, 3]`` output RGB colours to keep :data:`MIN_COLOR_DISTANCE` from (M
            may be 0).
        develop: Maps ``[K, 3]`` scene colours to output colours; identity if None.

    Returns:
        The first of ``_COLOR_CANDIDATES`` random colours far enough from all of
        ``avoid``, else the candidate farthest from its nearest one.
    """
    candidates = rng.integers(0, 256, size=(_COLOR_CANDIDATES, 3))
    if len(avoid) == 0:
        return _as_color(candidates[0])
    seen = develop(candidates) if develop is not None else candidates
    gaps = np.linalg.norm(seen[:, None, :] - np.asarray(avoid)[None, :, :], axis=2)
    nearest = gaps.min(axis=1)
    good = np.flatnonzero(nearest >= MIN_COLOR_DISTANCE)
    return _as_color(candidates[good[0] if len(good) else int(nearest.argmax())])


def _as_color(values: np.ndarray) -> tuple[int, int, int]:
    return int(values[0]), int(values[1]), int(values[2])


# ------------------------------------------------------------------------ background


# Background layers are planar ``[3, h, w]`` float32: numpy broadcasts over a leading
# channel axis at full speed, but crawls over a trailing axis of length 3.


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Linear gradient between two random colours at a random angle, ``[3, h, w]`` f32."""
    start, end = rng.uniform(0, 255, size=(2, 3, 1, 1)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    x = np.linspace(0.0, math.cos(angle), width, dtype=np.float32)
    y = np.linspace(0.0, math.sin(angle), height, dtype=np.float32)
    ramp = x[None, :] + y[:, None]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    layer = (end - start) * ramp[None]
    layer += start
    return layer


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Unit-variance colour noise smooth over ``width / cells`` pixels, ``[3, h, w]`` f32."""
    grid_h = max(round(cells * height / width), 2)
    grid = rng.standard_normal((grid_h, max(cells, 2), 3), dtype=np.float32)
    # Cubic up to a quarter of the size, then linear: as smooth to the eye, 10x cheaper.
    quarter = cv2.resize(grid, (-(-width // 4), -(-height // 4)), interpolation=cv2.INTER_CUBIC)
    smooth = cv2.resize(quarter, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(smooth.transpose(2, 0, 1))


def _add_blobs(rng: np.random.Generator, layer: np.ndarray, short_side: float) -> None:
    """Blend soft, blurry ellipses (stains, shadows) into a low-res planar layer, in place.

    Their edges are blurred over >= 8 frame pixels so they never pass for a sharp disc.
    """
    height, width = layer.shape[1:]
    for _ in range(int(rng.integers(0, 7))):
        axes = np.array([_log_uniform(rng, short_side / 40, short_side / 6) for _ in "xy"])
        axes = np.maximum(axes / _BG_DOWNSCALE, 1.0)
        sigma = max(2.0, 0.5 * float(axes.min()))
        reach = int(np.ceil(axes.max() + 3 * sigma))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        x0, y0 = max(cx - reach, 0), max(cy - reach, 0)
        x1, y1 = min(cx + reach + 1, width), min(cy + reach + 1, height)
        alpha = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        size = (round(axes[0]), round(axes[1]))
        cv2.ellipse(alpha, (cx - x0, cy - y0), size, rng.uniform(0, 180), 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma) * rng.uniform(0.25, 0.7)
        color = rng.uniform(0, 255, size=(3, 1, 1)).astype(np.float32)
        patch = layer[:, y0:y1, x0:x1]
        patch += (color - patch) * alpha[None]


def _clutter_points(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Vertices of one open stroke: a straight segment or a gently turning polyline.

    Turns are capped at 60 degrees so that a polyline never closes into a triangle-like
    outline.
    """
    short_side = min(width, height)
    start = rng.uniform([-0.1 * width, -0.1 * height], [1.1 * width, 1.1 * height])
    count = 1 if rng.random() < 0.5 else int(rng.integers(2, 6))
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(
        rng.uniform(-math.pi / 3, math.pi / 3, size=count)
    )
    lengths = rng.uniform(short_side / (10 if count == 1 else 20), short_side / 4, size=count)
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * lengths[:, None]
    return np.concatenate([start[None], start + np.cumsum(steps, axis=0)])


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, exposure: Exposure) -> None:
    """Draw thin open strokes (wires, cracks, edges), in place.

    Strokes are at least 10x longer than thick, while a box is at most 2.5x, so no
    stroke passes for a box; and open strokes never enclose an area like the other shapes.
    """
    height, width = image.shape[:2]
    max_thickness = max(2, min(width, height) // 360)
    for _ in range(int(rng.integers(0, 13))):
        scene_color = rng.integers(0, 256, size=(1, 3))
        thickness = int(rng.integers(1, max_thickness + 1))
        points = _clutter_points(rng, width, height)
        color = exposure.develop_colors(scene_color, *points.mean(axis=0))[0]
        vertices = np.round(points).astype(np.int32)
        cv2.polylines(image, [vertices], False, _as_color(color), thickness, cv2.LINE_AA)


def render_background(rng: np.random.Generator, exposure: Exposure) -> np.ndarray:
    """Render a textured, cluttered background that contains none of the classes.

    Gradient, smooth colour noise, fine grey texture and blurry blobs are built at
    1/``_BG_DOWNSCALE`` resolution, lit, tone-mapped and upscaled (cheap); thin clutter
    strokes are drawn at full resolution.

    Args:
        rng: Random source.
        exposure: Camera look over the frame; gives the frame size.

    Returns:
        ``[height, width, 3]`` uint8 RGB output image.
    """
    width, height = exposure.width, exposure.height
    low_w, low_h = -(-width // _BG_DOWNSCALE), -(-height // _BG_DOWNSCALE)
    layer = _gradient(rng, low_w, low_h)
    layer += _smooth_noise(rng, low_w, low_h, int(rng.integers(3, 12))) * rng.uniform(0, 30)
    texture = rng.standard_normal((low_h, low_w), dtype=np.float32)
    layer += texture * np.float32(rng.uniform(0, 12))
    _add_blobs(rng, layer, min(width, height))
    small = exposure.develop_layer(layer)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    _draw_clutter(rng, image, exposure)
    return image


# ---------------------------------------------------------------------- static frames


def _check_size(width: int, height: int) -> None:
    if width < 32 or height < 32:
        raise ValueError(f"frame size must be at least 32x32, got {width}x{height}")


def _sample_center(
    rng: np.random.Generator, half_extent: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Centre for an object's box; a few may cross the border by up to half the box."""
    overhang = 0.5 if rng.random() < _TRUNCATION_PROBABILITY else 0.0
    slack = half_extent * (1.0 - 2.0 * overhang)
    low = slack
    high = np.array([width, height], dtype=np.float64) - slack
    return rng.uniform(low, np.maximum(high, low))


def _sample_polygon(
    rng: np.random.Generator, shape: np.ndarray, class_id: int, size: float, frame: tuple[int, int]
) -> np.ndarray:
    """Random pose of a unit shape: rotation (triangles, stars), scale and position."""
    angle = rng.uniform(0, 2 * math.pi) if class_id in _ROTATING else 0.0
    outline = rotate(shape, angle)
    outline = outline * fit_scale(outline, size)
    box = polygon_box(outline)
    center = _sample_center(rng, (box[2:] - box[:2]) / 2, *frame)
    return outline - (box[:2] + box[2:]) / 2 + center


def _pick_object_color(
    rng: np.random.Generator,
    image: np.ndarray,
    raster: Raster,
    neighbours: np.ndarray,
    exposure: Exposure,
) -> tuple[int, int, int]:
    """Scene colour whose output differs from what lies under the object and next to it."""
    rows, cols = raster.window
    x, y = (cols.start + cols.stop) / 2, (rows.start + rows.stop) / 2

    def develop(colors: np.ndarray) -> np.ndarray:
        return exposure.develop_colors(colors, x, y)

    under = cv2.mean(image[raster.window], mask=raster.mask.view(np.uint8))[:3]
    avoid = np.concatenate([np.array([under]), develop(neighbours.reshape(-1, 3))])
    return pick_color(rng, avoid, develop)


def _try_place(
    rng: np.random.Generator,
    image: np.ndarray,
    exposure: Exposure,
    occupancy: Occupancy,
    objects: list[SceneObject],
) -> SceneObject | None:
    """Try to put one random object on top of the frame; draw and record it if it fits."""
    height, width = image.shape[:2]
    class_id = int(rng.integers(len(CLASSES)))
    size = _log_uniform(rng, *size_range(width, height))
    limit = _ASPECT_LIMITS[class_id]
    shape = unit_shape(rng, class_id, _log_uniform(rng, 1 / limit, limit), size)
    for _ in range(_PLACEMENT_ATTEMPTS):
        polygon = _sample_polygon(rng, shape, class_id, size, (width, height))
        raster = rasterize(polygon, width, height)
        if raster is None or not occupancy.fits_on_top(raster):
            continue
        neighbours = np.array([objects[i].color for i in occupancy.owners_near(raster)])
        color = _pick_object_color(rng, image, raster, neighbours, exposure)
        exposure.draw(image, raster, color)
        occupancy.add_on_top(raster)
        return SceneObject(class_id, polygon, color, len(objects))
    return None


def place_objects(
    rng: np.random.Generator, image: np.ndarray, count: int, exposure: Exposure
) -> list[SceneObject]:
    """Draw up to ``count`` random objects onto a background, back to front, in place.

    Each object keeps its random class and size and gets up to ``_PLACEMENT_ATTEMPTS``
    random positions (and rotations) that obey the truncation and occlusion rules; if all
    fail, it is left out.

    Args:
        rng: Random source.
        image: ``[H, W, 3]`` uint8 RGB output background.
        count: How many objects to try.
        exposure: Camera look over the frame.

    Returns:
        The drawn objects in draw order.
    """
    occupancy = Occupancy(image.shape[1], image.shape[0])
    objects: list[SceneObject] = []
    for _ in range(count):
        placed = _try_place(rng, image, exposure, occupancy, objects)
        if placed is not None:
            objects.append(placed)
    return objects


def frame_from_objects(image: np.ndarray, objects: Sequence[SceneObject]) -> Frame:
    """Package an image and its drawn objects as a :class:`Frame`.

    Args:
        image: ``[H, W, 3]`` uint8 RGB image.
        objects: Objects drawn in it, in draw order.

    Returns:
        The frame with boxes clipped to the image.
    """
    height, width = image.shape[:2]
    polygons = tuple(obj.polygon for obj in objects)
    boxes = np.array([polygon_box(p) for p in polygons], dtype=np.float64).reshape(-1, 4)
    return Frame(
        image=image,
        boxes=clip_boxes(boxes, width, height),
        class_ids=np.array([obj.class_id for obj in objects], dtype=np.int64),
        track_ids=np.array([obj.track_id for obj in objects], dtype=np.int64),
        polygons=polygons,
    )


def render_frame(
    rng: np.random.Generator,
    width: int = 1280,
    height: int = 720,
    jpeg_quality: int | None = None,
) -> Frame:
    """Render one independent random scene.

    Args:
        rng: Random source; the same generator state gives a byte-identical frame.
        width: Frame width in pixels (>= 32).
        height: Frame height in pixels (>= 32).
        jpeg_quality: If given (1-100), the image goes through a JPEG encode/decode round
            trip at this quality, for compression artifacts.

    Returns:
        The frame and its ground truth.

    Raises:
        ValueError: If the size is too small.
    """
    _check_size(width, height)
    look = sample_camera_look(rng)
    exposure = Exposure(look, width, height)
    image = render_background(rng, exposure)
    objects = place_objects(rng, image, int(rng.integers(0, MAX_OBJECTS + 1)), exposure)
    image = apply_sensor(image, look, rng)
    if jpeg_quality is not None:
        image = decode_jpeg(encode_jpeg(image, jpeg_quality))
    return frame_from_objects(image, objects)


# ------------------------------------------------------------------------- sequences


def _reflect(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Fold unbounded positions into ``[low, high]`` as a ball bouncing between walls."""
    span = high - low
    phase = np.mod(values - low, 2 * span)
    return low + np.where(phase <= span, phase, 2 * span - phase)


@dataclass(frozen=True)
class Motion:
    """Path of an object's centre: a closed-form function of the frame index.

    The centre drifts at constant velocity plus a slow sinusoidal wobble (smooth, bounded
    acceleration) and bounces off walls.

    Attributes:
        start: ``[2]`` unbounded centre at frame 0, in pixels.
        velocity: ``[2]`` drift in pixels per frame.
        wobble: ``[2]`` amplitude of the wobble in pixels.
        wobble_rate: Angular frequency of the wobble in radians per frame.
        wobble_phase: ``[2]`` phase of the wobble in radians.
        low: ``[2]`` lowest centre in pixels (bounce wall).
        high: ``[2]`` highest centre in pixels (bounce wall).
    """

    start: np.ndarray
    velocity: np.ndarray
    wobble: np.ndarray
    wobble_rate: float
    wobble_phase: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def center(self, index: int) -> np.ndarray:
        """Centre at a frame.

        Args:
            index: Frame index.

        Returns:
            ``[2]`` ``(x, y)`` in frame pixels, within ``[low, high]``.
        """
        drift = self.start + self.velocity * index
        drift = drift + self.wobble * np.sin(self.wobble_rate * index + self.wobble_phase)
        return _reflect(drift, self.low, self.high)


def sample_motion(rng: np.random.Generator, reach: np.ndarray, width: int, height: int) -> Motion:
    """Draw a random path whose bounce walls keep most of an object in the frame.

    The walls sit ``_BOUNCE_MARGIN`` reaches inside the frame edges, so at least 70 % of
    the object's box stays in the frame along each axis.

    Args:
        rng: Random source.
        reach: ``[2]`` farthest the object extends from its centre along x and y, pixels.
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        The path.
    """
    short_side = min(width, height)
    speed = _log_uniform(rng, short_side / 2000, short_side / 100)
    heading = rng.uniform(0, 2 * math.pi)
    low = _BOUNCE_MARGIN * reach
    high = np.maximum(np.array([width, height]) - low, low + 1.0)
    return Motion(
        start=rng.uniform(low, high),
        velocity=speed * np.array([math.cos(heading), math.sin(heading)]),
        wobble=rng.uniform(0, short_side / 20, size=2),
        wobble_rate=2 * math.pi / rng.uniform(60, 300),
        wobble_phase=rng.uniform(0, 2 * math.pi, size=2),
        low=low,
        high=high,
    )


@dataclass(frozen=True)
class MovingObject:
    """An object of a :class:`SceneSequence`; triangles and stars spin, all breathe in scale.

    Attributes:
        class_id: Index into :data:`CLASSES`.
        color: RGB colour, 0-255.
        shape: ``[K, 2]`` polygon around the origin, in pixels at scale 1 and angle 0.
        angle: Rotation at frame 0 in radians.
        spin: Rotation speed in radians per frame.
        zoom: Relative amplitude of the scale breathing.
        zoom_rate: Angular frequency of the breathing in radians per frame.
        motion: Path of the centre.
    """

    class_id: int
    color: tuple[int, int, int]
    shape: np.ndarray
    angle: float
    spin: float
    zoom: float
    zoom_rate: float
    motion: Motion

    def polygon(self, index: int) -> np.ndarray:
        """Outline at a frame.

        Args:
            index: Frame index (>= 0).

        Returns:
            ``[K, 2]`` vertices in frame pixels.
        """
        scale = 1.0 + self.zoom * math.sin(self.zoom_rate * index)
        outline = rotate(self.shape, self.angle + self.spin * index) * scale
        return outline + self.motion.center(index)


def sample_moving_object(
    rng: np.random.Generator,
    width: int,
    height: int,
    avoid: np.ndarray,
    develop: Callable[[np.ndarray], np.ndarray] | None = None,
) -> MovingObject:
    """Draw a random moving object for a sequence.

    Args:
        rng: Random source.
        width: Frame width in pixels.
        height: Frame height in pixels.
        avoid: ``[M, 3]`` output RGB colours the object's colour must stand out from.
        develop: Maps scene colours to output colours (see :func:`pick_color`).

    Returns:
        The object.
    """
    class_id = int(rng.integers(len(CLASSES)))
    zoom = float(rng.uniform(0.0, 0.12))
    smallest, largest = size_range(width, height)
    size = _log_uniform(rng, smallest / (1 - zoom), largest / (1 + zoom))
    limit = _ASPECT_LIMITS[class_id]
    shape = unit_shape(rng, class_id, _log_uniform(rng, 1 / limit, limit), size)
    spins = class_id in _ROTATING
    angle = rng.uniform(0, 2 * math.pi) if spins else 0.0
    shape = shape * fit_scale(rotate(shape, angle), size)
    if spins:
        reach = np.full(2, float(np.linalg.norm(shape, axis=1).max()))
    else:
        reach = np.abs(shape).max(axis=0)
    return MovingObject(
        class_id=class_id,
        color=pick_color(rng, avoid, develop),
        shape=shape,
        angle=angle,
        spin=float(rng.uniform(-0.03, 0.03)) if spins else 0.0,
        zoom=zoom,
        zoom_rate=2 * math.pi / rng.uniform(90, 400),
        motion=sample_motion(rng, reach * (1 + zoom), width, height),
    )


class SceneSequence:
    """A static camera watching objects that move smoothly, for video and multi-camera tests.

    The background, camera settings and objects (class, colour, size, motion) are fixed by
    ``seed``; frame ``index`` adds fresh sensor noise and a slight global flicker. Objects
    keep a fixed depth order (later ones in front); in frames where an object breaks the
    truncation or occlusion rule it is not drawn (and not labelled), so every frame obeys
    the same rules as :func:`render_frame`. Frames can be rendered in any order at the same
    cost (the background is rendered once, in the constructor): build one sequence per
    camera and call :meth:`frame` for each index.
    """

    def __init__(
        self,
        seed: int,
        width: int,
        height: int,
        num_objects: int | tuple[int, int] = (2, 10),
    ) -> None:
        """Set up the scene.

        Args:
            seed: Seed of everything in the sequence.
            width: Frame width in pixels (>= 32).
            height: Frame height in pixels (>= 32).
            num_objects: Number of objects, or an inclusive ``(min, max)`` range to draw it
                from.

        Raises:
            ValueError: If the size is too small or the object count is negative.
        """
        _check_size(width, height)
        low, high = (num_objects, num_objects) if isinstance(num_objects, int) else num_objects
        if not 0 <= low <= high:
            raise ValueError(f"num_objects must be >= 0 and ordered, got {num_objects}")
        self.seed, self.width, self.height = seed, width, height
        rng = np.random.default_rng(seed)
        self.look = sample_camera_look(rng)
        self.exposure = Exposure(self.look, width, height)
        self.background = render_background(rng, self.exposure)
        self.flicker = float(rng.uniform(0.0, 8.0))
        self.flicker_rate = 2 * math.pi / rng.uniform(15, 120)
        self.objects = self._sample_objects(rng, int(rng.integers(low, high + 1)))

    def _sample_objects(self, rng: np.random.Generator, count: int) -> list[MovingObject]:
        """Objects whose output colours stand out from the whole background and each other."""

        def develop(colors: np.ndarray) -> np.ndarray:
            return self.exposure.develop_colors(colors, self.width / 2, self.height / 2)

        coarse = cv2.resize(self.background, (16, 9), interpolation=cv2.INTER_AREA)
        avoid = coarse.reshape(-1, 3).astype(np.int64)
        objects = []
        for _ in range(count):
            moving = sample_moving_object(rng, self.width, self.height, avoid, develop)
            objects.append(moving)
            avoid = np.concatenate([avoid, develop(np.array([moving.color]))])
        return objects

    def __len__(self) -> int:
        """Number of objects in the scene (not all are visible in every frame)."""
        return len(self.objects)

    def _visible(self, index: int) -> list[tuple[SceneObject, Raster]]:
        """Objects drawn in a frame with their coverage, in draw order (back to front)."""
        occupancy = Occupancy(self.width, self.height)
        shown: list[tuple[SceneObject, Raster]] = []
        # Decide front to back, so that a hidden object hides nothing behind it.
        for track_id in reversed(range(len(self.objects))):
            moving = self.objects[track_id]
            polygon = moving.polygon(index)
            raster = rasterize(polygon, self.width, self.height)
            if raster is None or not occupancy.fits_behind(raster):
                continue
            occupancy.add_behind(raster)
            shown.append((SceneObject(moving.class_id, polygon, moving.color, track_id), raster))
        return shown[::-1]

    def visible_objects(self, index: int) -> list[SceneObject]:
        """Objects drawn in a frame, in draw order (back to front).

        Args:
            index: Frame index (>= 0).

        Returns:
            The objects that obey the truncation and occlusion rules in that frame.
        """
        return [obj for obj, _ in self._visible(index)]

    def frame(self, index: int) -> Frame:
        """Render one frame.

        Args:
            index: Frame index (>= 0); the same ``(seed, index)`` gives a byte-identical
                frame.

        Returns:
            The frame; ``track_ids`` are indices into :attr:`objects`.

        Raises:
            ValueError: If ``index`` is negative.
        """
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        image = self.background.copy()
        shown = self._visible(index)
        for obj, raster in shown:
            self.exposure.draw(image, raster, obj.color)
        brightness = self.flicker * math.sin(self.flicker_rate * index) + rng.normal(0, 1.0)
        image = apply_sensor(image, self.look, rng, brightness)
        return frame_from_objects(image, [obj for obj, _ in shown])


# ------------------------------------------------------------------------ JPEG / COCO


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB image as JPEG.

    Args:
        image_rgb: ``[H, W, 3]`` uint8 RGB image.
        quality: JPEG quality, 1-100.

    Returns:
        The JPEG file bytes.

    Raises:
        ValueError: If the quality is out of range or encoding fails.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes to an RGB image.

    Args:
        data: JPEG file bytes.

    Returns:
        ``[H, W, 3]`` uint8 RGB image.

    Raises:
        ValueError: If the bytes are not a decodable image.
    """
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def class_id_to_category_id(class_id: int) -> int:
    """COCO category id of a class index.

    Args:
        class_id: Index into :data:`CLASSES`.

    Returns:
        ``class_id + CATEGORY_ID_OFFSET``.

    Raises:
        ValueError: If ``class_id`` is not a class index.
    """
    if not 0 <= class_id < len(CLASSES):
        raise ValueError(f"class_id must be in [0, {len(CLASSES)}), got {class_id}")
    return class_id + CATEGORY_ID_OFFSET


def category_id_to_class_id(category_id: int) -> int:
    """Class index of a COCO category id.

    Args:
        category_id: COCO category id as written by :func:`to_coco`.

    Returns:
        ``category_id - CATEGORY_ID_OFFSET``.

    Raises:
        ValueError: If ``category_id`` names no class.
    """
    return class_id_to_category_id(category_id - CATEGORY_ID_OFFSET) - CATEGORY_ID_OFFSET


def coco_categories() -> list[dict[str, object]]:
    """COCO ``categories`` list for :data:`CLASSES`.

    Returns:
        One ``{"id", "name", "supercategory"}`` dict per class, in class order.
    """
    return [
        {"id": class_id_to_category_id(i), "name": name, "supercategory": "shape"}
        for i, name in enumerate(CLASSES)
    ]


def _coco_image(position: int, file_name: str, width: int, height: int) -> dict:
    return {"id": position + 1, "file_name": file_name, "width": width, "height": height}


def _coco_annotations(frame: Frame, image_id: int, first_id: int) -> list[dict]:
    """COCO annotations of one frame, with ids counting up from ``first_id``."""
    track_ids = frame.track_ids if frame.track_ids is not None else range(len(frame.boxes))
    annotations = []
    for box, class_id, track_id in zip(frame.boxes, frame.class_ids, track_ids, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = round(x2 - x1, 3), round(y2 - y1, 3)
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": image_id,
                "category_id": class_id_to_category_id(int(class_id)),
                "bbox": [round(x1, 3), round(y1, 3), w, h],
                "area": round(w * h, 3),
                "iscrowd": 0,
                "track_id": int(track_id),
            }
        )
    return annotations


class _CocoWriter:
    """Accumulates COCO records frame by frame, so that images need not stay in memory."""

    def __init__(self) -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(self, frame: Frame, file_name: str) -> dict:
        """Append one frame and return its image record (callers may add fields)."""
        height, width = frame.image.shape[:2]
        image = _coco_image(len(self.images), file_name, width, height)
        self.images.append(image)
        self.annotations += _coco_annotations(frame, image["id"], len(self.annotations) + 1)
        return image

    def result(self) -> dict:
        """The COCO dict."""
        return {
            "images": self.images,
            "annotations": self.annotations,
            "categories": coco_categories(),
        }


def to_coco(frames: Sequence[Frame], file_names: Sequence[str]) -> dict:
    """Build a COCO detection dataset from frames.

    Image ids are ``position + 1``, so sorting by id gives the frames' order; annotation
    ids count from 1 (pycocotools' evaluator reads id 0 as "no match"); ``category_id``
    is ``class_id + 1``; ``bbox`` is ``[x, y, w, h]`` in pixels of the frame, rounded to
    1/1000 px; ``area`` is the box area in square pixels; ``iscrowd`` is 0; each
    annotation also carries the object's ``track_id``.

    Args:
        frames: Frames in order.
        file_names: File name of each frame, relative to the dataset's image folder.

    Returns:
        A dict with ``images``, ``annotations`` and ``categories``, ready for
        ``json.dump`` and ``pycocotools.coco.COCO``.

    Raises:
        ValueError: If the two sequences differ in length.
    """
    if len(frames) != len(file_names):
        raise ValueError(f"{len(frames)} frames but {len(file_names)} file names")
    writer = _CocoWriter()
    for frame, name in zip(frames, file_names, strict=True):
        writer.add(frame, name)
    return writer.result()


def coco_targets(coco: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read a COCO dataset's boxes back, per image.

    Args:
        coco: A COCO detection dict (e.g. from :func:`to_coco` or its JSON file).

    Returns:
        For each image in image-id order: ``[N, 4]`` float32 ``x1, y1, x2, y2`` boxes in
        pixels and ``[N]`` int64 class ids.
    """
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    targets = []
    for image_id in sorted(by_image):
        annotations = by_image[image_id]
        xywh = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        class_ids = [category_id_to_class_id(a["category_id"]) for a in annotations]
        targets.append((boxes.astype(np.float32), np.array(class_ids, dtype=np.int64)))
    return targets


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def write_image_dataset(
    out_dir: Path,
    count: int,
    seed: int,
    sizes: Sequence[tuple[int, int]] = ((1280, 720), (1920, 1080)),
    quality: int = 90,
) -> Path:
    """Write random frames as JPEG files plus a COCO annotation file.

    Image ``i`` is rendered from ``numpy.random.default_rng([seed, i])`` at a size drawn
    from ``sizes``, so any image can be regenerated on its own. The JPEG file is the only
    compression the image goes through.

    Args:
        out_dir: Folder to write into (created if missing); images are ``000000.jpg``, ...
        count: Number of images (>= 0).
        seed: Seed of the dataset.
        sizes: ``(width, height)`` sizes to draw from, in pixels.
        quality: JPEG quality, 1-100.

    Returns:
        Path of the COCO file, ``out_dir / "annotations.json"``.

    Raises:
        ValueError: If ``sizes`` is empty or ``count`` is negative.
    """
    if not sizes or count < 0:
        raise ValueError(f"need at least one size and count >= 0, got {sizes!r} and {count}")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _CocoWriter()
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        width, height = sizes[int(rng.integers(len(sizes)))]
        frame = render_frame(rng, width, height)
        name = f"{i:06d}.jpg"
        (out_dir / name).write_bytes(encode_jpeg(frame.image, quality))
        writer.add(frame, name)
    json_path = out_dir / "annotations.json"
    _write_json(json_path, writer.result())
    logger.info("wrote %d images and %s", count, json_path)
    return json_path


def write_clip(
    out_path: Path,
    seed: int,
    num_frames: int,
    width: int,
    height: int,
    fps: int = 30,
    *,
    num_objects: int | tuple[int, int] = (2, 10),
    keyframe_interval: int | None = None,
    crf: int = 20,
) -> Path:
    """Write a :class:`SceneSequence` as an H.264 MP4 plus a COCO annotation file.

    The video is yuv420p without B-frames and with a keyframe every
    ``keyframe_interval`` frames, as IP cameras stream it. COCO image ``id`` is
    ``frame index + 1``; each image also records ``frame_index``, and ``file_name`` is
    ``"<clip name>#<frame index>"``. Boxes are those of the rendered frames (compression
    moves no edges).

    Args:
        out_path: Path of the ``.mp4`` file (parent folders are created).
        seed: Seed of the sequence.
        num_frames: Number of frames (>= 1).
        width: Frame width in pixels (even, >= 32).
        height: Frame height in pixels (even, >= 32).
        fps: Frame rate in frames per second.
        num_objects: Objects in the sequence, or an inclusive ``(min, max)`` range.
        keyframe_interval: Frames between keyframes; defaults to ``fps`` (one per second).
        crf: x264 constant rate factor (lower is better quality).

    Returns:
        Path of the COCO file, ``out_path`` with suffix ``.json``.

    Raises:
        ValueError: If the size is odd or too small, or ``num_frames`` or ``fps`` < 1.
    """
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {width}x{height}")
    if num_frames < 1 or fps < 1:
        raise ValueError(f"num_frames and fps must be >= 1, got {num_frames} and {fps}")
    sequence = SceneSequence(seed, width, height, num_objects)
    gop = keyframe_interval or fps
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = _CocoWriter()
    # PyAV only here: the scene renderer must import on machines without it (the GPU one).
    import av

    with av.open(str(out_path), mode="w") as container:
        stream = _add_h264_stream(container, width, height, fps, gop, crf)
        for index in range(num_frames):
            frame = sequence.frame(index)
            video_frame = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            video_frame.pts = index
            video_frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(video_frame))
            writer.add(frame, f"{out_path.name}#{index}")["frame_index"] = index
        container.mux(stream.encode(None))
    coco = writer.result()
    coco["info"] = {
        "video": out_path.name,
        "seed": seed,
        "fps": fps,
        "num_frames": num_frames,
        "keyframe_interval": gop,
    }
    json_path = out_path.with_suffix(".json")
    _write_json(json_path, coco)
    logger.info("wrote %d frames to %s and %s", num_frames, out_path, json_path)
    return json_path


def _add_h264_stream(
    container: av.container.OutputContainer, width: int, height: int, fps: int, gop: int, crf: int
) -> av.VideoStream:
    """Add a camera-like libx264 stream: fixed GOP, no B-frames, no scene-cut keyframes."""
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    stream.options = {
        "crf": str(crf),
        "preset": "veryfast",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
    }
    return stream
