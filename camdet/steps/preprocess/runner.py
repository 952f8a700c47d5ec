"""Run the production ``preprocess`` pipeline on a batch of requests, bad frames alone.

The DALI backend fails a whole batch when one sample fails; :class:`BatchPreprocessor`
retries a failed batch request by request so that only the bad frames' requests fail.
DALI 2.4 keeps a pipeline usable after a decode error, and rebuilding one per failure
leaked ~1 MiB each (issue #12): it is rebuilt only when it no longer decodes a known-good
frame.

Memory (issue #12): on the CPU a batch is decoded largest frames first in groups of at
most ``max_batch_pixels`` claimed pixels (:mod:`.budget`), which bounds the decoder
buffers DALI keeps for good, and heap pages freed after a large frame or a failure are
handed back to the system (:mod:`.heap`). On a GPU each batch is decoded whole unless a
budget is given.

Used by the portable ``preprocess`` model and by the one-process GPU ``pipeline`` model
(:mod:`camdet.triton_models.portable.pipeline`); no Triton import here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from camdet.steps.preprocess.budget import DEFAULT_MAX_BATCH_PIXELS, claimed_pixels, plan
from camdet.steps.preprocess.errors import decode_failure
from camdet.steps.preprocess.heap import give_back_heap
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch

LARGE_FRAME_PIXELS = 3840 * 2160
"""Above a 4K camera's frame, a batch's freed decode buffers are worth handing back."""


@dataclass
class Preprocessed:
    """One batch of requests through the pipeline.

    Attributes:
        outputs: Per pipeline output (``preprocessed_image`` ``[N, 3, H, W]`` FP16 and
            ``original_size`` ``[N, 2]`` INT32 for ``dali.py``), the rows of the answered
            requests in request order: numpy arrays (CPU) or torch tensors (GPU), owned.
        rows: Per request, how many rows of ``outputs`` are its frames (0: failed).
        errors: Request index -> the decoder's refusal in words, for failed requests.
    """

    outputs: list[Any]
    rows: list[int]
    errors: dict[int, str]


class BatchPreprocessor:
    """The ``preprocess`` DALI pipeline, built once, run per batch of requests.

    Args:
        dali_py: The model's ``1/dali.py``.
        max_batch_size: Most frames per run (the config's ``max_batch_size``).
        num_threads: DALI CPU threads.
        device_id: CUDA device for ``mixed`` decoding, or None for the CPU.
        max_batch_pixels: Claimed pixels per run (None: the CPU default, whole batches on
            a GPU: nvJPEG's throughput is in the batch, and its memory is device memory
            bounded by ``max_batch_size`` x ``max_pixels``, as in the DALI backend).
    """

    def __init__(
        self,
        dali_py: Path,
        max_batch_size: int,
        num_threads: int,
        device_id: int | None,
        max_batch_pixels: int | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.num_threads = num_threads
        self.device_id = device_id
        default_budget = DEFAULT_MAX_BATCH_PIXELS if device_id is None else sys.maxsize
        self.max_batch_pixels = max_batch_pixels or default_budget
        self.module = load_pipeline_module(dali_py)
        self.pipe = self._build()
        # A tiny valid JPEG: decoding it tells whether the pipeline survived an error.
        probe = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1]
        self.probe = np.frombuffer(probe.tobytes(), np.uint8)

    def _build(self) -> Any:
        return build_pipeline(self.module, self.max_batch_size, self.num_threads, self.device_id)

    def run(self, frames: list[np.ndarray]) -> Preprocessed:
        """Decode and letterbox every request's frames as one batch.

        Args:
            frames: Per request, ``[n, bytes]`` uint8 encoded frames (one row each).

        Returns:
            The outputs of the answered requests; a failed batch is retried request by
            request, and only the requests whose frames the decoder refuses fail.
        """
        rows = [len(f) for f in frames]
        try:
            outputs = self._run_bounded([row for f in frames for row in f])
        except RuntimeError:
            self._ensure_usable()
            result = self._run_each(frames)
            give_back_heap()
            return result
        return Preprocessed(outputs, rows, {})

    def _run_each(self, frames: list[np.ndarray]) -> Preprocessed:
        """Run each request alone: the ones the decoder refuses get their error."""
        parts, rows, errors = [], [], {}
        for index, request_frames in enumerate(frames):
            try:
                parts.append(self._run(list(request_frames)))
                rows.append(len(request_frames))
            except RuntimeError as exc:
                self._ensure_usable()
                errors[index] = decode_failure(request_frames[0][:4].tobytes(), exc)
                rows.append(0)
        outputs = [_concatenate(list(o)) for o in zip(*parts, strict=True)] if parts else []
        return Preprocessed(outputs, rows, errors)

    def _ensure_usable(self) -> None:
        """Rebuild the pipeline if a decode error left it unable to decode a valid frame."""
        try:
            self._run([self.probe])
        except RuntimeError:
            self.pipe = self._build()

    def _run_bounded(self, samples: list[np.ndarray]) -> list[Any]:
        """:meth:`_run` largest frames first, in groups of at most ``max_batch_pixels``.

        Outputs come back in the order of ``samples``.
        """
        pixels = [claimed_pixels(s) for s in samples]
        order, groups = plan(pixels, self.max_batch_pixels)
        if order == list(range(len(samples))) and len(groups) == 1:
            outputs = self._run(samples)  # the usual camera batch: as it came
        else:
            parts = [self._run([samples[i] for i in order[group]]) for group in groups]
            inverse = np.argsort(order).tolist()  # a list indexes numpy and torch alike
            outputs = [_concatenate(list(o))[inverse] for o in zip(*parts, strict=True)]
        if max(p or self.max_batch_pixels for p in pixels) > LARGE_FRAME_PIXELS:
            give_back_heap()
        return outputs

    def _run(self, samples: list[np.ndarray]) -> list[Any]:
        """Feed ``samples`` (1-D uint8 encoded frames) and return one array per output."""
        return [_owned(o.as_tensor()) for o in run_batch(self.pipe, samples)]


def _owned(tensor: Any) -> Any:
    """Copy a DALI output out of the pipeline's buffers, which the next run reuses."""
    if hasattr(tensor, "__dlpack_device__") and tensor.__dlpack_device__()[0] == 2:  # kDLCUDA
        import torch

        return torch.from_dlpack(tensor).clone()
    return np.array(tensor)


def _concatenate(parts: list[Any]) -> Any:
    """Join per-run outputs along the batch (torch on the GPU, numpy on the CPU)."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def split_rows(batch: Any, rows: list[int]) -> list[Any]:
    """Split a joined output back into per-request parts of ``rows`` rows each."""
    bounds = np.cumsum(rows)[:-1].tolist()
    if isinstance(batch, np.ndarray):
        return np.split(batch, bounds)
    import torch

    return list(torch.tensor_split(batch, bounds))
