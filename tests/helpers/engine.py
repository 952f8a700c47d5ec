"""What the engine tests share: TensorRT's presence, the CLI runner, build arguments."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(
    not HAVE_TENSORRT, reason="needs TensorRT and a GPU (NGC TensorRT container)"
)
runner = CliRunner()


def model_args(paths: dict[str, Path]) -> list[str]:
    """``--onnx``, ``--config`` and ``--labels`` of the ``paths`` fixture."""
    return [
        "--onnx",
        str(paths["onnx"]),
        "--config",
        str(paths["config"]),
        "--labels",
        str(paths["labels"]),
    ]


def plan_check_args(paths: dict[str, Path]) -> list[str]:
    """``build_engine.py check`` of the ``paths`` fixture's plan, on this machine's GPU."""
    return ["check", "--plan", str(paths["plan"]), *model_args(paths)]


def build_args(paths: dict[str, Path], tmp_path: Path) -> list[str]:
    return [
        "build",
        *model_args(paths),
        "--plan",
        str(paths["plan"]),
        "--timing-cache",
        str(tmp_path / "cache" / "timing.cache"),
        "--no-progress",
    ]


def random_rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
