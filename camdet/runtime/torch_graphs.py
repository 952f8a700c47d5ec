"""The detector ONNX run by torch, FP16 on a CUDA device, with one CUDA graph per batch size.

The GPU machine has no TensorRT and no CUDA build of ONNX Runtime, so the portable
``detector`` runs the very same ``model.onnx`` converted to torch modules by
``onnx2torch`` (a user's YOLOv8/YOLO11 export converts the same way). Graphs are captured
for the config's preferred batch sizes and its ``max_batch_size``; a batch is padded up
to the next captured size, so a replay costs one kernel-launch sequence.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from camdet.constants import INPUT_SHAPE

logger = logging.getLogger(__name__)


def load_onnx_as_torch(path: Path, device: torch.device, half: bool) -> torch.nn.Module:
    """Convert an ONNX detector to an eval-mode torch module on ``device``."""
    import onnx2torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnx2torch's indexing deprecation noise
        module = onnx2torch.convert(str(path)).eval().to(device)
    return module.half() if half else module


def load_detector(
    path: Path, device: torch.device, half: bool, image_shape: tuple[int, int] = INPUT_SHAPE
) -> torch.nn.Module:
    """The detector ONNX as a torch module, as fast as it can be made.

    onnx2torch renders a dynamic-batch export with shape arithmetic that reads tensors
    back to the host (``.tolist()``), which CUDA graphs cannot capture. When the ONNX is
    camdet's own demo detector - proven by equal outputs on a probe batch, not assumed -
    its native module (graph-capturable) is used instead; any other YOLO export runs as
    converted.

    Args:
        path: The detector ONNX.
        device: Where the module runs.
        half: FP16 weights (FP32 otherwise).
        image_shape: ``(height, width)`` the ONNX takes, pixels: the probe batch's size
            (an export carries its anchor grid as constants, so it runs at its own size
            only).
    """
    converted = load_onnx_as_torch(path, device, half)
    native = _native_equivalent(converted, device, half, image_shape)
    if native is not None:
        logger.info("%s computes the same as camdet's demo detector: using its module", path)
        return native
    return converted


@torch.inference_mode()
def _native_equivalent(
    converted: torch.nn.Module, device: torch.device, half: bool, image_shape: tuple[int, int]
) -> torch.nn.Module | None:
    """The demo detector's module if it reproduces ``converted`` on a probe batch, else None."""
    from camdet.detector.model import DEMO_WEIGHTS, load_weights

    if not DEMO_WEIGHTS.exists():
        return None
    native = load_weights(DEMO_WEIGHTS, device).fuse()
    native = native.half() if half else native
    probe = torch.rand((2, 3, *image_shape), generator=torch.Generator().manual_seed(0)).to(
        device, native.head.parameters().__next__().dtype
    )
    expected, got = converted(probe).float(), native(probe).float()
    if expected.shape != got.shape:
        return None
    # Half precision rounds differently in the two graphs: boxes (rows 0-3) are in input
    # pixels, class scores (rows 4-) in [0, 1] and held to a tolerance of their own.
    box_tolerance, score_tolerance = (0.5, 0.05) if half else (1e-2, 1e-2)
    same_boxes = torch.allclose(expected[:, :4], got[:, :4], atol=box_tolerance)
    same_scores = torch.allclose(expected[:, 4:], got[:, 4:], atol=score_tolerance)
    return native if same_boxes and same_scores else None


class GraphRunner:
    """Run a module on fixed batch sizes through captured CUDA graphs (eager on the CPU).

    Args:
        module: Eval-mode module taking ``[B, 3, H, W]`` and returning ``[B, ...]``.
        sample_shape: Shape of one input sample, e.g. ``(3, 640, 640)``.
        batch_sizes: Batch sizes to capture; the largest bounds every call.
        dtype: Input dtype (the config's, FP16 in production).
        device: Where the module lives; graphs are used on CUDA only.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        sample_shape: tuple[int, ...],
        batch_sizes: list[int],
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.module = module
        self.sizes = sorted(set(batch_sizes))
        self.device = device
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if device.type == "cuda":
            try:
                for size in self.sizes:
                    self._capture(size, sample_shape, dtype)
            except RuntimeError as exc:  # a module that syncs with the host cannot be captured
                logger.warning("no CUDA graphs (%s); running eagerly", str(exc).splitlines()[0])
                self.graphs.clear()
                torch.cuda.synchronize(device)

    @torch.inference_mode()
    def _capture(self, size: int, sample_shape: tuple[int, ...], dtype: torch.dtype) -> None:
        static = torch.zeros((size, *sample_shape), dtype=dtype, device=self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up (cuDNN autotuning) outside the graph
                self.module(static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # On this instance's own stream: without one, torch.cuda.graph captures on the
        # *current* device's stream, which is GPU 0 in a model instance on GPU 1.
        with torch.cuda.graph(graph, stream=stream):
            self.outputs[size] = self.module(static)
        self.inputs[size], self.graphs[size] = static, graph
        logger.info("captured CUDA graph for batch %d", size)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Run ``batch`` (``[n, *sample_shape]``); returns ``[n, ...]``.

        A batch above the largest captured size runs eagerly, as on the CPU.
        """
        n = batch.shape[0]
        size = next((s for s in self.sizes if s >= n), None)
        if not self.graphs or size is None:
            return self.module(batch)
        self.inputs[size][:n].copy_(batch)
        self.graphs[size].replay()
        # The static output is overwritten by the next replay: hand out a copy.
        return self.outputs[size][:n].clone()
