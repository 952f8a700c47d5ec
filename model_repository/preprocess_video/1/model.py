"""Triton Python-backend entry point of ``preprocess_video``.

The implementation lives in :mod:`camdet.triton_models.preprocess_video`, where tests import it.
"""

from camdet.triton_models.preprocess_video import TritonPythonModel

__all__ = ["TritonPythonModel"]
