"""camdet.engine.builder: the build orchestrated end to end against the fake TensorRT.

The fake (:mod:`tests.helpers.fake_tensorrt`) proves the glue runs here, not that TensorRT
behaves so: the ``tensorrt``-marked tests (test_tensorrt.py) do that.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import pytest

from camdet.engine import builder, calibration, errors, onnx_checks
from camdet.engine import contract as contracts
from camdet.engine import sidecar as sidecars
from camdet.engine.files import file_sha256
from tests.helpers.engine import random_rgb


def test_build_orchestration_fp16(
    fake_tensorrt: list[str], paths: dict[str, Path], tmp_path: Path
) -> None:
    request = builder.BuildRequest(
        onnx=paths["onnx"],
        config=paths["config"],
        labels=paths["labels"],
        plan=paths["plan"],
        timing_cache=tmp_path / "cache" / "timing.cache",
    )
    result = builder.build_engine(request)
    state = json.loads(paths["plan"].read_bytes())
    assert state["io"] == [
        ["images", "HALF", [-1, 3, 640, 640], True],
        ["output0", "HALF", [-1, 8, 8400], False],
    ], "the AutoCast file carries the config's FP16 I/O: TensorRT cannot retype it"
    assert state["profile"] == ["images", [1, 3, 640, 640], [64, 3, 640, 640], [64, 3, 640, 640]]
    assert (tmp_path / "cache" / "timing.cache").read_bytes() == b"+timed"
    assert result.sidecar == sidecars.read_sidecar(paths["plan"])
    assert result.sidecar.strongly_typed and result.sidecar.modelopt_version
    converted = request.converted_onnx_for(result.sidecar.onnx_sha256)
    assert result.sidecar.converted_onnx_sha256 == file_sha256(converted)
    assert result.summary.count == 4
    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    gpu = sidecars.GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0")
    assert sidecars.plan_problems(paths["plan"], inputs, "fp16", "10.16.1.11", gpu) == []
    builder.build_engine(request)
    assert (tmp_path / "cache" / "timing.cache").read_bytes() == b"+timed+timed", "cache reused"


def test_build_orchestration_int8_and_update_config(
    fake_tensorrt: list[str], paths: dict[str, Path], tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(8):
        assert cv2.imwrite(str(frames / f"{i}.jpg"), random_rgb(360, 640, i))
    request = builder.BuildRequest(
        onnx=paths["onnx"],
        config=paths["config"],
        labels=paths["labels"],
        plan=paths["plan"],
        precision=contracts.Precision.INT8,
        max_batch=32,
        opt_batch=16,
        update_config=True,
        timing_cache=tmp_path / "cache" / "timing.cache",
        calibration=calibration.CalibrationSource(frames, frames=100),
        progress=False,
    )
    result = builder.build_engine(request)
    assert "images HALF" in fake_tensorrt and "output0 HALF" in fake_tensorrt
    parsed_ops = next(c for c in fake_tensorrt if c.startswith("ops "))
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(parsed_ops.split()), "explicit Q/DQ"
    assert result.sidecar.profiles == [
        {
            "input": "images",
            "min": [1, 3, 640, 640],
            "opt": [16, 3, 640, 640],
            "max": [32, 3, 640, 640],
        }
    ]
    config = contracts.load_model_config(paths["config"])
    assert (config.max_batch_size, list(config.dynamic_batching.preferred_batch_size)) == (32, [16])
    kept = request.converted_onnx_for(result.sidecar.onnx_sha256)
    assert result.sidecar.converted_onnx_sha256 == file_sha256(kept)
    shutil.rmtree(frames)
    again = builder.build_engine(dataclasses.replace(request, max_batch=None, opt_batch=None))
    assert again.sidecar.converted_onnx_sha256 == result.sidecar.converted_onnx_sha256, (
        "the second build reused the quantized file without frames"
    )


def test_tensorrt_11_builds_the_same_way_and_12_is_refused(
    fake_tensorrt: list[str], paths: dict[str, Path], tmp_path: Path
) -> None:
    import sys

    request = builder.BuildRequest(
        onnx=paths["onnx"],
        config=paths["config"],
        labels=paths["labels"],
        plan=paths["plan"],
        precision=contracts.Precision.FP32,
        timing_cache=tmp_path / "timing.cache",
    )
    sys.modules["tensorrt"].__version__ = "11.4.0.106"
    assert builder.build_engine(request).sidecar.tensorrt_version == "11.4.0.106"
    paths["plan"].unlink()
    sys.modules["tensorrt"].__version__ = "12.0.0.1"
    with pytest.raises(errors.TensorRTUnavailableError, match="TensorRT 10 and 11"):
        builder.build_engine(request)
    assert not paths["plan"].exists()
