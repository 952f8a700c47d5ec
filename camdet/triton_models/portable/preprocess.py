"""Portable ``preprocess``: the production ``1/dali.py`` pipeline run through DALI's Python API.

The DALI backend fails a whole batch when one sample fails; here a failed batch is retried
frame by frame so that only the bad frames' requests fail. DALI 2.4 keeps a pipeline
usable after a decode error, and rebuilding one per failure leaked ~1 MiB each (issue
#12): it is rebuilt only when it no longer decodes a known-good frame.

Memory (issue #12): on a CPU instance a batch is decoded largest frames first in groups
of at most ``max_batch_pixels`` claimed pixels (:mod:`camdet.steps.preprocess.budget`), which
bounds the decoder buffers DALI keeps for good, and heap pages freed after a large frame
or a failure are handed back to the system (``malloc_trim``). GPU instances decode each
batch whole unless the config sets ``max_batch_pixels``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from nvidia.dali import Pipeline
from nvidia.dali.tensors import TensorCPU, TensorGPU

from camdet.steps.preprocess.budget import DEFAULT_MAX_BATCH_PIXELS, claimed_pixels, plan
from camdet.steps.preprocess.errors import decode_failure
from camdet.steps.preprocess.heap import give_back_heap
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch
from camdet.triton_models.common import (
    DeviceStats,
    error_response,
    guarded_execute,
    instance_device,
    load_config,
    parameter,
    tensor_names,
)


class TritonPythonModel:
    """Decode + letterbox a batch of encoded frames with the production DALI pipeline."""

    def initialize(self, args: dict[str, str]) -> None:
        """Build the pipeline once, on this instance's GPU or on the CPU."""
        config = load_config(args)
        (self.input_name,) = tensor_names(config, "input")
        self.output_names = tensor_names(config, "output")
        self.max_batch_size = int(config["max_batch_size"])
        self.num_threads = int(parameter(config, "num_threads", str(os.cpu_count() or 1)))
        self.device_id = instance_device(args)
        # The budget bounds the host buffers of DALI's CPU decoder. A GPU instance keeps
        # its batches whole: nvJPEG's throughput is in the batch (perf/RESULTS.md, H100),
        # and its memory is device memory bounded by max_batch_size x max_pixels, as in the
        # production DALI backend.
        default_budget = DEFAULT_MAX_BATCH_PIXELS if self.device_id is None else sys.maxsize
        self.max_batch_pixels = int(parameter(config, "max_batch_pixels", str(default_budget)))
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.module = load_pipeline_module(version_dir / "dali.py")
        self.pipe = self._build()
        # A tiny valid JPEG: decoding it tells whether the pipeline survived an error.
        probe = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1]
        self.probe = np.frombuffer(probe.tobytes(), np.uint8)
        where = "cpu" if self.device_id is None else f"cuda:{self.device_id}"
        pb_utils.Logger.log_info(f"preprocess: DALI pipeline on {where}")
        self.stats = DeviceStats(args["model_name"])

    def _build(self) -> Pipeline:
        return build_pipeline(self.module, self.max_batch_size, self.num_threads, self.device_id)

    @guarded_execute
    def execute(self, requests: list) -> list:
        """Run all requests as one DALI batch; on failure, isolate the bad frames."""
        with self.stats.phase("inputs"):
            frames = [
                pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
            ]
        try:
            with self.stats.phase("pipeline"):
                outputs = self._run_bounded([row for f in frames for row in f])
        except RuntimeError:
            self._ensure_usable()
            answers = [self._run_alone(f) for f in frames]
            give_back_heap()
            return answers
        self.stats.record(
            {self.input_name: frames},
            {name: [o] for name, o in zip(self.output_names, outputs, strict=True)},
        )
        with self.stats.phase("outputs"):
            sizes = np.cumsum([len(f) for f in frames])[:-1]
            return [
                pb_utils.InferenceResponse(self._tensors(parts))
                for parts in zip(*(self._split(o, sizes) for o in outputs), strict=True)
            ]

    def _run_alone(self, frames: np.ndarray) -> pb_utils.InferenceResponse:
        try:
            outputs = self._run(list(frames))
        except RuntimeError as exc:
            self._ensure_usable()
            return error_response(decode_failure(frames[0][:4].tobytes(), exc))
        return pb_utils.InferenceResponse(self._tensors(outputs))

    def _ensure_usable(self) -> None:
        """Rebuild the pipeline if a decode error left it unable to decode a valid frame."""
        try:
            self._run([self.probe])
        except RuntimeError:
            self.pipe = self._build()

    def _run_bounded(self, samples: list[np.ndarray]) -> list:
        """:meth:`_run` largest frames first, in groups of at most ``max_batch_pixels``.

        Outputs come back in the order of ``samples``.
        """
        pixels = [claimed_pixels(s) for s in samples]
        order, groups = plan(pixels, self.max_batch_pixels)
        if order == list(range(len(samples))) and len(groups) == 1:
            outputs = self._run(samples)  # the usual camera batch: as it came
        else:
            parts = [self._run([samples[i] for i in order[group]]) for group in groups]
            inverse = np.argsort(order)
            outputs = [_join(list(output), inverse) for output in zip(*parts, strict=True)]
        if max(p or self.max_batch_pixels for p in pixels) > _LARGE_FRAME_PIXELS:
            give_back_heap()
        return outputs

    def _run(self, samples: list[np.ndarray]) -> list:
        """Feed ``samples`` (1-D uint8 encoded frames) and return one array per output."""
        outputs = run_batch(self.pipe, samples)
        return [self._materialize(o.as_tensor()) for o in outputs]

    def _materialize(self, tensor: TensorCPU | TensorGPU) -> np.ndarray | torch.Tensor:
        # DALI reuses its output buffers on the next run: copy out before returning.
        if hasattr(tensor, "__dlpack_device__") and tensor.__dlpack_device__()[0] == 2:
            return torch.from_dlpack(tensor).clone()
        return np.array(tensor)

    @staticmethod
    def _split(batch: np.ndarray | torch.Tensor, sizes: np.ndarray) -> list:
        if isinstance(batch, torch.Tensor):
            return list(torch.tensor_split(batch, sizes.tolist()))
        return np.split(batch, sizes)

    def _tensors(self, arrays: list) -> list:
        return [
            pb_utils.Tensor.from_dlpack(name, a)
            if isinstance(a, torch.Tensor)
            else pb_utils.Tensor(name, a)
            for name, a in zip(self.output_names, arrays, strict=True)
        ]


_LARGE_FRAME_PIXELS = 3840 * 2160
"""Above a 4K camera's frame, a batch's freed decode buffers are worth handing back."""


def _join(parts: list, inverse: np.ndarray) -> np.ndarray | torch.Tensor:
    """Concatenate per-run outputs and put the rows back in request order."""
    if isinstance(parts[0], torch.Tensor):
        joined = torch.cat(parts)
        return joined[torch.as_tensor(inverse, device=joined.device)]
    return np.concatenate(parts)[inverse]
