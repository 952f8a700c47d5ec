"""In-process detector runners: the detector run here, outside Triton.

A runner maps a batch of letterboxed frames to the detector's raw head output:
``[B, 3, H, W]`` float in [0, 1] (numpy, or torch on any device) -> ``[B, 4 + nc, A]``
(numpy or torch, any float type; rows: ``cx, cy, w, h`` in input pixels, then class
scores in [0, 1]; ``A`` anchors). :func:`make_runner` builds one by name from the
detector's ONNX: ``onnxruntime`` (the ONNX on the CPU, as the portable CPU server runs
it) or ``torch`` (the ONNX through :mod:`camdet.runtime.torch_graphs`, FP16 CUDA graphs on
a GPU, as the portable GPU server runs it). Others (TensorRT) plug in with
:func:`register_runner`. :class:`WeightsRunner` runs camdet's own torch weights.

Two adapters serve the evaluations: :func:`predictor` feeds a runner letterboxed uint8
pixels (how evaluation frames are kept), :func:`run_detector` feeds it many frames in
batches. torch is imported only where a runner needs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from camdet.constants import PIXEL_SCALE
from camdet.runtime.sessions import ORT_DEFAULT_THREADS, ORT_FLOAT_TYPES, onnx_session

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class DetectorRunner(Protocol):
    """Something that runs the detector on a batch, in this process."""

    name: str

    def __call__(self, images: Any) -> Any:
        """Run one batch.

        Args:
            images: ``[B, 3, H, W]`` letterboxed RGB in [0, 1], any float type: numpy, or
                a torch tensor (a CUDA one when the bare loop decodes with DALI on a GPU).

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
        session: The ONNX Runtime session (:func:`camdet.runtime.sessions.onnx_session`).
        input_dtype: The ONNX's input float type (a batch is cast to it).
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, threads: int = ORT_DEFAULT_THREADS) -> None:
        """Open the ONNX once.

        Args:
            onnx_path: The detector's ``model.onnx``.
            threads: Intra-op threads (:data:`ORT_DEFAULT_THREADS`: ONNX Runtime's choice).
        """
        self.session = onnx_session(onnx_path, threads)
        onnx_input = self.session.get_inputs()[0]
        self._input_name = onnx_input.name
        self.input_dtype = ORT_FLOAT_TYPES[onnx_input.type]
        logger.info("onnxruntime runner: %s, %d intra-op threads", onnx_path, threads)

    def __call__(self, images: Any) -> np.ndarray:
        """Run one batch (the cast to the ONNX's own float type happens here).

        A torch tensor (a GPU preprocess's output) is copied to the host first.

        Returns:
            ``[B, 4 + nc, A]`` numpy array of the ONNX's output type.
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
    ``batch_sizes``; eager FP32 on the CPU.

    Attributes:
        name: ``"torch"``.
        device: Where the module runs.
        dtype: Its float type (FP16 on a GPU, FP32 on the CPU, unless ``half`` says).
        image_shape: ``(height, width)`` of the captured input, pixels.
    """

    name = "torch"
    BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
    """Captured batch sizes; a batch runs padded to the next one."""

    def __init__(
        self,
        onnx_path: Path,
        threads: int | None = None,
        *,
        device: torch.device | str | None = None,
        half: bool | None = None,
        batch_sizes: Sequence[int] = BATCH_SIZES,
    ) -> None:
        """Load the detector on the GPU if there is one (else the CPU), capture graphs.

        The graphs take the image size the ONNX declares (a 640x384 export gets
        ``[B, 3, 384, 640]``), ``CAMDET_INPUT_SIZE`` where its dimensions are dynamic.

        Args:
            onnx_path: The detector's ``model.onnx``.
            threads: torch's CPU threads (None: torch's default).
            device: Where to run (None: ``cuda`` if there is a GPU, else ``cpu``).
            half: FP16 weights and input (None: on a CUDA device only).
            batch_sizes: Batch sizes to capture CUDA graphs for; empty: always eager.
        """
        import torch

        from camdet.runtime.torch_graphs import GraphRunner, load_detector

        if threads is not None:
            torch.set_num_threads(threads)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        half = self.device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if half else torch.float32
        self.image_shape = onnx_image_shape(Path(onnx_path))
        module = load_detector(Path(onnx_path), self.device, half, self.image_shape)
        self._run = GraphRunner(
            module, (3, *self.image_shape), list(batch_sizes), self.dtype, self.device
        )
        logger.info(
            "torch runner: %s on %s (%s), input %s",
            onnx_path,
            self.device,
            self.dtype,
            self.image_shape,
        )

    def __call__(self, images: Any) -> torch.Tensor:
        """Run one batch; numpy or torch in, a torch tensor of :attr:`dtype` on the device out."""
        import torch

        batch = torch.as_tensor(images).to(self.device, self.dtype, non_blocking=True)
        return self._run(batch)


