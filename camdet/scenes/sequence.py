"""Sequences: a static camera watching objects move, with identities kept across frames."""

from __future__ import annotations

import math

import cv2
import numpy as np

from camdet.scenes.background import render_background
from camdet.scenes.camera import Exposure, apply_sensor, sample_camera_look
from camdet.scenes.events import (
    OBJECT_TO_OCCLUDER,
    Occluders,
    TrackingEvents,
    sample_occluders,
    steer_objects,
)
from camdet.scenes.frame import (
    MIN_IN_FRAME_FRACTION,
    Frame,
    HiddenObjects,
    SceneObject,
    _check_size,
)
from camdet.scenes.motion import MovingObject, sample_moving_object
from camdet.scenes.raster import Occupancy, Raster, rasterize
from camdet.scenes.shapes import clip_boxes, polygon_box


class SceneSequence:
    """A static camera watching objects that move smoothly, for video and multi-camera tests.

    The background, camera settings and objects (class, colour, size, motion) are fixed by
    ``seed``; frame ``index`` adds fresh sensor noise and a slight global flicker. Objects
    keep a fixed depth order (later ones in front); in frames where an object breaks the
    truncation or occlusion rule it is not drawn (and not labelled), so every frame obeys
    the same rules as :func:`render_frame`. Frames can be rendered in any order at the same
    cost (the background is rendered once, in the constructor): build one sequence per
    camera and call :meth:`frame` for each index.

    With ``events`` (tracking scenes, :mod:`camdet.scenes.events`) the scene also has
    pillars drawn over every object, steady horizontal paths that pass behind them in
    bounded time, and pairs of objects that meet head-on at set frames. Without it, the
    same seed gives the same frames as before events existed.
    """

    def __init__(
        self,
        seed: int,
        width: int,
        height: int,
        num_objects: int | tuple[int, int] = (2, 10),
        events: TrackingEvents | None = None,
    ) -> None:
        """Set up the scene.

        Args:
            seed: Seed of everything in the sequence.
            width: Frame width in pixels (>= 32).
            height: Frame height in pixels (>= 32).
            num_objects: Number of objects, or an inclusive ``(min, max)`` range to draw it
                from.
            events: Occluders and crossings to build in (tracking scenes), or None for a
                plain sequence.

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
        # Drawn from the generator only with events, so plain sequences stay as they were.
        self.occluders: Occluders | None = None
        if events is not None:
            self.occluders = sample_occluders(rng, self.exposure, events.occluders)
        self.objects = self._sample_objects(rng, int(rng.integers(low, high + 1)))
        if events is not None and self.occluders is not None:
            self.objects = steer_objects(rng, self.objects, self.occluders, events)

    def _sample_objects(self, rng: np.random.Generator, count: int) -> list[MovingObject]:
        """Objects whose output colours stand out from the backgrounds and each other."""

        def develop(colors: np.ndarray) -> np.ndarray:
            return self.exposure.develop_colors(colors, self.width / 2, self.height / 2)

        looks = [self.background]
        if self.occluders is not None:
            looks.append(self.occluders.texture)
        avoid = np.concatenate(
            [
                cv2.resize(look, (16, 9), interpolation=cv2.INTER_AREA).reshape(-1, 3)
                for look in looks
            ]
        ).astype(np.int64)
        largest = None
        if self.occluders is not None and self.occluders.narrowest is not None:
            largest = OBJECT_TO_OCCLUDER * self.occluders.narrowest
        objects = []
        for _ in range(count):
            moving = sample_moving_object(rng, self.width, self.height, avoid, develop, largest)
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
        """Objects labelled in a frame, in draw order (back to front).

        Args:
            index: Frame index (>= 0).

        Returns:
            The objects that obey the truncation and occlusion rules in that frame (and,
            with occluders, are not too hidden behind them).
        """
        shown = self._visible(index)
        labelled, _ = self._label_rule(shown)
        return [obj for (obj, _), keep in zip(shown, labelled, strict=True) if keep]

    def labels(self, index: int) -> Frame:
        """A frame's ground truth without rendering it (about 10x cheaper than :meth:`frame`).

        Args:
            index: Frame index (>= 0).

        Returns:
            What :meth:`frame` returns for ``index``, with a ``[0, 0, 3]`` image.
        """
        return self._annotate(np.zeros((0, 0, 3), dtype=np.uint8), self._visible(index))

    def _label_rule(
        self, shown: list[tuple[SceneObject, Raster]]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Which drawn objects are labelled, and the share of each that occluders leave.

        Returns:
            ``[N]`` bool, and ``[N]`` float32 visibility (None without occluders).
        """
        if self.occluders is None:
            return np.ones(len(shown), dtype=bool), None
        visibility = np.array(
            [self.occluders.visibility(obj.polygon) for obj, _ in shown], dtype=np.float32
        ).reshape(-1)
        in_frame = np.array([raster.in_frame_fraction for _, raster in shown]).reshape(-1)
        return in_frame * visibility >= MIN_IN_FRAME_FRACTION, visibility

    def _annotate(self, image: np.ndarray, shown: list[tuple[SceneObject, Raster]]) -> Frame:
        """Package drawn objects as a frame: the labelled ones, and any hidden by occluders."""
        objects = [obj for obj, _ in shown]
        boxes = np.array([polygon_box(obj.polygon) for obj in objects], dtype=np.float64)
        boxes = clip_boxes(boxes.reshape(-1, 4), self.width, self.height)
        class_ids = np.array([obj.class_id for obj in objects], dtype=np.int64)
        track_ids = np.array([obj.track_id for obj in objects], dtype=np.int64)
        labelled, visibility = self._label_rule(shown)
        if self.occluders is None or visibility is None:
            polygons = tuple(obj.polygon for obj in objects)
            return Frame(image, boxes, class_ids, track_ids, polygons)
        boxes = self.occluders.clip_boxes(boxes)
        hidden = ~labelled
        return Frame(
            image=image,
            boxes=boxes[labelled],
            class_ids=class_ids[labelled],
            track_ids=track_ids[labelled],
            polygons=tuple(
                obj.polygon for obj, keep in zip(objects, labelled, strict=True) if keep
            ),
            visibility=visibility[labelled],
            hidden=HiddenObjects(
                boxes[hidden], class_ids[hidden], track_ids[hidden], visibility[hidden]
            ),
            occluders=self.occluders.boxes,
        )

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
        if self.occluders is not None:
            self.occluders.draw(image)
        brightness = self.flicker * math.sin(self.flicker_rate * index) + rng.normal(0, 1.0)
        image = apply_sensor(image, self.look, rng, brightness)
        return self._annotate(image, shown)
