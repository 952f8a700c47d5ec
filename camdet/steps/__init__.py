"""The code of each step of the ensembles, named as the model is.

:mod:`.validate`, :mod:`.preprocess`, :mod:`.video` (``preprocess_video``) and
:mod:`.postprocess`; :mod:`.parameters` are the request parameters every step checks.
The Triton adapters of these steps live in :mod:`camdet.triton_models`.
"""
