"""Pluggable in-process detector runners for the baselines that bypass the server.

A runner maps a batch of letterboxed frames to the detector's raw head output:
``[B, 3, 640, 640]`` FP16 in [0, 1] -> ``[B, 4 + nc, A]`` (numpy or torch, any float
type). The bare in-process loop and the step-input generator call one through
:func:`make_runner`: ``onnxruntime`` (the ONNX on the CPU, as the portable server runs
it) or ``torch`` (the weights the ONNX came from; CUDA FP16 on a GPU). Others (TensorRT)
plug in with :func:`register_runner` without touching the benchmark code.
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
        self._input_dtype = _ORT_TYPES[onnx_input.type]
        logger.info(
            "onnxruntime runner: %s, %d intra-op threads", onnx_path, options.intra_op_num_threads
        )

    def __call__(self, images: Any) -> np.ndarray:
        """Run one batch (the cast to the ONNX's own float type happens here)."""
        batch = np.asarray(images).astype(self._input_dtype, copy=False)
        (raw,) = self.session.run(None, {self._input_name: batch})
        return raw


class TorchRunner:
    """The PyTorch weights the ONNX was exported from, on CUDA in FP16 when there is a GPU.

    The weights come from ``CAMDET_DETECTOR_WEIGHTS`` (default: the trained demo detector,
    ``camdet/detector/weights/demo.pt``). On construction, the model's output on a probe
    batch is compared with ONNX Runtime's on ``onnx_path``, so the bare loop cannot
    silently run a different detector than the server.

    Attributes:
        name: ``"torch"``.
        device: Where the model runs.
    """

    name = "torch"
    tolerance = 0.05
    """Largest allowed difference from ONNX Runtime on the probe (input px / score)."""

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        """Load the weights, move them to the device and check them against the ONNX.

        Raises:
            ValueError: If the weights and the ONNX disagree on the probe batch.
        """
        import torch

        from camdet.detector.model import load_weights

        if threads is not None:
            torch.set_num_threads(threads)
        weights = Path(os.environ.get("CAMDET_DETECTOR_WEIGHTS", _default_weights()))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = load_weights(weights, self.device).fuse().to(self.dtype)
        self._check_against(onnx_path, weights)
        logger.info("torch runner: %s on %s (%s)", weights, self.device, self.dtype)

    def __call__(self, images: Any) -> Any:
        """Run one batch; numpy or torch in, a torch tensor on the device out."""
        import torch

        with torch.inference_mode():
            batch = torch.as_tensor(images).to(self.device, self.dtype, non_blocking=True)
            return self.model(batch)

    def _check_against(self, onnx_path: Path, weights: Path) -> None:
        probe = np.random.default_rng(0).random((1, 3, 640, 640)).astype(np.float16)
        expected = OnnxRuntimeRunner(onnx_path)(probe)
        got = self(probe).float().cpu().numpy()
        worst = float(np.abs(got - expected).max() / max(1.0, float(np.abs(expected).max())))
        if got.shape != expected.shape or worst > self.tolerance:
            raise ValueError(
                f"{weights} and {onnx_path} are not the same detector "
                f"(shapes {got.shape} / {expected.shape}, relative difference {worst:.3g})"
            )


def _default_weights() -> Path:
    """The trained demo detector shipped beside ``camdet.detector``."""
    import camdet.detector

    return Path(camdet.detector.__file__).resolve().parent / "weights" / "demo.pt"


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
