"""COCO detection ground truth: category ids, writers and readers, image datasets."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from camdet.scenes.frame import CATEGORY_ID_OFFSET, CLASSES, Frame
from camdet.scenes.jpeg import encode_jpeg
from camdet.scenes.static import render_frame

logger = logging.getLogger(__name__)


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
