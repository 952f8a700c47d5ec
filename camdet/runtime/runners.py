"""Pluggable in-process detector runners for the baselines that bypass the server.

A runner maps a batch of letterboxed frames to the detector's raw head output:
``[B, 3, 640, 640]`` FP16 in [0, 1] -> ``[B, 4 + nc, A]`` (numpy or torch, any float
type). The bare in-process loop and the step-input generator call one through
:func:`make_runner`: ``onnxruntime`` (the ONNX on the CPU, as the portable CPU server
runs it) or ``torch`` (the ONNX through :mod:`camdet.runtime.torch_graphs`, FP16 CUDA graphs on
a GPU, as the portable GPU server runs it). Others (TensorRT) plug in with
:func:`register_runner` without touching the benchmark code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class DetectorRunner(Protocol):
    """Something that runs the detector on a batch, in this process."""

    name: str

    def __call__(self, images: Any) -> Any:
        """Run one batch.

        Args:
            images: ``[B, 3, 640, 640]`` FP16 letterboxed RGB in [0, 1]: numpy, or a torch
                CUDA tensor when the bare loop decodes with DALI on a GPU.

        Returns:
            ``[B, 4 + nc, A]`` raw head output (numpy array or torch tensor).
        """
        ...


RunnerFactory = Callable[..., DetectorRunner]
"""``factory(onnx_path: Path, threads: int | None) -> DetectorRunner``."""


class OnnxRuntimeRunner:
    """The detector's ONNX through ONNX Runtime on the CPU (what the portable server runs).

    Attributes:
        name: ``"onnxruntime"``.
        session: The ONNX Runtime session.
        input_dtype: The ONNX's input float type (a batch is cast to it).
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        """Open the ONNX once.

        Args:
            onnx_path: The detector's ``model.onnx``.
            threads: Intra-op threads (None: one per CPU core, like the portable server).
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        onnx_input = self.session.get_inputs()[0]
        self._input_name = onnx_input.name
        self.input_dtype = _ORT_TYPES[onnx_input.type]
        logger.info(
            "onnxruntime runner: %s, %d intra-op threads", onnx_path, options.intra_op_num_threads
        )

    def __call__(self, images: Any) -> np.ndarray:
        """Run one batch (the cast to the ONNX's own float type happens here).

        A torch tensor (a GPU preprocess's output) is copied to the host first.
        """
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        batch = np.asarray(images).astype(self.input_dtype, copy=False)
        (raw,) = self.session.run(None, {self._input_name: batch})
        return raw


class TorchRunner:
    """The detector ONNX as the portable GPU server runs it: torch, FP16 CUDA graphs.

    :func:`camdet.runtime.torch_graphs.load_detector` (the ONNX converted by onnx2torch, or the
    demo detector's own module where it is proven to compute the same) wrapped in
    :class:`camdet.runtime.torch_graphs.GraphRunner`, with one CUDA graph per batch size of
    :data:`BATCH_SIZES`; eager FP32 on the CPU.

    Attributes:
        name: ``"torch"``.
        device: Where the module runs.
        dtype: Its float type (FP16 on a GPU, FP32 on the CPU).
        image_shape: ``(height, width)`` of the captured input, pixels.
    """

    name = "torch"
    BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
    """Captured batch sizes; a batch runs padded to the next one."""

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        """Load the detector on the GPU if there is one (else the CPU), capture graphs.

        The graphs take the image size the ONNX declares (a 640x384 export gets
        ``[B, 3, 384, 640]``), ``CAMDET_INPUT_SIZE`` where its dimensions are dynamic.
        """
        import torch

        from camdet.runtime.torch_graphs import GraphRunner, load_detector

        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        half = self.device.type == "cuda"
        self.dtype = torch.float16 if half else torch.float32
        self.image_shape = onnx_image_shape(Path(onnx_path))
        module = load_detector(Path(onnx_path), self.device, half, self.image_shape)
        self._run = GraphRunner(
            module, (3, *self.image_shape), list(self.BATCH_SIZES), self.dtype, self.device
        )
        logger.info(
            "torch runner: %s on %s (%s), input %s",
            onnx_path,
            self.device,
            self.dtype,
            self.image_shape,
        )

    def __call__(self, images: Any) -> Any:
        """Run one batch; numpy or torch in, a torch tensor on the device out."""
        import torch

        batch = torch.as_tensor(images).to(self.device, self.dtype, non_blocking=True)
        return self._run(batch)


def onnx_image_shape(onnx_path: Path) -> tuple[int, int]:
    """``(height, width)`` of the ONNX's image input ``[B, 3, H, W]``, in pixels.

    Dimensions the file leaves dynamic come from ``CAMDET_INPUT_SIZE``.
    """
    import onnx

    from camdet.constants import INPUT_SHAPE

    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") else 0 for d in dims][2:4]
    height, width = (v or default for v, default in zip(declared, INPUT_SHAPE, strict=True))
    return height, width


RUNNERS: dict[str, RunnerFactory] = {"onnxruntime": OnnxRuntimeRunner, "torch": TorchRunner}
"""Runner factories by name; :func:`register_runner` adds more."""


def register_runner(name: str, factory: RunnerFactory) -> None:
    """Make ``factory`` available to :func:`make_runner` (and ``--runner``) as ``name``."""
    RUNNERS[name] = factory


def make_runner(name: str, onnx_path: Path, threads: int | None = None) -> DetectorRunner:
    """Build the runner registered as ``name``.

    Raises:
        KeyError: If no runner has that name (the message lists the known ones).
    """
    if name not in RUNNERS:
        raise KeyError(f"unknown detector runner {name!r}; known: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[name](onnx_path, threads)
