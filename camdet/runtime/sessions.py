"""ONNX Runtime sessions: the one place where camdet opens an ONNX file with ONNX Runtime.

The runners, the export check and the portable server's ``detector`` all call
:func:`onnx_session`, so they agree on the provider (the CPU: the GPU machine has no CUDA
build of ONNX Runtime) and on what a thread count means. ``onnxruntime`` is imported when
a session is made, so that images without it (the GPU server runs torch) can import this.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

ORT_DEFAULT_THREADS = 0
"""``threads`` that leaves the intra-op thread count to ONNX Runtime (one per physical core)."""

ORT_FLOAT_TYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}
"""numpy type of each ONNX Runtime float tensor type name (``NodeArg.type``)."""


def onnx_session(path: Path | str, threads: int = ORT_DEFAULT_THREADS) -> ort.InferenceSession:
    """Open an ONNX file on ONNX Runtime's CPU execution provider.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads; :data:`ORT_DEFAULT_THREADS` (0) lets ONNX Runtime choose.

    Returns:
        The inference session.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
