"""The letterbox constants and the detector input size, in one light module (no torch/cv2).

``model_repository/preprocess/1/dali.py`` imports them at serialization time inside the
Triton container, and :mod:`camdet.geometry` re-exports them for everything else. The
tests tie the model configs' ``[3, H, W]`` dims to :data:`INPUT_SHAPE`.

The input size is the one setting ``CAMDET_INPUT_SIZE`` (``WIDTHxHEIGHT``, default
``640x640``), read here when the module is imported: the DALI preprocess graphs, the
postprocess's inverse letterbox, the engine builder's profile and the letterbox tests all
read :data:`INPUT_SHAPE`; ``camdet model add`` writes it into the configs. ``640x384``
suits 16:9 cameras: a 1920x1080 frame letterboxes to 640x360 either way, and 640x384 drops
the 280 rows of padding (40 % fewer pixels to run the detector on).
"""

import os
import re

INPUT_SIZE: int = 640
"""Long side of the detector input, in pixels: the demo detector was trained at 640x640."""

MAX_STRIDE: int = 32
"""Largest stride of the YOLO head: each input side must be a multiple of it."""

INPUT_SIZES: dict[str, tuple[int, int]] = {"640x640": (640, 640), "640x384": (384, 640)}
"""The offered input sizes, ``WIDTHxHEIGHT`` -> ``(height, width)`` in pixels."""


def parse_input_size(text: str) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT`` (or one number for a square) into ``(height, width)``.

    Args:
        text: E.g. ``"640x384"``, ``"640"``.

    Returns:
        ``(height, width)`` in pixels, both positive multiples of :data:`MAX_STRIDE`.

    Raises:
        ValueError: If the text is not a size, or a side is not a multiple of 32.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if match is None:
        raise ValueError(f"input size {text!r} is not WIDTHxHEIGHT, e.g. 640x384")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if min(width, height) <= 0 or width % MAX_STRIDE or height % MAX_STRIDE:
        raise ValueError(
            f"input size {width}x{height}: both sides must be positive multiples of "
            f"{MAX_STRIDE} (the detector's largest stride)"
        )
    return height, width


def format_input_size(shape: tuple[int, int]) -> str:
    """``(height, width)`` -> ``"WIDTHxHEIGHT"``, the form of ``CAMDET_INPUT_SIZE``."""
    return f"{shape[1]}x{shape[0]}"


INPUT_SHAPE: tuple[int, int] = parse_input_size(os.environ.get("CAMDET_INPUT_SIZE", "640x640"))
"""``(height, width)`` of the detector input, in pixels (``CAMDET_INPUT_SIZE``)."""

INPUT_HEIGHT, INPUT_WIDTH = INPUT_SHAPE

PAD_VALUE: int = 114
"""Grey level of the letterbox padding (all three channels), as ultralytics trains it."""

PIXEL_SCALE: float = 1.0 / 255.0
"""Factor from 8-bit pixel values to the detector's [0, 1] input range."""
