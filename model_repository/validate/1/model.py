"""Triton Python-backend entry point of ``validate``.

The implementation lives in :mod:`camdet.triton_models.validate`, where tests import it.
"""

from camdet.triton_models.validate import TritonPythonModel

__all__ = ["TritonPythonModel"]
