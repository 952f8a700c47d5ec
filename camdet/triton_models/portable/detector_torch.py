"""Portable ``detector`` on a GPU: ``model.onnx`` through torch (FP16, CUDA graphs).

Inputs arrive on the GPU by DLPack from ``preprocess`` and outputs leave by DLPack to
``postprocess``: no host round trip. Same tensor contract as the TensorRT plan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from camdet.runtime.torch_graphs import GraphRunner, load_detector
from camdet.triton_models.common import (
    DeviceStats,
    guarded_execute,
    instance_device,
    join_on,
    load_config,
    output_dtype,
    tensor_names,
)


def torch_dtype(numpy_type: object) -> torch.dtype:
    """The torch dtype of a numpy dtype (``np.float16`` -> ``torch.float16``)."""
    return torch.from_numpy(np.zeros(0, numpy_type)).dtype


def graph_runner(config: dict, onnx_path: Path, device: torch.device) -> GraphRunner:
    """The ``detector`` config's ONNX on ``device``, with a CUDA graph per batch size.

    Args:
        config: The ``detector`` model config (Triton's JSON form): its input's dtype and
            ``[3, H, W]`` dims, ``preferred_batch_size`` and ``max_batch_size`` (the
            captured sizes).
        onnx_path: The detector's ``model.onnx``.
        device: Where it runs (eagerly on the CPU).
    """
    (input_name,) = tensor_names(config, "input")
    in_config = pb_utils.get_input_config_by_name(config, input_name)
    dtype = torch_dtype(pb_utils.triton_string_to_numpy(in_config["data_type"]))
    dims = tuple(int(d) for d in in_config["dims"])  # [3, H, W]
    module = load_detector(onnx_path, device, dtype == torch.float16, (dims[1], dims[2]))
    sizes = [int(s) for s in config.get("dynamic_batching", {}).get("preferred_batch_size", [])]
    return GraphRunner(module, dims, [*sizes, int(config["max_batch_size"])], dtype, device)


class TritonPythonModel:
    """One graph replay per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        """Convert the ONNX, move it to this instance's GPU, capture the graphs."""
        config = load_config(args)
        (self.input_name,) = tensor_names(config, "input")
        (self.output_name,) = tensor_names(config, "output")
        device_id = instance_device(args)
        self.device = torch.device("cpu" if device_id is None else f"cuda:{device_id}")
        self.output_dtype = torch_dtype(output_dtype(config, self.output_name))
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.runner = graph_runner(config, path, self.device)
        pb_utils.Logger.log_info(f"detector: torch on {self.device}, graphs {self.runner.sizes}")
        self.stats = DeviceStats(args["model_name"])

    @guarded_execute
    def execute(self, requests: list) -> list:
        """Join the requests on this instance's device, run once, split back."""
        with self.stats.phase("inputs"):
            images = [
                torch.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name).to_dlpack())
                for r in requests
            ]
            batch = join_on(images, self.device)
        with self.stats.phase("compute"):
            raw = self.runner(batch).to(self.output_dtype)
        self.stats.record({self.input_name: images}, {self.output_name: [raw]})
        parts = raw.split([len(i) for i in images])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(self.output_name, p)])
            for p in parts
        ]
