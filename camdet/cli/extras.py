"""What the CPU install leaves out, and the one line that says how to add it.

``pip install camdet`` serves, streams, benchmarks and checks on the CPU without torch
(PyPI's torch is its CUDA build on Linux, ~5 GB with its ``nvidia-*`` wheels). The GPU
serving steps, detector training/export/evaluation and the GPU benchmarks need the
``gpu`` extra; where one of them runs without it, the user gets :data:`GPU_EXTRA`, not a
traceback.
"""

from __future__ import annotations

GPU_EXTRA = 'pip install "camdet[gpu]"'
"""The install command that adds torch, torchvision and onnx2torch."""

TORCH_MODULES = frozenset({"torch", "torchvision", "onnx2torch"})
"""Top-level modules of the ``gpu`` extra."""


class MissingExtraError(ImportError):
    """A feature of the ``gpu`` extra was used where only the CPU install is."""


def missing_extra(error: ImportError, feature: str) -> MissingExtraError | None:
    """The one-line error for ``feature`` if ``error`` is a ``gpu``-extra module missing.

    Args:
        error: An import failure (its ``name`` is the module that was not found).
        feature: What needed it, for the message (e.g. ``"camdet detector train"``).

    Returns:
        The error to raise instead, or None when ``error`` is about something else.
    """
    if isinstance(error, MissingExtraError):
        return error
    if (error.name or "").split(".")[0] not in TORCH_MODULES:
        return None
    return MissingExtraError(
        f"{feature} needs torch ({error.name} is not installed; the CPU install leaves it "
        f"out): {GPU_EXTRA}"
    )
