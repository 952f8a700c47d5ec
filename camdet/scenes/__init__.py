"""Synthetic camera scenes with exact ground truth, for training and end-to-end tests.

No pretrained detector can be downloaded where camdet is built, so the project trains its
own small detector on these scenes and every end-to-end test checks boxes against their
truth. A scene is a textured, noisy background with clutter that is *not* any of the
:data:`CLASSES`, plus 0 to :data:`MAX_OBJECTS` filled shapes of the four classes, seen
through a simple camera model (illumination falloff, optical blur, sensor noise, levels /
gamma / colour cast, optional JPEG).

Conventions used everywhere in this package:

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
* Tracking scenes (a :class:`SceneSequence` with :class:`TrackingEvents`) add pillars
  drawn over every object; a pillar clips a box like the frame edge does, an object less
  than half seen is not labelled (MOT rows with ``conf`` 0, not scored), and objects pass
  behind pillars and cross each other by construction (:mod:`~camdet.scenes.events`).
* Object colours are random but keep :data:`MIN_COLOR_DISTANCE` from what lies under them
  in the output image, so no labelled object is invisible.
* COCO category ids are class indices + 1 (:func:`class_id_to_category_id`); COCO image
  ids are the frame's position in the list + 1.

Object sizes scale with the short side of the frame, so a frame rendered directly at the
detector's input scale (e.g. 640x360 for a 1280x720 camera) has the same statistics as the
camera-size frame letterboxed down, at a fraction of the cost (:func:`letterboxed_size`).
Light falloff and the tone curve are applied where colours are made (:class:`Exposure`), so
only blur and noise pass over every pixel: about 25 ms for a 1920x1080 frame on one core.

The package holds one idea per module: :mod:`~camdet.scenes.frame` (classes, rules,
:class:`Frame`), :mod:`~camdet.scenes.shapes` (polygons), :mod:`~camdet.scenes.raster`
(coverage, occupancy), :mod:`~camdet.scenes.camera` (camera model, colours),
:mod:`~camdet.scenes.background`, :mod:`~camdet.scenes.static` (independent frames),
:mod:`~camdet.scenes.motion` and :mod:`~camdet.scenes.sequence` (moving objects with
identities), :mod:`~camdet.scenes.events` (occluders and crossings for tracking),
:mod:`~camdet.scenes.jpeg`, and the ground-truth writers
:mod:`~camdet.scenes.coco`, :mod:`~camdet.scenes.mot` (MOTChallenge tracks) and
:mod:`~camdet.scenes.clips` (H.264 clips). Everything public is importable from
``camdet.scenes`` itself.
"""

from camdet.scenes.background import (
    render_background,
)
from camdet.scenes.camera import (
    CameraLook,
    Exposure,
    add_sensor_noise,
    apply_sensor,
    pick_color,
    sample_camera_look,
)
from camdet.scenes.clips import (
    mot_path,
    write_clip,
)
from camdet.scenes.coco import (
    category_id_to_class_id,
    class_id_to_category_id,
    coco_categories,
    coco_targets,
    to_coco,
    write_image_dataset,
)
from camdet.scenes.events import (
    Occluders,
    TrackingEvents,
    sample_occluders,
    steer_objects,
)
from camdet.scenes.frame import (
    BOX,
    CATEGORY_ID_OFFSET,
    CLASSES,
    DISC,
    MAX_OBJECTS,
    MAX_SIZE_DIVISOR,
    MIN_COLOR_DISTANCE,
    MIN_IN_FRAME_FRACTION,
    MIN_SIZE_DIVISOR,
    MIN_UNOCCLUDED_FRACTION,
    STAR,
    TRIANGLE,
    Frame,
    HiddenObjects,
    SceneObject,
)
from camdet.scenes.jpeg import (
    decode_jpeg,
    encode_jpeg,
)
from camdet.scenes.motion import (
    Motion,
    MovingObject,
    sample_motion,
    sample_moving_object,
)
from camdet.scenes.raster import (
    SUPERSAMPLE,
    Occupancy,
    Raster,
    blend,
    draw_shape,
    rasterize,
)
from camdet.scenes.sequence import (
    SceneSequence,
)
from camdet.scenes.shapes import (
    clip_boxes,
    clip_polygon,
    fit_scale,
    in_frame_fraction,
    letterboxed_size,
    polygon_area,
    polygon_box,
    rotate,
    size_range,
    unit_shape,
)
from camdet.scenes.static import (
    frame_from_objects,
    place_objects,
    render_frame,
)

__all__ = [
    "BOX",
    "CATEGORY_ID_OFFSET",
    "CLASSES",
    "DISC",
    "MAX_OBJECTS",
    "MAX_SIZE_DIVISOR",
    "MIN_COLOR_DISTANCE",
    "MIN_IN_FRAME_FRACTION",
    "MIN_SIZE_DIVISOR",
    "MIN_UNOCCLUDED_FRACTION",
    "STAR",
    "SUPERSAMPLE",
    "TRIANGLE",
    "CameraLook",
    "Exposure",
    "Frame",
    "HiddenObjects",
    "Motion",
    "MovingObject",
    "Occluders",
    "Occupancy",
    "Raster",
    "SceneObject",
    "SceneSequence",
    "TrackingEvents",
    "add_sensor_noise",
    "apply_sensor",
    "blend",
    "category_id_to_class_id",
    "class_id_to_category_id",
    "clip_boxes",
    "clip_polygon",
    "coco_categories",
    "coco_targets",
    "decode_jpeg",
    "draw_shape",
    "encode_jpeg",
    "fit_scale",
    "frame_from_objects",
    "in_frame_fraction",
    "letterboxed_size",
    "mot_path",
    "pick_color",
    "place_objects",
    "polygon_area",
    "polygon_box",
    "rasterize",
    "render_background",
    "render_frame",
    "rotate",
    "sample_camera_look",
    "sample_motion",
    "sample_moving_object",
    "sample_occluders",
    "size_range",
    "steer_objects",
    "to_coco",
    "unit_shape",
    "write_clip",
    "write_image_dataset",
]
