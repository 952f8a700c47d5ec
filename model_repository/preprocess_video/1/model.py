"""Triton Python-backend entry point of ``preprocess_video``.

The implementation lives in :mod:`camdet.triton_models.video_preprocess`, where tests import it.
"""

from camdet.triton_models.video_preprocess import TritonPythonModel

__all__ = ["TritonPythonModel"]
