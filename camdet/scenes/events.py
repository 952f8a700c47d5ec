"""Occlusions and crossings by construction, for tracking scenes.

A plain :class:`~camdet.scenes.SceneSequence` has objects crossing and hiding each other
only by chance. With :class:`TrackingEvents` it also gets:

* **Occluders**: full-height round pillars (a flat paint shaded as a cylinder, with the
  backgrounds' grain, lit by the same camera), drawn over every object. They lie in the
  middle 40 % of the frame width, clear of the walls objects bounce off, and are wider
  than any object (:data:`OBJECT_TO_OCCLUDER`), so an object behind one is hidden whole
  at some point and never shows on both sides of it.
* **Steady horizontal motion**: every object crosses the frame at a horizontal speed of
  at least the widest pillar / ``max_hidden_frames`` pixels per frame and never turns
  back except at a wall, so it passes behind each pillar in bounded time (its vertical
  path still drifts and wobbles).
* **Designed crossings**: objects ``2k`` and ``2k + 1`` meet head-on at frame
  ``crossing_every * (k + 1/2)`` (centres at most a quarter of the smaller object's
  height apart vertically), at a point clear of the pillars, and pass each other.

Labels follow the rules of :mod:`camdet.scenes`, with a pillar acting like the frame edge:
an object is labelled if at least :data:`~camdet.scenes.MIN_IN_FRAME_FRACTION` of its area
is inside the frame *and* not behind a pillar, and its box is clipped like a truncated
object's: the box clipped to the frame, minus the part of its column range a pillar covers
at one end (the hull of what is left). Objects drawn but too hidden to label are listed
as :class:`~camdet.scenes.frame.HiddenObjects`, and the pillars themselves as
:attr:`~camdet.scenes.Frame.occluders` (both MOT rows with ``conf`` 0: not scored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from camdet.scenes.camera import Exposure
from camdet.scenes.motion import _BOUNCE_MARGIN, Motion, MovingObject
from camdet.scenes.raster import Raster, blend, rasterize
from camdet.scenes.shapes import _log_uniform, clip_polygon, polygon_area

MIN_OCCLUDER_DIVISOR: float = 6.0
"""Narrowest pillar: short frame side / this (180 px at 1080p)."""

MAX_OCCLUDER_DIVISOR: float = 5.0
"""Widest pillar: short frame side / this (216 px at 1080p)."""

OBJECT_TO_OCCLUDER: float = 0.9
"""Largest object of a scene with pillars: this share of the narrowest pillar's width."""

_OCCLUDER_REGION = (0.3, 0.7)  # pillars lie within this share of the frame width
_SPEED_SPREAD = 1.6  # fastest horizontal speed / slowest
_MEET_ATTEMPTS = 100


@dataclass(frozen=True)
class TrackingEvents:
    """What a tracking scene adds to a plain sequence.

    Attributes:
        occluders: Number of pillars (>= 0). One by default: the detector, trained on
            plain scenes, takes a strip of background between two pillars for a big box
            (and a pillar itself now and then: evaluation ignores boxes on pillars).
            Measured on 40 empty 640x360 frames: 14 detections >= 0.25 with one pillar,
            72 with two.
        crossing_every: Frames between designed crossings (>= 2); pair ``k`` meets at
            frame ``crossing_every * (k + 1/2)``.
        max_hidden_frames: Most frames a pillar may hide an object on its own: the
            slowest horizontal speed is the widest pillar / this. Keep it under the
            tracker's ``max_age`` (30 frames).
    """

    occluders: int = 1
    crossing_every: int = 60
    max_hidden_frames: int = 20

    def __post_init__(self) -> None:
        if self.occluders < 0 or self.crossing_every < 2 or self.max_hidden_frames < 1:
            raise ValueError(
                f"need occluders >= 0, crossing_every >= 2, max_hidden_frames >= 1: {self}"
            )


