"""How sequence objects move: closed-form paths of the frame index, bouncing off walls."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from camdet.scenes.camera import pick_color
from camdet.scenes.frame import CLASSES
from camdet.scenes.shapes import (
    _ASPECT_LIMITS,
    _ROTATING,
    _log_uniform,
    fit_scale,
    rotate,
    size_range,
    unit_shape,
)

_BOUNCE_MARGIN = 0.4  # moving centres stay >= this many half-extents inside the frame


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
    largest: float | None = None,
) -> MovingObject:
    """Draw a random moving object for a sequence.

    Args:
        rng: Random source.
        width: Frame width in pixels.
        height: Frame height in pixels.
        avoid: ``[M, 3]`` output RGB colours the object's colour must stand out from.
        develop: Maps scene colours to output colours (see :func:`pick_color`).
        largest: Most the object may ever extend along x, at any angle and zoom, in
            pixels (default: no cap beyond :func:`size_range`).

    Returns:
        The object.
    """
    class_id = int(rng.integers(len(CLASSES)))
    zoom = float(rng.uniform(0.0, 0.12))
    smallest, most = size_range(width, height)
    top = most if largest is None else min(max(largest, smallest), most)
    size = _log_uniform(rng, smallest / (1 - zoom), top / (1 + zoom))
    limit = _ASPECT_LIMITS[class_id]
    shape = unit_shape(rng, class_id, _log_uniform(rng, 1 / limit, limit), size)
    spins = class_id in _ROTATING
    angle = rng.uniform(0, 2 * math.pi) if spins else 0.0
    shape = shape * fit_scale(rotate(shape, angle), size)
    if spins:
        reach = np.full(2, float(np.linalg.norm(shape, axis=1).max()))
    else:
        reach = np.abs(shape).max(axis=0)
    if largest is not None:
        fit = min(1.0, largest / (2 * float(reach[0]) * (1 + zoom)))
        shape, reach = shape * fit, reach * fit
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
