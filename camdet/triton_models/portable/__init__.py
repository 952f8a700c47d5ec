"""Python-backend stand-ins for the production DALI-backend and TensorRT models.

:mod:`camdet.serving.portable` puts them where the production repository has a
DALI-backend ``preprocess`` or a TensorRT ``detector``; tensor contracts are the same.
"""
