"""Frames for INT8 calibration, letterboxed by the project's own letterbox.

ModelOpt's ONNX post-training quantization (:mod:`camdet.engine.precision`) runs the model
on these frames with ONNX Runtime to choose the Q/DQ scales. They go through
:func:`camdet.geometry.letterbox_image`, the reference the DALI preprocess graph is tested
against, so the activations calibrated are the ones served.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camdet.engine.errors import CalibrationError

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CAMERA_SIZES: tuple[tuple[int, int], ...] = (
    (1920, 1080),
    (1280, 720),
    (2560, 1440),
    (640, 480),
    (1080, 1920),
)
"""(width, height) cycled through for synthetic calibration frames, so the letterbox
sees landscape, portrait, up- and down-scaling as real cameras give it."""


@dataclass(frozen=True)
class CalibrationSource:
    """Where INT8 calibration frames come from.

    Attributes:
        images: A folder of JPEG/PNG camera frames, or ``None`` for synthetic scenes.
        frames: Most frames to use.
        seed: Seed of the synthetic scenes.
    """

    images: Path | None
    frames: int
    seed: int = 0

    def describe(self) -> str:
        """One line for the log."""
        if self.images is not None:
            return f"up to {self.frames} frames from {self.images}"
        return f"{self.frames} synthetic scenes (camdet.scenes.render_frame, seed {self.seed})"

    def image_paths(self) -> list[Path]:
        """The folder's images, sorted (empty for synthetic frames)."""
        if self.images is None:
            return []
        return sorted(p for p in Path(self.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    def available(self) -> int:
        """How many frames this source can give."""
        if self.images is None:
            return self.frames
        return min(self.frames, len(self.image_paths()))

    def frames_rgb(self) -> Iterator[np.ndarray]:
        """Frames ``[H, W, 3]`` uint8 RGB, as a camera gives them."""
        if self.images is None:
            return synthetic_frames(self.frames, self.seed)
        return folder_frames(self.image_paths()[: self.frames])


def folder_frames(paths: Iterable[Path]) -> Iterator[np.ndarray]:
    """Decode image files to RGB; an unreadable file is logged and skipped."""
    import cv2

    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            logger.warning("skipping unreadable calibration image %s", path)
            continue
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def synthetic_frames(count: int, seed: int) -> Iterator[np.ndarray]:
    """``count`` synthetic camera scenes at the sizes of :data:`CAMERA_SIZES`.

    Raises:
        CalibrationError: At once (not at the first frame) if ``camdet.scenes`` is missing.
    """
    import numpy as np

    try:
        from camdet.scenes import render_frame
    except ImportError as err:
        raise CalibrationError(
            f"synthetic calibration needs camdet.scenes ({err}); pass --calibration-images"
        ) from err
    rng = np.random.default_rng(seed)
    sizes = itertools.islice(itertools.cycle(CAMERA_SIZES), count)
    return (render_frame(rng, width, height).image for width, height in sizes)


def calibration_array(frames: Iterable[np.ndarray], dtype: Any = "float32") -> np.ndarray:
    """Letterbox frames exactly as serving does, into one calibration tensor.

    Args:
        frames: ``[H, W, 3]`` uint8 RGB frames, as cameras give them.
        dtype: Element type of the ONNX input being calibrated (float32 as exported).

    Returns:
        ``[N, 3, height, width]`` contiguous array in [0, 1], the configured input size
        (:data:`camdet.constants.INPUT_SHAPE`); about 4.9 MB a frame at 640x640 float32.

    Raises:
        CalibrationError: If no frame could be read.
    """
    import numpy as np

    from camdet.geometry import letterbox_image, to_model_input

    inputs = [to_model_input(letterbox_image(frame), dtype) for frame in frames]
    if not inputs:
        raise CalibrationError("INT8 calibration got no readable frame")
    return np.ascontiguousarray(np.stack(inputs))
