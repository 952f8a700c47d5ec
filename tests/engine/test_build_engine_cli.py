"""build_engine.py's validate and build commands, refusing before TensorRT runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import build_engine as cli
from camdet.engine import network
from tests.helpers.engine import HAVE_TENSORRT, build_args, runner
from tests.helpers.onnx_models import yolo_onnx


def test_validate_cli(paths: dict[str, Path], tmp_path: Path) -> None:
    args = ["--config", str(paths["config"]), "--labels", str(paths["labels"])]
    ok = runner.invoke(cli.app, ["validate", "--onnx", str(paths["onnx"]), *args])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == (
        f"OK: model.onnx matches {paths['config']} and labels.txt (4 classes)\n"
        "profile min=1 opt=64 max=64: MIN [1, 3, 640, 640] OPT [64, 3, 640, 640] "
        "MAX [64, 3, 640, 640]\n"
    )
    bad = yolo_onnx(tmp_path / "bad.onnx", input_name="x", num_classes=80, batch=1)
    failed = runner.invoke(cli.app, ["validate", "--onnx", str(bad), *args])
    assert failed.exit_code == 1
    assert failed.stderr == (
        f"error: bad.onnx does not match {paths['config']} and labels.txt:\n"
        "  - ONNX input is named 'x' but the config input is 'images'\n"
        "  - ONNX input 'x' has a static batch dimension 1; re-export it with a dynamic batch "
        "axis (ultralytics: dynamic=True) so the engine can batch up to max_batch_size 64\n"
        "  - ONNX output 'output0' has a static batch dimension 1; re-export it with a dynamic "
        "batch axis (ultralytics: dynamic=True) so the engine can batch up to max_batch_size 64\n"
        "  - ONNX output 'output0' has 84 rows = 4 box + 80 class scores, but the labels file "
        "lists 4 classes\n"
    )


def test_build_refuses_a_profile_that_disagrees_with_the_config(
    paths: dict[str, Path], tmp_path: Path
) -> None:
    before = paths["config"].read_text()
    result = runner.invoke(cli.app, [*build_args(paths, tmp_path), "--max-batch", "32"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: requested profile min=1 opt=32 max=32 disagrees with {paths['config']} "
        "(max_batch_size 64, preferred_batch_size [16, 32, 64] -> min=1 opt=64 max=64); "
        "pass --update-config to rewrite the config's batch settings\n"
    )
    assert paths["config"].read_text() == before
    assert not paths["plan"].exists()


def test_build_refuses_a_bad_onnx_before_tensorrt(paths: dict[str, Path], tmp_path: Path) -> None:
    yolo_onnx(paths["onnx"], num_classes=2)
    result = runner.invoke(cli.app, build_args(paths, tmp_path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: model.onnx does not match {paths['config']} and labels.txt:\n"
        "  - ONNX output 'output0' has 6 rows = 4 box + 2 class scores, but the labels file "
        "lists 4 classes\n"
    )


@pytest.mark.skipif(HAVE_TENSORRT, reason="tests the error where TensorRT is missing")
def test_build_without_tensorrt_says_where_to_run(paths: dict[str, Path], tmp_path: Path) -> None:
    before = paths["config"].read_text()
    result = runner.invoke(
        cli.app, [*build_args(paths, tmp_path), "--max-batch", "32", "--update-config"]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "error: cannot import tensorrt (No module named 'tensorrt'): "
        "needs TensorRT and a GPU (NGC TensorRT container)\n"
    )
    assert paths["config"].read_text() == before, "config must not change when no build can run"
    assert not paths["plan"].exists()


def test_tensorrt_version_gate() -> None:
    assert network.tensorrt_version_problem("10.16.1.11") is None
    assert network.tensorrt_version_problem("11.4.0.106") is None
    assert network.tensorrt_version_problem("12.0.0.1") == (
        "TensorRT 12.0.0.1 is not supported: build_engine.py builds strongly typed networks with "
        "the TensorRT 10 and 11 Python API; build in an NGC release that ships one of them "
        "(see docker/README.md)"
    )
    assert network.tensorrt_version_problem("8.6.1") is not None
