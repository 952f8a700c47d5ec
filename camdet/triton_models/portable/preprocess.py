"""Portable ``preprocess``: the production ``1/dali.py`` pipeline run through DALI's Python API.

Thin adapter over :class:`camdet.steps.preprocess.runner.BatchPreprocessor`, which runs
the batch, isolates the frames the decoder refuses (the DALI backend would fail the
whole batch) and bounds the decoder's memory on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from camdet.steps.preprocess.runner import BatchPreprocessor, split_rows
from camdet.triton_models.common import (
    DeviceStats,
    error_response,
    guarded_execute,
    instance_device,
    load_config,
    parameter,
    tensor_names,
)


def preprocessor(args: dict[str, str], config: dict, device_id: int | None) -> BatchPreprocessor:
    """The pipeline of the ``preprocess`` config ``config``, in model folder ``args``'s.

    Args:
        args: ``initialize``'s arguments of the model whose folder holds ``1/dali.py``.
        config: The ``preprocess`` model config (``max_batch_size``, ``num_threads``,
            optional ``max_batch_pixels``).
        device_id: CUDA device, or None for the CPU.
    """
    budget = parameter(config, "max_batch_pixels", "0")
    return BatchPreprocessor(
        Path(args["model_repository"]) / args["model_version"] / "dali.py",
        int(config["max_batch_size"]),
        int(parameter(config, "num_threads", str(os.cpu_count() or 1))),
        device_id,
        int(budget) or None,
    )


class TritonPythonModel:
    """Decode + letterbox a batch of encoded frames with the production DALI pipeline."""

    def initialize(self, args: dict[str, str]) -> None:
        """Build the pipeline once, on this instance's GPU or on the CPU."""
        config = load_config(args)
        (self.input_name,) = tensor_names(config, "input")
        self.output_names = tensor_names(config, "output")
        device_id = instance_device(args)
        self.preprocessor = preprocessor(args, config, device_id)
        where = "cpu" if device_id is None else f"cuda:{device_id}"
        pb_utils.Logger.log_info(f"preprocess: DALI pipeline on {where}")
        self.stats = DeviceStats(args["model_name"])

    @guarded_execute
    def execute(self, requests: list) -> list:
        """Run all requests as one DALI batch; a frame the decoder refuses fails alone."""
        with self.stats.phase("inputs"):
            frames = [
                pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
            ]
        with self.stats.phase("pipeline"):
            result = self.preprocessor.run(frames)
        if result.outputs:
            self.stats.record(
                {self.input_name: frames},
                {name: [o] for name, o in zip(self.output_names, result.outputs, strict=True)},
            )
        with self.stats.phase("outputs"):
            answered = [n for n in result.rows if n]
            parts = iter(zip(*(split_rows(o, answered) for o in result.outputs), strict=True))
            return [
                error_response(result.errors[i])
                if i in result.errors
                else pb_utils.InferenceResponse(self._tensors(next(parts)))
                for i in range(len(requests))
            ]

    def _tensors(self, arrays: tuple) -> list:
        # numpy on the CPU, torch on a GPU: told apart without importing torch (CPU installs
        # have none).
        return [
            pb_utils.Tensor(name, np.ascontiguousarray(a))
            if isinstance(a, np.ndarray)
            else pb_utils.Tensor.from_dlpack(name, a)
            for name, a in zip(self.output_names, arrays, strict=True)
        ]
