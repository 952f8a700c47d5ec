"""Portable ``detector``: the detector's ``model.onnx`` through ONNX Runtime.

Same tensor contract as the TensorRT plan (FP16 ``images`` in, FP16 ``output0`` out);
the cast to and from the ONNX's own float type happens here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from camdet.runtime.sessions import ORT_FLOAT_TYPES, onnx_session
from camdet.steps.preprocess.heap import give_back_heap
from camdet.triton_models.common import (
    DeviceStats,
    guarded_execute,
    load_config,
    output_dtype,
    parameter,
    tensor_names,
)


class TritonPythonModel:
    """Run all requests of a batch through one ONNX Runtime session call."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the ONNX beside this file's repository copy, once."""
        config = load_config(args)
        (self.input_name,) = tensor_names(config, "input")
        (self.output_name,) = tensor_names(config, "output")
        self.output_dtype = output_dtype(config, self.output_name)
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        threads = int(parameter(config, "intra_op_threads", str(os.cpu_count() or 1)))
        self.session = onnx_session(path, threads)
        # ONNX Runtime's CPU arena keeps every chunk it ever grew to: batches of varying
        # size grew each instance by ~360 MiB for good (issue #12). Shrinking it after each
        # run gives back the chunks beyond the first allocation, and trimming the heap
        # after it hands them to the system (perf/RESULTS.md: soak).
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        onnx_input = self.session.get_inputs()[0]
        self.onnx_input_name = onnx_input.name
        self.onnx_input_dtype = ORT_FLOAT_TYPES[onnx_input.type]
        self.stats = DeviceStats(args["model_name"])

    @guarded_execute
    def execute(self, requests: list) -> list:
        """Concatenate the requests, infer once, split the result back."""
        with self.stats.phase("inputs"):
            images = [
                pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
            ]
            batch = np.concatenate(images).astype(self.onnx_input_dtype, copy=False)
        with self.stats.phase("compute"):
            (raw,) = self.session.run(None, {self.onnx_input_name: batch}, self.run_options)
            raw = raw.astype(self.output_dtype, copy=False)
        give_back_heap()
        self.stats.record({self.input_name: images}, {self.output_name: [raw]})
        parts = np.split(raw, np.cumsum([len(i) for i in images])[:-1])
        assert len(parts) == len(requests)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, p)]) for p in parts]
