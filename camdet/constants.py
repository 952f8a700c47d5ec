"""The letterbox constants, in one light module (no torch/cv2 import).

``model_repository/preprocess/1/dali.py`` imports them at serialization time inside the
Triton container, and :mod:`camdet.geometry` re-exports them for everything else. The
tests tie the model configs' ``[3, 640, 640]`` dims to :data:`INPUT_SIZE`.
"""

INPUT_SIZE: int = 640
"""Side of the square detector input, in pixels."""

PAD_VALUE: int = 114
"""Grey level of the letterbox padding (all three channels), as ultralytics trains it."""

PIXEL_SCALE: float = 1.0 / 255.0
"""Factor from 8-bit pixel values to the detector's [0, 1] input range."""
