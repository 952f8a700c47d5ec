"""Letterbox decoded video frames with the ``preprocess`` model's own DALI graph.

Frames come from the per-camera decoders as RGB ``[H, W, 3]`` uint8 - numpy arrays (CPU,
PyAV) or torch CUDA tensors (NVDEC) - and enter DALI through ``external_source`` on the
same device, so GPU frames never visit the host. The graph after that is
:func:`camdet.steps.preprocess.graphs.letterbox`, the one ``preprocess/1/dali.py`` runs on JPEGs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from camdet.steps.preprocess.graphs import letterbox

FRAMES = "frames"
"""Name of the pipeline's ``external_source``."""


@pipeline_def
def frames_pipeline(frames_device: str = "cpu"):
    """Letterbox graph over decoded RGB frames fed by :meth:`VideoLetterbox.run`.

    Args:
        frames_device: Where the fed frames live: ``"cpu"`` or ``"gpu"``.

    Returns:
        ``preprocessed_image`` ``[3, INPUT_HEIGHT, INPUT_WIDTH]`` FP16 and ``original_size``
        ``[2]`` INT32 (height, width in pixels of the decoded frame), as :func:`letterbox`
        returns them.
    """
    frames = fn.external_source(
        name=FRAMES, dtype=types.UINT8, ndim=3, layout="HWC", device=frames_device
    )
    return letterbox(frames)


class VideoLetterbox:
    """A built :func:`frames_pipeline`, run synchronously batch by batch."""

    def __init__(
        self, max_batch_size: int, num_threads: int, device_id: int | None, on_gpu: bool = True
    ) -> None:
        """Build the pipeline once.

        Args:
            max_batch_size: Most frames per :meth:`run`.
            num_threads: DALI CPU threads.
            device_id: CUDA device of the pipeline, or None for a CPU-only pipeline.
            on_gpu: With a device: whether the fed frames are CUDA tensors (NVDEC) or
                host arrays (PyAV); the letterbox runs where the frames are.
        """
        self.pipe = frames_pipeline(
            batch_size=max_batch_size,
            num_threads=num_threads,
            device_id=device_id,
            frames_device="gpu" if device_id is not None and on_gpu else "cpu",
            prefetch_queue_depth=1,
        )
        self.pipe.build()

    def run(self, frames: list[Any]) -> tuple[Any, Any]:
        """Letterbox frames (``[H, W, 3]`` uint8 RGB each, sizes may differ).

        Returns:
            ``[N, 3, INPUT_HEIGHT, INPUT_WIDTH]`` FP16 and ``[N, 2]`` INT32 (height, width):
            numpy arrays for CPU output, torch CUDA tensors for GPU output; owned by the
            caller.
        """
        self.pipe.feed_input(FRAMES, frames)
        image, size = self.pipe.run()
        return _owned(image.as_tensor()), _owned(size.as_tensor())


def _owned(tensor: Any) -> Any:
    """Copy a DALI output out of the pipeline's buffers, which the next run reuses."""
    if tensor.__dlpack_device__()[0] == 2:  # kDLCUDA
        import torch

        return torch.from_dlpack(tensor).clone()
    return np.array(tensor)
