"""Sequences: a static camera watching objects move, with identities kept across frames."""

from __future__ import annotations

import math

import cv2
import numpy as np

from camdet.scenes.background import render_background
from camdet.scenes.camera import Exposure, apply_sensor, sample_camera_look
from camdet.scenes.frame import Frame, SceneObject, _check_size
from camdet.scenes.motion import MovingObject, sample_moving_object
from camdet.scenes.raster import Occupancy, Raster, rasterize
from camdet.scenes.static import frame_from_objects


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
