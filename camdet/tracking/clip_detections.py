"""The detector's output on a clip's frames: made in this process, kept in an ``.npz``.

:func:`detect_clip` renders a clip, passes every frame through JPEG and a frame detector
(:func:`onnx_detector`: the serving math on the CPU); :func:`save_detections` and
:func:`load_detections` keep the result, so that tracker settings compare on the same boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from camdet.contract import FrameDetections
from camdet.geometry import letterbox_image
from camdet.runtime.runners import onnx_predictor
from camdet.scenes import SceneSequence, decode_jpeg, encode_jpeg
from camdet.scenes.mot import TrackTruth, truth_of
from camdet.steps.postprocess.detections import postprocess


def onnx_detector(path: Path) -> Callable[[np.ndarray], FrameDetections]:
    """The serving math on the CPU: letterbox, ONNX Runtime, :func:`postprocess`.

    The detector is :func:`camdet.runtime.runners.onnx_predictor` (uint8 pixels scaled to
    [0, 1] in FP32); the boxes' colours are read from the letterboxed frame in FP16.

    Args:
        path: The detector's ONNX file.

    Returns:
        A function from an ``[H, W, 3]`` uint8 RGB frame to its detections.
    """
    predict = onnx_predictor(path)

    def detect(image: np.ndarray) -> FrameDetections:
        letterboxed = torch.from_numpy(letterbox_image(image).transpose(2, 0, 1).copy())[None]
        raw = predict(letterboxed)
        sizes = torch.tensor([image.shape[:2]])
        found = postprocess(raw, sizes, images=letterboxed.to(torch.float16) / 255)[0]
        return found.numpy()

    return detect


def detect_clip(
    sequence: SceneSequence,
    num_frames: int,
    detect: Callable[[np.ndarray], FrameDetections],
    jpeg_quality: int = 90,
) -> tuple[list[TrackTruth], list[FrameDetections]]:
    """Render a clip, pass every frame through JPEG and the detector.

    Returns:
        Ground truth and detections per frame.
    """
    truths, detections = [], []
    for index in range(num_frames):
        frame = sequence.frame(index)
        truths.append(truth_of(frame))
        detections.append(detect(decode_jpeg(encode_jpeg(frame.image, jpeg_quality))))
    return truths, detections


_SAVED = ("boxes", "scores", "class_ids", "colors")
"""Fields of :class:`FrameDetections` in a detections file (``colors`` may be missing)."""


def save_detections(
    path: Path, clips: Sequence[Sequence[FrameDetections]], first_seed: int | None = None
) -> None:
    """Write every clip's detections to one ``.npz`` (see :func:`load_detections`).

    ``first_seed`` (the seed of the first clip) is kept with them if given, so that
    :func:`evaluate` refuses to score them against other clips (:func:`detections_seed`).
    """
    arrays: dict[str, np.ndarray] = {}
    if first_seed is not None:
        arrays["first_seed"] = np.array(first_seed, dtype=np.int64)
    for clip, frames in enumerate(clips):
        arrays[f"clip{clip}_counts"] = np.array([len(f.boxes) for f in frames], dtype=np.int64)
        for field in _SAVED:
            parts = [getattr(f, field) for f in frames]
            if any(part is None for part in parts):
                continue
            arrays[f"clip{clip}_{field}"] = np.concatenate(parts) if parts else np.empty(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def detections_seed(path: Path) -> int | None:
    """Seed of the first clip of a detections file (None: written without it)."""
    data = np.load(path)
    return int(data["first_seed"]) if "first_seed" in data.files else None


def load_detections(path: Path) -> list[list[FrameDetections]]:
    """Read detections written by :func:`save_detections`, per clip and frame."""
    data = np.load(path)
    clips = []
    for clip in range(sum(1 for key in data.files if key.endswith("_counts"))):
        ends = np.cumsum(data[f"clip{clip}_counts"])
        split = {
            field: np.split(data[f"clip{clip}_{field}"], ends[:-1])
            for field in _SAVED
            if f"clip{clip}_{field}" in data.files
        }
        colors = split.get("colors", [None] * len(ends))
        clips.append(
            [
                FrameDetections(b.reshape(-1, 4), s, c, None if k is None else k.reshape(-1, 3))
                for b, s, c, k in zip(
                    split["boxes"], split["scores"], split["class_ids"], colors, strict=True
                )
            ]
        )
    return clips