class Occluders:
    """Static pillars drawn over every moving object.

    Attributes:
        bands: ``[K, 2]`` float64 ``x_left, x_right`` of each pillar in frame pixels,
            sorted and disjoint; each spans the full frame height.
        texture: ``[H, W, 3]`` uint8 output image the pillars are cut from.
    """

    def __init__(self, bands: np.ndarray, texture: np.ndarray) -> None:
        """Set up pillars.

        Args:
            bands: ``[K, 2]`` ``x_left, x_right`` in frame pixels, sorted and disjoint.
            texture: ``[H, W, 3]`` uint8 image to cut them from.
        """
        self.bands = np.asarray(bands, dtype=np.float64).reshape(-1, 2)
        self.texture = texture
        height, width = texture.shape[:2]
        self.width, self.height = width, height
        self._rasters: list[Raster] = []
        for left, right in self.bands:
            outline = np.array([[left, 0.0], [right, 0.0], [right, height], [left, height]])
            raster = rasterize(outline, width, height)
            if raster is not None:
                self._rasters.append(raster)

    @property
    def widest(self) -> float:
        """Width of the widest pillar in pixels (0 without pillars)."""
        return float((self.bands[:, 1] - self.bands[:, 0]).max()) if len(self.bands) else 0.0

    @property
    def boxes(self) -> np.ndarray:
        """``[K, 4]`` float32 ``x1, y1, x2, y2`` of the pillars in frame pixels."""
        heights = np.full((len(self.bands), 1), float(self.height))
        zeros = np.zeros((len(self.bands), 1))
        return np.hstack([self.bands[:, :1], zeros, self.bands[:, 1:], heights]).astype(np.float32)

    @property
    def narrowest(self) -> float | None:
        """Width of the narrowest pillar in pixels (None without pillars)."""
        return float((self.bands[:, 1] - self.bands[:, 0]).min()) if len(self.bands) else None

    def draw(self, image: np.ndarray) -> None:
        """Paint the pillars over an output image, in place.

        Args:
            image: ``[H, W, 3]`` uint8 RGB output image of the frame size.
        """
        for raster in self._rasters:
            blend(image, raster, self.texture[raster.window])

    def visibility(self, polygon: np.ndarray) -> float:
        """Share of a polygon's in-frame area that no pillar hides.

        Args:
            polygon: ``[K, 2]`` vertices in frame pixels.

        Returns:
            A value in ``[0, 1]`` (1 for a polygon wholly outside the frame).
        """
        in_frame = polygon_area(clip_polygon(polygon, self.width, self.height))
        if in_frame <= 0:
            return 1.0
        hidden = 0.0
        for left, right in self.bands:
            shifted = polygon - np.array([left, 0.0])
            hidden += polygon_area(clip_polygon(shifted, right - left, self.height))
        return float(min(max(1.0 - hidden / in_frame, 0.0), 1.0))

    def clip_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Take the pillars out of boxes' column ranges, as the frame edge clips a box.

        Args:
            boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in frame pixels, already clipped to it.

        Returns:
            ``[N, 4]`` float32 boxes whose ``x1, x2`` span what the pillars leave of
            ``[x1, x2]`` (a pillar inside the range leaves it whole); a box wholly behind
            pillars is returned unchanged.
        """
        out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        for row in out:
            pieces = [(row[0], row[2])]
            for left, right in self.bands:
                pieces = [
                    part
                    for start, stop in pieces
                    for part in ((start, min(stop, left)), (max(start, right), stop))
                    if part[1] > part[0]
                ]
            if pieces:
                row[0], row[2] = pieces[0][0], pieces[-1][1]
        return out.astype(np.float32)


def _pillar_texture(rng: np.random.Generator, exposure: Exposure, bands: np.ndarray) -> np.ndarray:
    """Output colours of fluted pillars, textured like the backgrounds, lit like the scene.

    Each pillar has a paint colour, shading across it as a cylinder, vertical streaks
    (flutes) of random strength, a gentle gradient along its height and the backgrounds'
    fine grain. It is never flat (a flat band reads as a box to the detector, since every
    object is flat) and nothing crosses it (a stroke, a blob or a brighter stretch cuts it
    into pieces that read as boxes truncated by the frame edge).

    Returns:
        ``[H, W, 3]`` uint8 output image; only the columns of ``bands`` are meant to be seen.
    """
    width, height = exposure.width, exposure.height
    layer = np.zeros((3, height, width), dtype=np.float32)
    rows = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    for left, right in bands:
        col0, col1 = max(math.floor(left), 0), min(math.ceil(right), width)
        columns = np.arange(col0, col1, dtype=np.float32) + 0.5
        across = np.clip((columns - left) / (right - left), 0.0, 1.0)
        shade = 0.6 + 0.4 * np.sin(np.pi * across)
        flute_px = rng.uniform(3.0, 10.0) * min(width, height) / 360
        knots = rng.standard_normal(int((right - left) / flute_px) + 4).astype(np.float32)
        flutes = np.interp((columns - left) / flute_px, np.arange(len(knots)), knots)
        paint = rng.uniform(30, 225, size=(3, 1, 1)).astype(np.float32)
        streaks = (flutes * np.float32(rng.uniform(15, 40)))[None, :]
        ramp = rows * np.float32(rng.uniform(-60, 60))
        grain = rng.standard_normal((height, col1 - col0), dtype=np.float32)
        grain *= np.float32(rng.uniform(2, 12))
        layer[:, :, col0:col1] = paint * shade + (streaks + ramp + grain)[None]
    np.clip(layer, 0, 255, out=layer)
    return exposure.develop_layer(layer)


def sample_occluders(rng: np.random.Generator, exposure: Exposure, count: int) -> Occluders:
    """Draw ``count`` disjoint pillars and their paint.

    The middle 40 % of the frame width is cut into ``count`` equal slots and each pillar
    lies inside its own slot (narrowed to the slot where the width range does not fit).

    Args:
        rng: Random source.
        exposure: Camera look over the frame; gives the frame size.
        count: Number of pillars (>= 0).

    Returns:
        The pillars.
    """
    width, height = exposure.width, exposure.height
    short_side = min(width, height)
    start, stop = (share * width for share in _OCCLUDER_REGION)
    slot = (stop - start) / max(count, 1)
    bands = []
    for index in range(count):
        size = min(
            _log_uniform(rng, short_side / MIN_OCCLUDER_DIVISOR, short_side / MAX_OCCLUDER_DIVISOR),
            0.8 * slot,
        )
        left = start + index * slot + rng.uniform(0.1 * slot, 0.9 * slot - size)
        bands.append((left, left + size))
    bands = np.array(bands).reshape(-1, 2)
    return Occluders(bands, _pillar_texture(rng, exposure, bands))


def _steady_motion(
    rng: np.random.Generator, motion: Motion, speed: float, short_side: float
) -> Motion:
    """The same walls, a new path: constant horizontal speed, drift and wobble only in y."""
    direction = 1.0 if rng.random() < 0.5 else -1.0
    return replace(
        motion,
        start=rng.uniform(motion.low, motion.high),
        velocity=np.array([direction * speed, rng.uniform(-0.5, 0.5) * speed]),
        wobble=np.array([0.0, rng.uniform(0, short_side / 20)]),
    )


def _meet(motion: Motion, point: np.ndarray, index: int) -> Motion:
    """Shift a path's start so that its centre is at ``point`` at frame ``index``.

    ``point`` lies between the walls, so no reflection folds it: the centre there moves
    with the path's own velocity.
    """
    wobble = motion.wobble * np.sin(motion.wobble_rate * index + motion.wobble_phase)
    return replace(motion, start=point - motion.velocity * index - wobble)


def _reach(moving: MovingObject) -> np.ndarray:
    """``[2]`` farthest the object ever extends from its centre along x and y, pixels."""
    return moving.motion.low / _BOUNCE_MARGIN


def _meeting_point(
    rng: np.random.Generator, a: MovingObject, b: MovingObject, occluders: Occluders
) -> np.ndarray:
    """A centre both paths can reach, with both objects' boxes clear of every pillar."""
    low = np.maximum(a.motion.low, b.motion.low)
    high = np.maximum(np.minimum(a.motion.high, b.motion.high), low)
    half_width = max(_reach(a)[0], _reach(b)[0])
    point = rng.uniform(low, high)
    for _ in range(_MEET_ATTEMPTS):
        clear = np.all(
            (point[0] + half_width <= occluders.bands[:, 0])
            | (point[0] - half_width >= occluders.bands[:, 1])
        )
        if clear:
            break
        point = rng.uniform(low, high)
    return point


