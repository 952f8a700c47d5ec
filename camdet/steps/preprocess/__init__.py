"""``preprocess``: the DALI decode + letterbox graph, its runner, decode budget and errors.

Only DALI and :mod:`camdet.constants` may be imported by :mod:`.graphs`: the DALI backend
imports it when it serializes ``model_repository/preprocess/1/dali.py``.
"""
