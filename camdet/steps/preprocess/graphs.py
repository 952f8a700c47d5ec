"""DALI graph pieces shared by every camdet pipeline: the ultralytics letterbox.

``model_repository/preprocess/1/dali.py`` (JPEG/PNG frames, autoserialized by the DALI
backend) and :mod:`camdet.steps.video.letterbox` (frames decoded from H.264/HEVC) both call
:func:`letterbox`, so the two inputs reach the detector through one graph. Only DALI and
:mod:`camdet.constants` are imported here: the container imports this module when it
serializes ``dali.py``.
"""

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode

from camdet.constants import INPUT_HEIGHT, INPUT_WIDTH, PAD_VALUE, PIXEL_SCALE


def letterbox(images: DataNode, shapes: DataNode | None = None) -> tuple[DataNode, DataNode]:
    """Letterbox RGB frames for the detector (ultralytics ``LetterBox``, centered padding).

    Resizes with bilinear interpolation (no antialiasing, like ``cv2.INTER_LINEAR``) so
    the frame fits ``INPUT_HEIGHT`` x ``INPUT_WIDTH`` (``CAMDET_INPUT_SIZE``) keeping its
    aspect ratio, pads both sides with ``PAD_VALUE`` (odd pixel bottom/right), scales to
    [0, 1] and emits FP16 CHW: the placement of :func:`camdet.geometry.letterbox_params`.

    Args:
        images: ``[H, W, 3]`` uint8 RGB frames (any size per sample), CPU or GPU.
        shapes: Each frame's ``[H, W, C]`` on the CPU, known before decoding (e.g.
            ``fn.peek_image_shape`` of the encoded frames); default ``images.shape()``.
            GPU frames need it in the DALI backend, whose executor does not copy a GPU
            batch's shapes back to the CPU ("GPU->CPU transitions are not allowed in
            legacy execution model", measured on the H100); DALI's Python API does.

    Returns:
        ``preprocessed_image`` ``[3, INPUT_HEIGHT, INPUT_WIDTH]`` FP16 in [0, 1] and
        ``original_size`` ``[2]`` INT32 (height, width) of each frame, pixels.
    """
    height_width = (images.shape() if shapes is None else shapes)[0:2]
    size = fn.cast(height_width, dtype=types.FLOAT)
    height, width = size[0], size[1]
    gain = dmath.min(INPUT_HEIGHT / height, INPUT_WIDTH / width)
    new_height = dmath.floor(height * gain + 0.5)
    new_width = dmath.floor(width * gain + 0.5)
    resized = fn.resize(
        images,
        resize_x=new_width,
        resize_y=new_height,
        interp_type=types.INTERP_LINEAR,
        antialias=False,
    )
    top = dmath.floor((INPUT_HEIGHT - new_height) / 2)
    left = dmath.floor((INPUT_WIDTH - new_width) / 2)
    padded = fn.slice(
        resized,
        start=fn.cast(fn.stack(-top, -left), dtype=types.INT32),
        shape=[INPUT_HEIGHT, INPUT_WIDTH],
        axis_names="HW",
        out_of_bounds_policy="pad",
        fill_values=PAD_VALUE,
    )
    image = fn.crop_mirror_normalize(
        padded,
        dtype=types.FLOAT16,
        output_layout="CHW",
        mean=[0.0],
        std=[1.0 / PIXEL_SCALE],
    )
    original_size = fn.cast(height_width, dtype=types.INT32)
    return image, original_size
