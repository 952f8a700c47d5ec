"""``detect_pipeline``: ``preprocess``, ``detector`` and ``postprocess`` in one process.

On a GPU the portable ``detect`` ensemble is ``validate`` -> this model
(:func:`camdet.serving.portable.generate_portable_repository`). As three Python-backend
models, each frame's 2.4 MB letterboxed image crossed process boundaries twice and the
head output once: 881 frames/s at 256 cameras on an H200, against 1,103 for this model
(perf/RESULTS.md, session 6, where decoding is now most of each batch). Here one process
decodes a batch with the production ``dali.py``, runs the detector (torch FP16 with CUDA
graphs; ONNX Runtime on a CPU) and postprocesses on the same device; only the final
detections reach the host. Several instances overlap on the GPU as separate processes do.

Each step runs its own code with its own config, read from the repository
(:func:`~camdet.triton_models.common.step_args`): the tensor contracts, thresholds, labels
and batch sizes are the ones of ``preprocess``, ``detector`` and ``postprocess``, and
errors read as they do there (a frame the decoder refuses fails alone, a bad threshold
fails its request).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from camdet.serving.portable import PIPELINE_STEPS
from camdet.steps.postprocess.detections import Thresholds
from camdet.triton_models.common import (
    DeviceStats,
    error_response,
    guarded_execute,
    instance_device,
    load_config,
    output_dtype,
    parameter,
    step_args,
    tensor_names,
)
from camdet.triton_models.portable.detector_torch import graph_runner, torch_dtype
from camdet.triton_models.portable.preprocess import preprocessor
from camdet.triton_models.postprocess import IMAGE, RAW, SIZE, Postprocessor


class Detector:
    """The ``detector`` step in this process: ``[B, 3, H, W]`` FP16 -> ``[B, 4 + nc, A]``.

    torch with CUDA graphs on a GPU (what the portable ``detector`` runs there), ONNX
    Runtime on the CPU (likewise), cast to the detector config's output dtype as the
    served step's response would be.

    Args:
        args: The ``detector`` model's ``initialize`` arguments (:func:`step_args`).
        device: This instance's device.
    """

    def __init__(self, args: dict[str, str], device: torch.device) -> None:
        config = load_config(args)
        (output,) = tensor_names(config, "output")
        self.output_dtype = torch_dtype(output_dtype(config, output))
        self.device = device
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if device.type == "cuda":
            self.run = graph_runner(config, path, device)
        else:
            from camdet.runtime.runners import OnnxRuntimeRunner

            threads = int(parameter(config, "intra_op_threads", str(os.cpu_count() or 1)))
            self.run = OnnxRuntimeRunner(path, threads)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Run one batch of letterboxed frames on this device."""
        raw = self.run(images if self.device.type == "cuda" else images.numpy())
        return torch.as_tensor(raw, device=self.device).to(self.output_dtype)


class TritonPythonModel:
    """Decode, detect and postprocess a batch of encoded frames, one response each."""

    def initialize(self, args: dict[str, str]) -> None:
        """Build the three steps from their own configs, on this instance's device."""
        config = load_config(args)
        (self.input_name,) = tensor_names(config, "input")
        pre, det, post = (step_args(args, parameter(config, key)) for key in PIPELINE_STEPS)
        device_id = instance_device(args)
        self.device = torch.device("cpu" if device_id is None else f"cuda:{device_id}")
        pre_config = load_config(pre)
        self.pre_outputs = tensor_names(pre_config, "output")
        self.preprocessor = preprocessor(pre, pre_config, device_id)
        self.detector = Detector(det, self.device)
        self.post = Postprocessor(load_config(post), Path(post["model_repository"]), self.device)
        self.post.warm_up()
        pb_utils.Logger.log_info(f"{args['model_name']}: one process on {self.device}")
        self.stats = DeviceStats(args["model_name"])

    @guarded_execute
    def execute(self, requests: list) -> list:
        """One response per request; a bad frame or threshold fails only its request."""
        responses: list[pb_utils.InferenceResponse | None] = [None] * len(requests)
        with self.stats.phase("inputs"):
            frames, owners, thresholds = self._collect(requests, responses)
        with self.stats.phase("preprocess"):
            result = self.preprocessor.run(frames)
        kept, kept_thresholds = [], []
        for k, (i, n) in enumerate(owners):
            if k in result.errors:
                responses[i] = error_response(result.errors[k])
            else:
                kept.append((i, n))
                kept_thresholds += [thresholds[k]] * n
        if kept:
            outputs = dict(zip(self.pre_outputs, result.outputs, strict=True))
            images, sizes = (torch.as_tensor(outputs[n]) for n in (IMAGE, SIZE))
            with self.stats.phase("detector"):
                raw = self.detector(images)
            with self.stats.phase("postprocess"):
                host, counts = self.post.detect(raw, sizes, images, kept_thresholds)
            with self.stats.phase("outputs"):
                for i, tensors in self.post.outputs(host, counts, kept).items():
                    responses[i] = pb_utils.InferenceResponse(tensors)
            inputs = {self.input_name: frames, SIZE: [sizes], IMAGE: [images], RAW: [raw]}
            self.stats.record(inputs, {k: [v] for k, v in host.items()})
        return responses

    def _collect(
        self, requests: list, responses: list[pb_utils.InferenceResponse | None]
    ) -> tuple[list[np.ndarray], list[tuple[int, int]], list[Thresholds]]:
        """Each valid request's frames, ``(index, frames)`` and thresholds."""
        frames, owners, thresholds = [], [], []
        for i, request in enumerate(requests):
            try:
                setting = self.post.thresholds(request)
            except ValueError as exc:  # RequestParameterError
                responses[i] = error_response(f"bad request parameters: {exc}")
                continue
            encoded = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            frames.append(encoded)
            owners.append((i, len(encoded)))
            thresholds.append(setting)
        return frames, owners, thresholds
