"""Engine fixtures: a scratch model repository with a real ONNX head, the fake TensorRT."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from camdet.engine import builder
from camdet.engine import sidecar as sidecars
from tests.helpers.fake_tensorrt import fake_tensorrt_module
from tests.helpers.onnx_models import yolo_onnx
from tests.helpers.paths import PRODUCTION


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A scratch copy of the production model repository (configs and labels)."""
    target = tmp_path / "model_repository"
    shutil.copytree(PRODUCTION, target, ignore=shutil.ignore_patterns("*.plan", "*.onnx"))
    return target


@pytest.fixture
def paths(repo_copy: Path) -> dict[str, Path]:
    detector = repo_copy / "detector"
    return {
        "onnx": yolo_onnx(detector / "1" / "model.onnx"),
        "config": detector / "config.pbtxt",
        "labels": repo_copy / "postprocess" / "labels.txt",
        "plan": detector / "1" / "model.plan",
    }


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    # ModelOpt looks for TensorRT plugins when `import tensorrt` works; the stand-in is
    # TensorRT's builder API only, so ModelOpt must see no TensorRT, as on a CPU machine.
    from modelopt.onnx import trt_utils

    monkeypatch.setattr(trt_utils, "TRT_PYTHON_AVAILABLE", False)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", fake_tensorrt_module(calls))
    gpu = sidecars.GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0")
    monkeypatch.setattr(builder, "query_gpu", lambda index=0: gpu)
    return calls