class WeightsRunner:
    """camdet's own torch weights (:func:`camdet.detector.model.load_weights`), fused, FP32.

    Attributes:
        name: ``"weights"``.
        device: Where the model runs.
        model: The eval-mode detector.
    """

    name = "weights"

    def __init__(self, weights: Path, device: torch.device | str | None = None) -> None:
        """Load the weights.

        Args:
            weights: A file written by :func:`camdet.detector.model.save_weights`.
            device: Where to run (None: ``cuda`` if there is a GPU, else ``cpu``).
        """
        import torch

        from camdet.detector.model import load_weights

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = load_weights(weights, self.device).fuse()

    def __call__(self, images: Any) -> torch.Tensor:
        """Run one batch; numpy or torch in, FP32 ``[B, 4 + nc, A]`` on the device out."""
        import torch

        with torch.no_grad():
            return self.model(torch.as_tensor(images).to(self.device).float())


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


def _onnxruntime_on_every_core(onnx_path: Path, threads: int | None = None) -> OnnxRuntimeRunner:
    """``onnxruntime`` by name: one intra-op thread per CPU core unless told (the server's)."""
    return OnnxRuntimeRunner(onnx_path, threads or os.cpu_count() or 1)


RUNNERS: dict[str, RunnerFactory] = {
    "onnxruntime": _onnxruntime_on_every_core,
    "torch": TorchRunner,
}
"""Runner factories by name; :func:`register_runner` adds more."""


def register_runner(name: str, factory: RunnerFactory) -> None:
    """Make ``factory`` available to :func:`make_runner` (and ``--runner``) as ``name``."""
    RUNNERS[name] = factory


def make_runner(name: str, onnx_path: Path, threads: int | None = None) -> DetectorRunner:
    """Build the runner registered as ``name``.

    Args:
        name: ``"onnxruntime"``, ``"torch"`` or a name given to :func:`register_runner`.
        onnx_path: The detector's ``model.onnx``.
        threads: CPU threads (None: the runner's default; one per core for onnxruntime).

    Raises:
        KeyError: If no runner has that name (the message lists the known ones).
    """
    if name not in RUNNERS:
        raise KeyError(f"unknown detector runner {name!r}; known: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[name](onnx_path, threads)


Predictor = Callable[["torch.Tensor"], "torch.Tensor"]
"""``[B, 3, H, W]`` uint8 letterboxed RGB (CPU) -> ``[B, 4 + nc, A]`` FP32 head output."""


def predictor(runner: DetectorRunner) -> Predictor:
    """The runner fed letterboxed uint8 pixels, as the evaluations keep their frames.

    Pixels are scaled to [0, 1] in FP32 (``* PIXEL_SCALE``) before the runner casts them to
    its own type; the head output comes back as an FP32 torch tensor on the runner's device.
    """
    import torch

    def predict(pixels: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(runner(pixels.float() * PIXEL_SCALE)).float()

    return predict


def onnx_predictor(path: Path, threads: int | None = None) -> Predictor:
    """:func:`predictor` of an :class:`OnnxRuntimeRunner` (threads None: ONNX Runtime's)."""
    return predictor(OnnxRuntimeRunner(path, threads or ORT_DEFAULT_THREADS))


def run_detector(runner: DetectorRunner, images: Any, batch: int = 32) -> torch.Tensor:
    """Head outputs of many frames, ``batch`` frames per runner call.

    Args:
        runner: The detector.
        images: ``[N, 3, H, W]`` letterboxed RGB in [0, 1] (numpy or torch).
        batch: Frames per call.

    Returns:
        ``[N, 4 + nc, A]`` FP32 torch tensor on the CPU.
    """
    import torch

    return torch.cat(
        [
            torch.as_tensor(runner(images[i : i + batch])).float().cpu()
            for i in range(0, len(images), batch)
        ]
    )
