"""The production preprocess (DALI) pipeline, built once per session on the CPU."""

from __future__ import annotations

import functools

from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module


@functools.cache
def dali_pipeline():
    """The production preprocess pipeline on the CPU, batch 1."""
    module = load_pipeline_module(PRODUCTION_REPOSITORY / "preprocess" / "1" / "dali.py")
    return build_pipeline(module, batch_size=1, num_threads=1, device_id=None)
