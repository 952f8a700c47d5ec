"""Decode + letterbox pipeline of the ``preprocess`` model (DALI autoserialization).

The DALI backend serializes :func:`preprocess` when it loads the model, with the
container's own DALI. The portable repository runs the very same function through
DALI's Python API (``decode_device="cpu"`` where there is no GPU).

Per frame: decode one encoded JPEG/PNG to RGB, then :func:`camdet.steps.preprocess.graphs.letterbox`
(ultralytics' ``LetterBox`` exactly, and ``camdet.geometry``'s placement) - the same graph
function the video model ``preprocess_video`` runs on frames decoded from H.264/HEVC.
"""

import os

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.plugin.triton import autoserialize

from camdet.steps.preprocess.graphs import letterbox

MAX_BATCH_SIZE = 64
"""Equals ``max_batch_size`` in config.pbtxt (a test ties them)."""

HW_DECODER_LOAD = float(os.environ.get("CAMDET_HW_DECODER_LOAD", "1.0"))
"""Share of JPEG decoding given to the H100/A100 hardware decoder (0..1), read when the
server serializes the pipeline. 1.0 was fastest for 1080p camera frames on an H100
(perf/RESULTS.md); GPUs without the decoder ignore it."""

FANCY_UPSAMPLING = os.environ.get("CAMDET_JPEG_FANCY_UPSAMPLING", "1") != "0"
"""Upsample JPEG chroma on the GPU as libjpeg-turbo does ("fancy" upsampling). nvJPEG's
own upsampling moves colour edges by up to 80 levels against the CPU decoders the
detector was trained and evaluated with, which cost 0.006 mAP@0.5:0.95 on the H100
(perf/RESULTS.md, ``python -m camdet.perf.gpu_parity``)."""

AFFINE = os.environ.get("CAMDET_DALI_AFFINE", "1") != "0"
"""Tie each thread of the ``mixed`` decoder's pool to the GPU's CPUs (DALI's default,
``affine``; ``0`` lets the OS place them). A measurement variable: those threads use ~3-4
CPU ms per served frame against ~0.5 in a plain process. On the 16-core H100 hosts
NVML's CPUs of the GPU are all of them, and unpinned gave the same frames (session 15:
2,116 vs 2,146 frames/s, perf/RESULTS.md)."""


@autoserialize
@pipeline_def(batch_size=MAX_BATCH_SIZE, num_threads=4, device_id=0)
def preprocess(
    decode_device: str = "mixed",
    hw_decoder_load: float = HW_DECODER_LOAD,
    fancy_upsampling: bool = FANCY_UPSAMPLING,
    affine: bool = AFFINE,
):
    """Build the letterbox graph.

    Args:
        decode_device: ``"mixed"`` (GPU decode) or ``"cpu"``.
        hw_decoder_load: Hardware JPEG decoder share, used by ``"mixed"`` only.
        fancy_upsampling: libjpeg-turbo's chroma upsampling on the GPU (``"mixed"`` only;
            the CPU decoder always does it).
        affine: Pin the ``mixed`` decoder's threads to the GPU's CPUs (``"mixed"`` only).

    Returns:
        ``preprocessed_image`` ``[3, INPUT_SIZE, INPUT_SIZE]`` FP16 in [0, 1] and
        ``original_size`` ``[2]`` INT32 (height, width) of the decoded frame, pixels.
    """
    encoded = fn.external_source(name="encoded_image", dtype=types.UINT8, ndim=1, device="cpu")
    decoder_args = (
        {
            "hw_decoder_load": hw_decoder_load,
            "jpeg_fancy_upsampling": fancy_upsampling,
            "affine": affine,
        }
        if decode_device == "mixed"
        else {}
    )
    images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB, **decoder_args)
    # Sizes from the headers, on the CPU: the DALI backend cannot read them back from GPU
    # frames. Both apply the EXIF orientation, so they are the decoded frames' sizes.
    return letterbox(images, fn.peek_image_shape(encoded))
