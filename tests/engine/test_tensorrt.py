"""Real TensorRT builds (``tensorrt``-marked: only in the NGC TensorRT container with a GPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import onnx
import pytest

import build_engine as cli
from camdet.engine import sidecar as sidecars
from camdet.engine.files import file_sha256
from tests.helpers.engine import build_args, needs_tensorrt, plan_check_args, random_rgb, runner


@pytest.mark.tensorrt
@needs_tensorrt
def test_build_fp16_plan_and_check(paths: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(cli.app, build_args(paths, tmp_path))
    assert result.exit_code == 0, result.output
    plan = paths["plan"].read_bytes()
    sidecar = sidecars.read_sidecar(paths["plan"])
    assert sidecar.precision == "fp16"
    assert sidecar.plan_sha256 == file_sha256(paths["plan"])
    assert (tmp_path / "cache" / "timing.cache").stat().st_size > 0

    import tensorrt as trt

    assert sidecar.tensorrt_version == trt.__version__
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    assert engine is not None, "the plan must be raw: no prefix before TensorRT's bytes"
    assert engine.get_tensor_dtype("images") == trt.DataType.HALF
    assert engine.get_tensor_dtype("output0") == trt.DataType.HALF
    assert [list(s) for s in engine.get_tensor_profile_shape("images", 0)] == [
        [1, 3, 640, 640],
        [64, 3, 640, 640],
        [64, 3, 640, 640],
    ]
    checked = runner.invoke(cli.app, plan_check_args(paths))
    assert checked.exit_code == 0, checked.output


@pytest.mark.tensorrt
@needs_tensorrt
def test_build_int8_keeps_its_quantized_onnx(paths: dict[str, Path], tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(8):
        assert cv2.imwrite(str(frames / f"{i}.jpg"), random_rgb(720, 1280, i))
    cache = tmp_path / "cache" / "int8.onnx"
    args = [
        *build_args(paths, tmp_path),
        "--precision",
        "int8",
        "--calibration-images",
        str(frames),
        "--converted-onnx",
        str(cache),
    ]
    first = runner.invoke(cli.app, args)
    assert first.exit_code == 0, first.output
    assert cache.stat().st_size > 0
    assert sidecars.read_sidecar(paths["plan"]).precision == "int8"
    assert {n.op_type for n in onnx.load(str(cache)).graph.node} >= {"QuantizeLinear"}
    shutil.rmtree(frames)  # the second build must come from the kept Q/DQ file alone
    second = runner.invoke(cli.app, args)
    assert second.exit_code == 0, second.output
