"""Portable ``preprocess``: the production ``1/dali.py`` pipeline run through DALI's Python API.

The DALI backend fails a whole batch when one sample fails; here a failed batch is retried
frame by frame so that only the bad frames' requests fail (the pipeline is rebuilt after
each failure, since DALI invalidates a pipeline that raised).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from nvidia.dali import Pipeline
from nvidia.dali.tensors import TensorCPU, TensorGPU

from camdet.dali_runner import build_pipeline, load_pipeline_module, run_batch
from camdet.triton_models.common import (
    DeviceStats,
    error_response,
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
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.module = load_pipeline_module(version_dir / "dali.py")
        self.pipe = self._build()
        where = "cpu" if self.device_id is None else f"cuda:{self.device_id}"
        pb_utils.Logger.log_info(f"preprocess: DALI pipeline on {where}")
        self.stats = DeviceStats(args["model_name"])

    def _build(self) -> Pipeline:
        return build_pipeline(self.module, self.max_batch_size, self.num_threads, self.device_id)

    def execute(self, requests: list) -> list:
        """Run all requests as one DALI batch; on failure, isolate the bad frames."""
        with self.stats.phase("inputs"):
            frames = [
                pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
            ]
        try:
            with self.stats.phase("pipeline"):
                outputs = self._run([row for f in frames for row in f])
        except RuntimeError:
            self.pipe = self._build()
            return [self._run_alone(f) for f in frames]
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
            self.pipe = self._build()
            return error_response(f"cannot decode image: {_dali_error_summary(exc)}")
        return pb_utils.InferenceResponse(self._tensors(outputs))

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


def _dali_error_summary(exc: Exception) -> str:
    """The informative end of a DALI error (its last three non-boilerplate lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Critical error", "Current pipeline"))]
    return " ".join(useful[-3:]) if useful else str(exc)