def steer_objects(
    rng: np.random.Generator,
    objects: list[MovingObject],
    occluders: Occluders,
    events: TrackingEvents,
) -> list[MovingObject]:
    """Give objects steady horizontal paths, and pair them up to cross at set frames.

    Args:
        rng: Random source.
        objects: The sequence's objects (their shapes, colours and walls are kept).
        occluders: The scene's pillars (the slowest speed follows the widest).
        events: The events to build.

    Returns:
        The objects with new paths.
    """
    short_side = min(occluders.width, occluders.height)
    slowest = max(occluders.widest / events.max_hidden_frames, short_side / 200)
    steered = []
    for moving in objects:
        speed = _log_uniform(rng, slowest, _SPEED_SPREAD * slowest)
        steered.append(
            replace(moving, motion=_steady_motion(rng, moving.motion, speed, short_side))
        )
    for pair in range(len(steered) // 2):
        a, b = steered[2 * pair], steered[2 * pair + 1]
        index = round(events.crossing_every * (pair + 0.5))
        point = _meeting_point(rng, a, b, occluders)
        half_height = min(_reach(a)[1], _reach(b)[1])
        offset = np.array([0.0, rng.uniform(-0.5, 0.5) * half_height])
        other = np.clip(point + offset, b.motion.low, b.motion.high)
        # Head-on: a moves right and b left where they meet.
        for moving, target, sign, slot in (
            (a, point, 1.0, 2 * pair),
            (b, other, -1.0, 2 * pair + 1),
        ):
            vx, vy = moving.motion.velocity
            motion = replace(moving.motion, velocity=np.array([sign * abs(vx), vy]))
            steered[slot] = replace(moving, motion=_meet(motion, target, index))
    return steered
