"""camdet.engine.onnx_checks and contract: an ONNX detector, its config and labels agree.

On real ONNX files made with ``onnx.helper`` (and one with ``torch.onnx.export``), run with
ONNX Runtime to prove they are real detectors of the stated shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto

from camdet.constants import INPUT_SHAPE, INPUT_SIZE
from camdet.engine import builder, errors, onnx_checks
from camdet.engine import contract as contracts
from camdet.engine.files import file_sha256
from tests.helpers.onnx_models import run_onnx, yolo_onnx
from tests.helpers.paths import DEMO_ONNX


def contract_error(onnx_path: Path, paths: dict[str, Path]) -> errors.ContractError:
    with pytest.raises(errors.ContractError) as caught:
        onnx_checks.validate_inputs(onnx_path, paths["config"], paths["labels"])
    return caught.value


def test_yolo_head_fixture_is_a_real_detector(tmp_path: Path) -> None:
    out = run_onnx(yolo_onnx(tmp_path / "m.onnx"), batch=2)
    assert out.shape == (2, 8, 8400)
    assert out.dtype == np.float32


def test_correct_head_passes(paths: dict[str, Path]) -> None:
    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    assert inputs.report.problems == []
    assert inputs.report.notes == []
    assert inputs.report.input_shape == ["batch", 3, 640, 640]
    assert inputs.report.output_shape == ["batch", 8, 8400]
    assert inputs.contract.num_classes == 4
    assert inputs.onnx_sha256 == file_sha256(paths["onnx"])


def test_wrong_names_are_reported_together(tmp_path: Path, paths: dict[str, Path]) -> None:
    bad = yolo_onnx(tmp_path / "bad.onnx", input_name="input", output_name="output")
    assert run_onnx(bad).shape == (2, 8, 8400)
    err = contract_error(bad, paths)
    assert err.problems == [
        "ONNX input is named 'input' but the config input is 'images'",
        "ONNX output is named 'output' but the config output is 'output0'",
    ]
    assert str(err) == (
        f"bad.onnx does not match {paths['config']} and labels.txt:\n"
        "  - ONNX input is named 'input' but the config input is 'images'\n"
        "  - ONNX output is named 'output' but the config output is 'output0'"
    )


def test_wrong_class_count(tmp_path: Path, paths: dict[str, Path]) -> None:
    bad = yolo_onnx(tmp_path / "nc3.onnx", num_classes=3)
    assert run_onnx(bad).shape == (2, 7, 8400)
    assert contract_error(bad, paths).problems == [
        "ONNX output 'output0' has 7 rows = 4 box + 3 class scores, "
        "but the labels file lists 4 classes"
    ]


def test_static_batch(tmp_path: Path, paths: dict[str, Path]) -> None:
    bad = yolo_onnx(tmp_path / "static.onnx", batch=1)
    assert run_onnx(bad, batch=1).shape == (1, 8, 8400)
    tail = (
        "has a static batch dimension 1; re-export it with a dynamic batch axis "
        "(ultralytics: dynamic=True) so the engine can batch up to max_batch_size 64"
    )
    assert contract_error(bad, paths).problems == [
        f"ONNX input 'images' {tail}",
        f"ONNX output 'output0' {tail}",
    ]


def test_wrong_anchor_count(tmp_path: Path, paths: dict[str, Path]) -> None:
    bad = yolo_onnx(tmp_path / "p6.onnx", strides=(8, 16, 32, 64))
    assert run_onnx(bad).shape == (2, 8, 8500)
    assert contract_error(bad, paths).problems == [
        "ONNX output 'output0' has 8500 anchors, expected 8400 = "
        "(640/8)^2 + (640/16)^2 + (640/32)^2"
    ]


def test_wrong_input_size_and_dtype(tmp_path: Path, paths: dict[str, Path]) -> None:
    bad = yolo_onnx(tmp_path / "small.onnx", size=320, input_type=TensorProto.UINT8)
    assert contract_error(bad, paths).problems == [
        "ONNX input 'images' is UINT8, expected float32 or float16",
        "ONNX input 'images' dimension 2 is 320, the config says 640",
        "ONNX input 'images' dimension 3 is 320, the config says 640",
        "ONNX output 'output0' has 2100 anchors, expected 8400 = "
        "(640/8)^2 + (640/16)^2 + (640/32)^2",
    ]


def test_float16_input_is_accepted(tmp_path: Path, paths: dict[str, Path]) -> None:
    half = yolo_onnx(tmp_path / "half.onnx", input_type=TensorProto.FLOAT16)
    assert run_onnx(half).shape == (2, 8, 8400)
    assert onnx_checks.validate_inputs(half, paths["config"], paths["labels"]).report.problems == []


def test_symbolic_head_dims_are_resolved_by_shape_inference(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    good = yolo_onnx(tmp_path / "sym.onnx", declared_output=["batch", "rows", "anchors"])
    report = onnx_checks.validate_inputs(good, paths["config"], paths["labels"]).report
    assert report.problems == []
    assert report.notes == []
    bad = yolo_onnx(
        tmp_path / "sym3.onnx", num_classes=3, declared_output=["batch", "rows", "anchors"]
    )
    assert contract_error(bad, paths).problems == [
        "ONNX output 'output0' has 7 rows = 4 box + 3 class scores, "
        "but the labels file lists 4 classes"
    ]


def test_torch_exported_detector(tmp_path: Path, paths: dict[str, Path]) -> None:
    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scales = torch.nn.ModuleList(torch.nn.Conv2d(3, 8, s, s) for s in (8, 16, 32))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.cat([conv(images).flatten(2) for conv in self.scales], 2).sigmoid()

    path = tmp_path / "torch.onnx"
    torch.onnx.export(
        Head(),
        (torch.zeros(1, 3, 640, 640),),
        str(path),
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    assert run_onnx(path).shape == (2, 8, 8400)
    inputs = onnx_checks.validate_inputs(path, paths["config"], paths["labels"])
    assert inputs.report.problems == []
    assert inputs.report.output_shape == ["batch", 8, 8400]


def test_config_and_labels_problems_come_with_onnx_problems(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("disc\nbox\ntriangle\n")
    config = paths["config"]
    config.write_text(config.read_text().replace("dims: [ 3, 640, 640 ]", "dims: [ 3, 320, 320 ]"))
    with pytest.raises(errors.ContractError) as caught:
        onnx_checks.validate_inputs(paths["onnx"], config, labels)
    assert caught.value.problems == [
        "config input 'images' dims are [3, 320, 320], expected [3, 640, 640] "
        "(CAMDET_INPUT_SIZE 640x640)",
        "config output 'output0' dims are [8, 8400], expected [7, 8400] = [4 + 3 classes, anchors]",
        "ONNX input 'images' dimension 2 is 640, the config says 320",
        "ONNX input 'images' dimension 3 is 640, the config says 320",
        "ONNX output 'output0' has 8 rows = 4 box + 4 class scores, "
        "but the labels file lists 3 classes",
    ]


def test_missing_files(tmp_path: Path, paths: dict[str, Path]) -> None:
    err = contract_error(tmp_path / "none.onnx", paths)
    assert err.problems == [f"ONNX file {tmp_path / 'none.onnx'} does not exist"]
    with pytest.raises(errors.ContractError, match="lists no class"):
        (tmp_path / "empty.txt").write_text("\n")
        onnx_checks.validate_inputs(paths["onnx"], paths["config"], tmp_path / "empty.txt")


@pytest.mark.skipif(not DEMO_ONNX.is_file(), reason="demo detector model.onnx not trained yet")
def test_demo_detector_matches_production_config() -> None:
    inputs = onnx_checks.validate_inputs(DEMO_ONNX, builder.DEFAULT_CONFIG, builder.DEFAULT_LABELS)
    assert inputs.report.problems == []
    assert run_onnx(DEMO_ONNX, batch=2).shape == (2, 8, 8400)


def test_production_config_contract() -> None:
    config = contracts.load_model_config(builder.DEFAULT_CONFIG)
    contract, problems = contracts.detector_contract(
        config, len(contracts.read_labels(builder.DEFAULT_LABELS))
    )
    assert problems == []
    assert contract is not None
    assert contract.input == contracts.TensorSpec("images", "TYPE_FP16", (3, *INPUT_SHAPE))
    assert contract.output == contracts.TensorSpec("output0", "TYPE_FP16", (8, 8400))
    assert contracts.expected_anchors(INPUT_SIZE) == 8400
