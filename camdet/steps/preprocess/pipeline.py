"""Run the production ``preprocess`` DALI pipeline through DALI's Python API.

Used by the portable ``preprocess`` model, the tests and the bare-DALI benchmark, so that
all three run ``model_repository/preprocess/1/dali.py`` exactly as the DALI backend would.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

INPUT_NAME = "encoded_image"
"""Name of the pipeline's ``external_source`` (the preprocess model's input)."""

EXEC_DYNAMIC = {"0": False, "1": True}.get(os.environ.get("CAMDET_DALI_EXEC_DYNAMIC", ""))
"""DALI's executor (``CAMDET_DALI_EXEC_DYNAMIC``: ``1`` the dynamic one, ``0`` the classic
pipelined one; unset: DALI's default, the dynamic one in DALI 2). A measurement variable:
in the served pipelines DALI's decoder threads used ~8x the CPU per frame of a plain
process's decode on the H100, and the classic executor was 11 % slower there
(perf/RESULTS.md, session 14)."""


def load_pipeline_module(path: Path) -> ModuleType:
    """Import a ``dali.py`` from a model version folder."""
    spec = importlib.util.spec_from_file_location(f"camdet_dali_{abs(hash(str(path)))}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import DALI pipeline from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_pipeline(
    module: ModuleType, batch_size: int, num_threads: int, device_id: int | None
) -> Any:
    """Build the module's ``preprocess`` pipeline for synchronous batch-by-batch use.

    Args:
        module: A loaded ``dali.py``.
        batch_size: Largest batch to feed (smaller batches are fine).
        num_threads: DALI CPU threads.
        device_id: CUDA device for GPU (``mixed``) decoding, or None for the CPU.

    Returns:
        The built pipeline; one :func:`run_batch` returns that batch's outputs (no
        prefetching, so outputs never lag behind inputs).
    """
    pipe = module.preprocess(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        decode_device="cpu" if device_id is None else "mixed",
        prefetch_queue_depth=1,
        exec_dynamic=EXEC_DYNAMIC,
    )
    pipe.build()
    return pipe


def run_batch(pipe: Any, samples: list[np.ndarray]) -> tuple:
    """Feed 1-D uint8 encoded frames and return the pipeline's output TensorLists.

    Raises:
        RuntimeError: DALI's error when a frame cannot be decoded; the pipeline is then
            invalid and must be rebuilt.
    """
    pipe.feed_input(INPUT_NAME, samples)
    return pipe.run()
