"""Triton Python-backend entry point of ``postprocess``.

The implementation lives in :mod:`camdet.triton_models.postprocess`, where tests import it.
"""

from camdet.triton_models.postprocess import TritonPythonModel

__all__ = ["TritonPythonModel"]
