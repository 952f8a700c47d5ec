"""The detector run in this process, outside Triton: the one home of in-process inference.

- :mod:`.sessions`: :func:`onnx_session`, every ONNX Runtime session camdet opens.
- :mod:`.runners`: the runner abstraction, ``[B, 3, H, W]`` in [0, 1] -> ``[B, 4 + nc, A]``
  head output, by name (:func:`make_runner`: ``onnxruntime`` | ``torch``) from an ONNX,
  or from torch weights (:class:`WeightsRunner`); :func:`predictor` for uint8 pixels and
  :func:`run_detector` for many frames.
- :mod:`.torch_graphs`: the ONNX as a torch module, replayed as CUDA graphs per batch size
  (the portable GPU server's detector; imports torch, so it is not re-exported here).
"""

from camdet.runtime.runners import (
    RUNNERS,
    DetectorRunner,
    OnnxRuntimeRunner,
    Predictor,
    TorchRunner,
    WeightsRunner,
    make_runner,
    onnx_image_shape,
    onnx_predictor,
    predictor,
    register_runner,
    run_detector,
)
from camdet.runtime.sessions import ORT_DEFAULT_THREADS, onnx_session

__all__ = [
    "ORT_DEFAULT_THREADS",
    "RUNNERS",
    "DetectorRunner",
    "OnnxRuntimeRunner",
    "Predictor",
    "TorchRunner",
    "WeightsRunner",
    "make_runner",
    "onnx_image_shape",
    "onnx_predictor",
    "onnx_session",
    "predictor",
    "register_runner",
    "run_detector",
]
