"""Static frames: independent random scenes, for training and single-image tests."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from camdet.scenes.background import render_background
from camdet.scenes.camera import Exposure, apply_sensor, pick_color, sample_camera_look
from camdet.scenes.frame import CLASSES, MAX_OBJECTS, Frame, SceneObject, _check_size
from camdet.scenes.jpeg import decode_jpeg, encode_jpeg
from camdet.scenes.raster import Occupancy, Raster, rasterize
from camdet.scenes.shapes import (
    _ASPECT_LIMITS,
    _ROTATING,
    _log_uniform,
    clip_boxes,
    fit_scale,
    polygon_box,
    rotate,
    size_range,
    unit_shape,
)

_PLACEMENT_ATTEMPTS = 30

_TRUNCATION_PROBABILITY = 0.2  # share of static-frame objects allowed to cross the border


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
