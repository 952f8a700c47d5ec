"""Decode + letterbox pipeline of the ``preprocess`` model (DALI autoserialization).

The DALI backend serializes :func:`preprocess` when it loads the model, with the
container's own DALI. The portable repository runs the very same function through
DALI's Python API (``decode_device="cpu"`` where there is no GPU).

Per frame: decode one encoded JPEG/PNG to RGB, resize with bilinear interpolation
(no antialiasing, like ``cv2.INTER_LINEAR``) so the frame fits ``INPUT_SIZE`` keeping its
aspect ratio, pad both sides with ``PAD_VALUE`` (odd pixel bottom/right), scale to [0, 1]
and emit FP16 CHW - ultralytics' ``LetterBox`` exactly, and ``camdet.geometry``'s placement.
"""

import os

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.plugin.triton import autoserialize

from camdet.constants import INPUT_SIZE, PAD_VALUE, PIXEL_SCALE

MAX_BATCH_SIZE = 64
"""Equals ``max_batch_size`` in config.pbtxt (a test ties them)."""

HW_DECODER_LOAD = float(os.environ.get("CAMDET_HW_DECODER_LOAD", "0.65"))
"""Share of JPEG decoding given to the H100/A100 hardware decoder (0..1), read when the
server serializes the pipeline. 1.0 was fastest for 1080p camera frames on an H100."""


@autoserialize
@pipeline_def(batch_size=MAX_BATCH_SIZE, num_threads=4, device_id=0)
def preprocess(decode_device: str = "mixed", hw_decoder_load: float = HW_DECODER_LOAD):
    """Build the letterbox graph.

    Args:
        decode_device: ``"mixed"`` (GPU decode) or ``"cpu"``.
        hw_decoder_load: Hardware JPEG decoder share, used by ``"mixed"`` only.

    Returns:
        ``preprocessed_image`` ``[3, INPUT_SIZE, INPUT_SIZE]`` FP16 in [0, 1] and
        ``original_size`` ``[2]`` INT32 (height, width) of the decoded frame, pixels.
    """
    encoded = fn.external_source(name="encoded_image", dtype=types.UINT8, ndim=1, device="cpu")
    decoder_args = {"hw_decoder_load": hw_decoder_load} if decode_device == "mixed" else {}
    images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB, **decoder_args)

    size = fn.cast(images.shape()[0:2], dtype=types.FLOAT)
    height, width = size[0], size[1]
    gain = dmath.min(INPUT_SIZE / height, INPUT_SIZE / width)
    new_height = dmath.floor(height * gain + 0.5)
    new_width = dmath.floor(width * gain + 0.5)
    resized = fn.resize(
        images,
        resize_x=new_width,
        resize_y=new_height,
        interp_type=types.INTERP_LINEAR,
        antialias=False,
    )
    top = dmath.floor((INPUT_SIZE - new_height) / 2)
    left = dmath.floor((INPUT_SIZE - new_width) / 2)
    padded = fn.slice(
        resized,
        start=fn.cast(fn.stack(-top, -left), dtype=types.INT32),
        shape=[INPUT_SIZE, INPUT_SIZE],
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
    original_size = fn.cast(images.shape()[0:2], dtype=types.INT32)
    return image, original_size
