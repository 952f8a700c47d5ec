"""Letterbox geometry shared by preprocessing, postprocessing, training and benchmarks.

The constants come from :mod:`camdet.constants`; the DALI pipeline
(``model_repository/preprocess/1/dali.py``) implements the same placement on the GPU and
is tested against :func:`letterbox_image`.

The geometry is ultralytics' ``LetterBox(auto=False, scaleup=True, center=True)``:
scale to fit the ``(height, width)`` input (:data:`INPUT_SHAPE`) keeping the aspect ratio,
resize with bilinear interpolation, pad both sides with 114 (the extra pixel of an odd
padding goes to the bottom/right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from camdet.constants import INPUT_SHAPE, INPUT_SIZE, PAD_VALUE, PIXEL_SCALE

Size = int | tuple[int, int]
"""A detector input size: ``(height, width)`` in pixels, or one int for a square."""

__all__ = [
    "INPUT_SHAPE",
    "INPUT_SIZE",
    "PAD_VALUE",
    "PIXEL_SCALE",
    "Letterbox",
    "Size",
    "boxes_to_input",
    "input_hw",
    "letterbox_image",
    "letterbox_params",
    "scale_boxes_to_original",
    "to_model_input",
]


@dataclass(frozen=True)
class Letterbox:
    """Where an original frame lands inside the detector input.

    Attributes:
        gain: Scale factor from original pixels to input pixels.
        new_width: Width of the resized frame inside the input, in input pixels.
        new_height: Height of the resized frame inside the input, in input pixels.
        left: Padding left of the resized frame, in input pixels.
        top: Padding above the resized frame, in input pixels.
    """

    gain: float
    new_width: int
    new_height: int
    left: int
    top: int


def input_hw(size: Size) -> tuple[int, int]:
    """``(height, width)`` of a detector input size given as a pair or a square side."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def letterbox_params(height: int, width: int, size: Size = INPUT_SHAPE) -> Letterbox:
    """Compute ultralytics' letterbox placement of a ``height`` x ``width`` frame.

    Args:
        height: Original frame height in pixels (> 0).
        width: Original frame width in pixels (> 0).
        size: Detector input ``(height, width)`` in pixels, or the side of a square.

    Returns:
        The gain, resized size and top/left padding.

    Raises:
        ValueError: If a dimension is not positive.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    size_h, size_w = input_hw(size)
    gain = min(size_h / height, size_w / width)
    # floor(x + 0.5) rather than Python's round-half-to-even, so that the DALI pipeline
    # (which has no banker's rounding) and this reference agree even on exact halves.
    new_width, new_height = math.floor(width * gain + 0.5), math.floor(height * gain + 0.5)
    # ultralytics rounds (pad / 2 - 0.1): the odd pixel goes to the bottom/right side.
    return Letterbox(
        gain, new_width, new_height, (size_w - new_width) // 2, (size_h - new_height) // 2
    )


def letterbox_image(image: np.ndarray, size: Size = INPUT_SHAPE) -> np.ndarray:
    """Letterbox one frame with OpenCV, as ultralytics' ``LetterBox`` does.

    This is the reference the DALI pipeline is tested against, the naive client-side
    baseline of the benchmarks, and the training-time transform.

    Args:
        image: Frame ``[H, W, 3]`` uint8, any channel order (kept as is).
        size: Output ``(height, width)`` in pixels, or the side of a square.

    Returns:
        Letterboxed frame ``[height, width, 3]`` uint8, padded with :data:`PAD_VALUE`.
    """
    box = letterbox_params(image.shape[0], image.shape[1], size)
    if (box.new_width, box.new_height) != (image.shape[1], image.shape[0]):
        image = cv2.resize(image, (box.new_width, box.new_height), interpolation=cv2.INTER_LINEAR)
    out = np.full((*input_hw(size), 3), PAD_VALUE, dtype=np.uint8)
    out[box.top : box.top + box.new_height, box.left : box.left + box.new_width] = image
    return out


def to_model_input(letterboxed: np.ndarray, dtype: np.dtype = np.float16) -> np.ndarray:
    """Turn a letterboxed RGB frame into the detector's input layout.

    Args:
        letterboxed: Letterboxed frame ``[height, width, 3]`` uint8, RGB.
        dtype: Output floating type (FP16 in production).

    Returns:
        ``[3, height, width]`` array in [0, 1].
    """
    return (letterboxed.transpose(2, 0, 1).astype(np.float32) * PIXEL_SCALE).astype(dtype)


def scale_boxes_to_original(boxes: Any, original_sizes: Any, size: Size = INPUT_SHAPE) -> Any:
    """Map xyxy boxes from letterboxed input pixels back to original pixels, clipped.

    Works for one frame's boxes or for all boxes of a batch at once (each box carries
    the size of its own frame), on numpy arrays (the CPU postprocess, no torch import) or
    on torch tensors on whatever device they live (the GPU postprocess): the same float32
    operations in the same order either way, so both give the same boxes.

    Args:
        boxes: ``[N, 4]`` float xyxy boxes in input pixels (numpy or torch).
        original_sizes: ``[N, 2]`` (height, width) in original pixels of each box's frame,
            or ``[2]`` for one frame (the same kind of array as ``boxes``).
        size: Detector input ``(height, width)`` in pixels, or the side of a square.

    Returns:
        ``[N, 4]`` float32 xyxy boxes in original pixels, clipped to the frame (a new
        array of ``boxes``' kind).
    """
    if isinstance(boxes, np.ndarray):
        xp: Any = np
        sizes = np.asarray(original_sizes, dtype=np.float32).reshape(-1, 2)
        out = boxes.astype(np.float32)  # a copy
    else:
        import torch

        xp = torch
        sizes = original_sizes.to(device=boxes.device, dtype=torch.float32).reshape(-1, 2)
        out = boxes.to(torch.float32).clone()
    height, width = sizes[:, 0], sizes[:, 1]
    size_h, size_w = input_hw(size)
    gain = xp.minimum(size_h / height, size_w / width)
    # The same integer placement as letterbox_params, computed on arrays (the halves are
    # exact in float32, so floor(x / 2) is the integer floor division).
    left = xp.floor((size_w - xp.floor(width * gain + 0.5)) / 2)
    top = xp.floor((size_h - xp.floor(height * gain + 0.5)) / 2)
    out[:, 0::2] = xp.clip((out[:, 0::2] - left[:, None]) / gain[:, None], 0, None)
    out[:, 1::2] = xp.clip((out[:, 1::2] - top[:, None]) / gain[:, None], 0, None)
    out[:, 0::2] = xp.minimum(out[:, 0::2], width[:, None])
    out[:, 1::2] = xp.minimum(out[:, 1::2], height[:, None])
    return out


def boxes_to_input(
    boxes: np.ndarray, height: int, width: int, size: Size = INPUT_SHAPE
) -> np.ndarray:
    """Map xyxy boxes from original pixels into letterboxed input pixels.

    The forward of :func:`scale_boxes_to_original`; training uses it on ground truth.

    Args:
        boxes: ``[N, 4]`` xyxy boxes in original pixels.
        height: Original frame height in pixels.
        width: Original frame width in pixels.
        size: Detector input ``(height, width)`` in pixels, or the side of a square.

    Returns:
        ``[N, 4]`` float32 xyxy boxes in input pixels.
    """
    box = letterbox_params(height, width, size)
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * box.gain
    out[:, 0::2] += box.left
    out[:, 1::2] += box.top
    return out
