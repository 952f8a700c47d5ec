"""camdet.engine and its CLI build_engine.py: ONNX/config checks, profiles, config rewrite,
sidecars, the strongly typed build.

Everything but the ``tensorrt``-marked tests runs without TensorRT or a GPU, on real ONNX
files made here with ``onnx.helper`` (and one with ``torch.onnx.export``) and run with
ONNX Runtime to prove they are real detectors of the stated shape.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from onnx import TensorProto, helper
from rich.progress import Progress
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

import build_engine as cli
from camdet.constants import INPUT_SHAPE, INPUT_SIZE
from camdet.engine import (
    builder,
    calibration,
    config_edit,
    errors,
    inspection,
    network,
    onnx_checks,
)
from camdet.engine import (
    contract as contracts,
)
from camdet.engine import (
    sidecar as sidecars,
)
from camdet.engine.files import file_sha256
from camdet.engine.progress import PhaseTracker
from camdet.geometry import letterbox_image, to_model_input

REPO = Path(__file__).resolve().parent.parent
PRODUCTION = REPO / "model_repository"
DEMO_ONNX = PRODUCTION / "detector" / "1" / "model.onnx"
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(
    not HAVE_TENSORRT, reason="needs TensorRT and a GPU (NGC TensorRT container)"
)
runner = CliRunner()


# ----------------------------------------------------------------------------- fixtures


def yolo_onnx(
    path: Path,
    *,
    num_classes: int = 4,
    input_name: str = "images",
    output_name: str = "output0",
    batch: int | str = "batch",
    strides: tuple[int, ...] = (8, 16, 32),
    size: int = INPUT_SIZE,
    declared_output: list[int | str] | None = None,
    input_type: int = TensorProto.FLOAT,
) -> Path:
    """A real YOLO-layout head: one strided conv per scale, flattened and concatenated.

    Output ``[batch, 4 + num_classes, sum((size / s)^2)]``, sigmoid scores.
    """
    rows = 4 + num_classes
    anchors = sum((size // s) ** 2 for s in strides)
    rng = np.random.default_rng(0)
    nodes, inits, flats = [], [], []
    source = input_name
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT))
        source = "as_float"
    inits.append(helper.make_tensor("flat_shape", TensorProto.INT64, [3], [0, rows, -1]))
    for s in strides:
        weight = rng.normal(0, 0.01, (rows, 3, s, s)).astype(np.float32)
        inits.append(helper.make_tensor(f"w{s}", TensorProto.FLOAT, weight.shape, weight.ravel()))
        nodes.append(helper.make_node("Conv", [source, f"w{s}"], [f"c{s}"], strides=[s, s]))
        nodes.append(helper.make_node("Reshape", [f"c{s}", "flat_shape"], [f"f{s}"]))
        flats.append(f"f{s}")
    nodes.append(helper.make_node("Concat", flats, ["cat"], axis=2))
    nodes.append(helper.make_node("Sigmoid", ["cat"], [output_name]))
    graph = helper.make_graph(
        nodes,
        "yolo_head",
        [helper.make_tensor_value_info(input_name, input_type, [batch, 3, size, size])],
        [
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, declared_output or [batch, rows, anchors]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run_onnx(path: Path, batch: int = 2) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    return session.run(None, {inp.name: np.zeros((batch, 3, 640, 640), dtype)})[0]


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


def contract_error(onnx_path: Path, paths: dict[str, Path]) -> errors.ContractError:
    with pytest.raises(errors.ContractError) as caught:
        onnx_checks.validate_inputs(onnx_path, paths["config"], paths["labels"])
    return caught.value


# ----------------------------------------------------------------------------- ONNX checks


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


# ----------------------------------------------------------------------------- profiles


def test_profile_rule() -> None:
    assert contracts.derive_profile(64, [16, 32, 64]) == contracts.BatchProfile(1, 64, 64)
    assert contracts.derive_profile(64, [8, 16]) == contracts.BatchProfile(1, 16, 64)
    assert contracts.derive_profile(32, []) == contracts.BatchProfile(1, 32, 32)
    assert contracts.BatchProfile(1, 16, 64).shapes((3, 640, 640)) == {
        "min": [1, 3, 640, 640],
        "opt": [16, 3, 640, 640],
        "max": [64, 3, 640, 640],
    }
    with pytest.raises(errors.ProfileMismatchError, match="1 <= min <= opt <= max"):
        contracts.BatchProfile(1, 65, 64)


def test_requested_profile_and_refusal(paths: dict[str, Path]) -> None:
    contract = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"]).contract
    assert config_edit.requested_profile(contract, None, None) == contracts.BatchProfile(1, 64, 64)
    assert config_edit.requested_profile(contract, 32, None) == contracts.BatchProfile(1, 32, 32)
    assert (
        config_edit.profile_mismatch(contracts.BatchProfile(1, 64, 64), contract, paths["config"])
        is None
    )
    assert config_edit.profile_mismatch(
        contracts.BatchProfile(1, 16, 32), contract, paths["config"]
    ) == (
        f"requested profile min=1 opt=16 max=32 disagrees with {paths['config']} "
        "(max_batch_size 64, preferred_batch_size [16, 32, 64] -> min=1 opt=64 max=64); "
        "pass --update-config to rewrite the config's batch settings"
    )


def _without_batching(config: mc.ModelConfig) -> mc.ModelConfig:
    copy = mc.ModelConfig()
    copy.CopyFrom(config)
    copy.max_batch_size = 0
    del copy.dynamic_batching.preferred_batch_size[:]
    return copy


def test_update_config_round_trip(paths: dict[str, Path]) -> None:
    config = paths["config"]
    before_text = config.read_text()
    before = contracts.load_model_config(config)
    sizes = config_edit.update_config_batching(config, contracts.BatchProfile(1, 32, 48))
    assert sizes == [16, 32]
    after = contracts.load_model_config(config)
    assert after.max_batch_size == 48
    assert list(after.dynamic_batching.preferred_batch_size) == [16, 32]
    assert contracts.derive_profile(
        after.max_batch_size, after.dynamic_batching.preferred_batch_size
    ) == (contracts.BatchProfile(1, 32, 48))
    assert _without_batching(after) == _without_batching(before)
    text = config.read_text()
    comments = [line for line in before_text.splitlines() if line.startswith("#")]
    assert comments and all(line in text for line in comments)
    assert "max_queue_delay_microseconds: 1000" in text
    config_edit.update_config_batching(config, contracts.BatchProfile(1, 64, 64))
    assert config.read_text() == before_text


@pytest.mark.parametrize(
    "batching",
    [
        "dynamic_batching {\n  preferred_batch_size: 16\n  preferred_batch_size: 32\n}\n",
        "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n",
        "",
    ],
)
def test_update_config_other_layouts(tmp_path: Path, batching: str) -> None:
    config = tmp_path / "config.pbtxt"
    config.write_text(
        f'name: "detector"\nplatform: "tensorrt_plan"\nmax_batch_size: 32\n{batching}'
    )
    config_edit.update_config_batching(config, contracts.BatchProfile(1, 8, 16))
    parsed = text_format.Parse(config.read_text(), mc.ModelConfig())
    assert parsed.max_batch_size == 16
    assert list(parsed.dynamic_batching.preferred_batch_size) == [8]
    assert ("max_queue_delay_microseconds: 100" in config.read_text()) == ("100" in batching)


def test_update_config_cli_and_ensemble_warning(repo_copy: Path) -> None:
    config = repo_copy / "detector" / "config.pbtxt"
    result = runner.invoke(
        cli.app,
        ["update-config", "--config", str(config), "--max-batch", "32", "--opt-batch", "16"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{config}: profile min=1 opt=64 max=64 -> min=1 opt=16 max=32 "
        "(max_batch_size 32, preferred_batch_size [16])\n"
    )
    # (the INFO log line about the rewrite goes to stderr before the warnings): one
    # warning per ensemble that runs the detector
    for ensemble in ("detect", "detect_video"):
        assert (
            f"warning: ensemble '{ensemble}' has max_batch_size 64 > detector max_batch_size 32; "
            f"lower it in {repo_copy / ensemble / 'config.pbtxt'} (Triton requires an ensemble's "
            "max_batch_size to be at most each step's)\n"
        ) in result.stderr
    parsed = contracts.load_model_config(config)
    assert (parsed.max_batch_size, list(parsed.dynamic_batching.preferred_batch_size)) == (32, [16])


# ----------------------------------------------------------------------------- CLI validate, build


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


def _build_args(paths: dict[str, Path], tmp_path: Path) -> list[str]:
    return [
        "build",
        "--onnx",
        str(paths["onnx"]),
        "--config",
        str(paths["config"]),
        "--labels",
        str(paths["labels"]),
        "--plan",
        str(paths["plan"]),
        "--timing-cache",
        str(tmp_path / "cache" / "timing.cache"),
        "--no-progress",
    ]


def test_build_refuses_a_profile_that_disagrees_with_the_config(
    paths: dict[str, Path], tmp_path: Path
) -> None:
    before = paths["config"].read_text()
    result = runner.invoke(cli.app, [*_build_args(paths, tmp_path), "--max-batch", "32"])
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
    result = runner.invoke(cli.app, _build_args(paths, tmp_path))
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
        cli.app, [*_build_args(paths, tmp_path), "--max-batch", "32", "--update-config"]
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


# ----------------------------------------------------------------------------- sidecar & check


def _sidecar(
    plan: Path, inputs: onnx_checks.ValidatedInputs, **overrides: object
) -> sidecars.PlanSidecar:
    contract = inputs.contract
    values: dict[str, object] = {
        "tensorrt_version": "10.16.1.11",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "precision": "fp16",
        "profiles": [contract.profile_record(contract.profile)],
        "onnx_sha256": inputs.onnx_sha256,
        "plan_sha256": file_sha256(plan),
        "built_at": "2026-11-25T19:00:00+00:00",
    }
    values.update(overrides)
    sidecar = sidecars.PlanSidecar(**values)  # type: ignore[arg-type]
    sidecars.sidecar_path(plan).write_text(sidecar.to_json())
    return sidecar


def test_sidecar_round_trip_and_errors(tmp_path: Path, paths: dict[str, Path]) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"raw plan bytes")
    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    sidecar = _sidecar(plan, inputs, layers={"count": 3})
    assert sidecars.sidecar_path(plan) == tmp_path / "model.plan.json"
    assert sidecars.read_sidecar(plan) == sidecar
    assert json.loads(sidecars.sidecar_path(plan).read_text())["profiles"] == [
        {
            "input": "images",
            "min": [1, 3, 640, 640],
            "opt": [64, 3, 640, 640],
            "max": [64, 3, 640, 640],
        }
    ]
    with pytest.raises(errors.SidecarError, match="lacks gpu_name, plan_sha256"):
        sidecars.PlanSidecar.from_json(
            json.dumps(
                {
                    "tensorrt_version": "10",
                    "compute_capability": "9.0",
                    "precision": "fp16",
                    "profiles": [],
                    "onnx_sha256": "",
                    "built_at": "",
                }
            )
        )
    with pytest.raises(errors.SidecarError, match="no sidecar"):
        sidecars.read_sidecar(tmp_path / "other.plan")


def test_check_plan_compatibility() -> None:
    sidecar = sidecars.PlanSidecar("10.16.1.11", "NVIDIA A10", "8.6", "fp16", [], "", "", "")
    assert sidecars.check_plan_compatibility(sidecar, "10.16.1.11", "NVIDIA A10", "8.6") == []
    assert sidecars.check_plan_compatibility(
        sidecar, "10.13.3.9", "NVIDIA H100 80GB HBM3", "9.0"
    ) == [
        "plan was built with TensorRT 10.16.1.11 but this is TensorRT 10.13.3.9; a plan only "
        "loads in the TensorRT version that built it",
        "plan was built for compute capability 8.6 but this GPU has 9.0; plans are specific to "
        "the compute capability",
        "plan was built on 'NVIDIA A10' but this GPU is 'NVIDIA H100 80GB HBM3'; TensorRT timed "
        "its kernels for the GPU model it was built on",
    ]


def test_check_plan_freshness(tmp_path: Path, paths: dict[str, Path]) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    sidecar = _sidecar(plan, inputs)
    record = inputs.contract.profile_record(inputs.contract.profile)
    fresh = sidecars.check_plan_freshness(
        sidecar,
        onnx_sha256=inputs.onnx_sha256,
        precision="fp16",
        profile_record=record,
        plan_sha256=file_sha256(plan),
    )
    assert fresh == []
    other = inputs.contract.profile_record(contracts.BatchProfile(1, 16, 32))
    stale = sidecars.check_plan_freshness(
        sidecar, onnx_sha256="f" * 64, precision="int8", profile_record=other, plan_sha256="0"
    )
    assert stale[0] == (
        f"ONNX file changed since the build (sha256 {inputs.onnx_sha256[:12]}... -> "
        "ffffffffffff...)"
    )
    assert stale[1] == "plan precision is fp16, int8 was asked for"
    assert stale[2].startswith("plan profiles [{'input': 'images', 'min': [1, 3, 640, 640]")
    assert stale[3] == "plan file differs from the one the sidecar describes (sha256 mismatch)"


def test_a_weakly_typed_plan_is_stale(tmp_path: Path, paths: dict[str, Path]) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    old = json.loads(_sidecar(plan, inputs).to_json())
    del old["strongly_typed"], old["converted_onnx_sha256"], old["modelopt_version"]
    old["format"] = 1  # written by the TensorRT 10 weakly typed builder
    sidecars.sidecar_path(plan).write_text(json.dumps(old))
    gpu = sidecars.GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0")
    assert sidecars.plan_problems(plan, inputs, "fp16", "10.16.1.11", gpu) == [
        "plan was built as a weakly typed network (sidecar format 1); TensorRT 11 removed "
        "those, rebuild it strongly typed from the converted ONNX"
    ]


def _check_args(paths: dict[str, Path], *extra: str) -> list[str]:
    return [
        "check",
        "--plan",
        str(paths["plan"]),
        "--onnx",
        str(paths["onnx"]),
        "--config",
        str(paths["config"]),
        "--labels",
        str(paths["labels"]),
        "--tensorrt-version",
        "10.16.1.11",
        "--gpu-name",
        "NVIDIA H100 80GB HBM3",
        "--compute-capability",
        "9.0",
        *extra,
    ]


def test_check_cli(paths: dict[str, Path]) -> None:
    missing = runner.invoke(cli.app, _check_args(paths))
    assert missing.exit_code == 1
    assert missing.stdout == f"{paths['plan']} must be rebuilt:\n  - no plan at {paths['plan']}\n"

    paths["plan"].write_bytes(b"raw plan")
    no_sidecar = runner.invoke(cli.app, _check_args(paths))
    assert no_sidecar.exit_code == 1
    assert f"  - no sidecar {sidecars.sidecar_path(paths['plan'])}\n" in no_sidecar.stdout

    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    _sidecar(paths["plan"], inputs)
    ok = runner.invoke(cli.app, _check_args(paths))
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == (
        f"{paths['plan']} fits TensorRT 10.16.1.11 on NVIDIA H100 80GB HBM3 (compute capability "
        "9.0), fp16, profile min=1 opt=64 max=64\n"
    )

    upgraded = runner.invoke(
        cli.app,
        [
            *_check_args(paths)[:-6],
            "--tensorrt-version",
            "10.13.3.9",
            "--gpu-name",
            "NVIDIA L4",
            "--compute-capability",
            "8.9",
        ],
    )
    assert upgraded.exit_code == 1
    assert upgraded.stdout.splitlines() == [
        f"{paths['plan']} must be rebuilt:",
        "  - plan was built with TensorRT 10.16.1.11 but this is TensorRT 10.13.3.9; a plan only "
        "loads in the TensorRT version that built it",
        "  - plan was built for compute capability 9.0 but this GPU has 8.9; plans are specific "
        "to the compute capability",
        "  - plan was built on 'NVIDIA H100 80GB HBM3' but this GPU is 'NVIDIA L4'; TensorRT "
        "timed its kernels for the GPU model it was built on",
    ]

    int8 = runner.invoke(cli.app, _check_args(paths, "--precision", "int8"))
    assert int8.exit_code == 1
    assert "  - plan precision is fp16, int8 was asked for\n" in int8.stdout

    yolo_onnx(paths["onnx"], strides=(8, 16, 32))  # same graph -> same hash: still fresh
    assert runner.invoke(cli.app, _check_args(paths)).exit_code == 0
    config_edit.update_config_batching(paths["config"], contracts.BatchProfile(1, 32, 64))
    reprofiled = runner.invoke(cli.app, _check_args(paths))
    assert reprofiled.exit_code == 1
    assert "  - plan profiles [{'input': 'images'" in reprofiled.stdout


def test_parse_nvidia_smi() -> None:
    text = "0, NVIDIA H100 80GB HBM3, 9.0\n1, NVIDIA RTX 6000 Ada Generation, 8.9\n"
    assert sidecars.parse_nvidia_smi(text) == [
        sidecars.GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0"),
        sidecars.GpuInfo(1, "NVIDIA RTX 6000 Ada Generation", "8.9"),
    ]
    with pytest.raises(errors.GpuQueryError, match="unexpected nvidia-smi line"):
        sidecars.parse_nvidia_smi("0, NVIDIA H100, [N/A]")


# ----------------------------------------------------------------------------- engine inspection


def _io(
    input_dtype: str = "HALF", output_shape: list[int] | None = None, opt: int = 64
) -> list[inspection.IoTensor]:
    profile = contracts.BatchProfile(1, opt, 64).shapes((3, 640, 640))
    return [
        inspection.IoTensor("images", True, input_dtype, profile, [opt, 3, 640, 640]),
        inspection.IoTensor("output0", False, "HALF", None, output_shape or [opt, 8, 8400]),
    ]


def test_check_engine_io(paths: dict[str, Path]) -> None:
    contract = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"]).contract
    profile = contract.profile
    assert inspection.check_engine_io(_io(), contract, profile) == []
    assert inspection.check_engine_io(_io("FLOAT", [64, 8, 8500]), contract, profile) == [
        "engine input 'images' is FLOAT, the config says TYPE_FP16",
        "engine output 'output0' has shape [64, 8, 8500] at OPT, expected [64, 8, 8400]",
    ]
    problems = inspection.check_engine_io(_io(opt=16), contract, profile)
    assert problems[0] == (
        "engine input 'images' has shape [16, 3, 640, 640] at OPT, expected [64, 3, 640, 640]"
    )
    assert problems[-1].startswith("engine profile 0 is {'min': [1, 3, 640, 640], 'opt': [16,")


TRT10_DETAILED = {
    "Layers": [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to /model.0/conv/Conv",
            "LayerType": "Reformat",
            "Inputs": [{"Name": "images", "Format/Datatype": "Row major linear FP16 format"}],
            "Outputs": [
                {"Name": "r", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}
            ],
        },
        {
            "Name": "/model.0/conv/Conv + PWN(/model.0/act/Sigmoid)",
            "LayerType": "CaskConvolution",
            "Inputs": [
                {"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}
            ],
            "Outputs": [
                {"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}
            ],
        },
        {
            "Name": "/model.22/Concat",
            "LayerType": "Reformat",
            "Outputs": [{"Format/Datatype": "Float"}],
        },
        {
            "Name": "shape",
            "LayerType": "NoOp",
            "Outputs": [{"Format/Datatype": "N/A due to dynamic shapes"}],
        },
    ],
    "Bindings": ["images", "output0"],
}


def test_summarize_engine_information() -> None:
    summary = inspection.summarize_engine_information(json.dumps(TRT10_DETAILED))
    assert summary == inspection.LayerSummary(
        4,
        {"FP16": 1, "INT8": 1, "FP32": 1, "other": 1},
        {"Reformat": 2, "CaskConvolution": 1, "NoOp": 1},
    )
    trt11 = {
        "Layers": [
            {"LayerType": "CaskConvolution", "Outputs": [{"DataType": "Half", "Format": "kLINEAR"}]}
        ]
    }
    assert inspection.summarize_engine_information(json.dumps(trt11)).by_precision == {"FP16": 1}
    names_only = {"Layers": ["conv1", "conv2"], "Bindings": ["images", "output0"]}
    assert inspection.summarize_engine_information(
        json.dumps(names_only)
    ) == inspection.LayerSummary(2, {"unknown": 2}, {})


class _FakeParserError:
    def node(self) -> int:
        return 12

    def node_name(self) -> str:
        return "/model.22/dfl/Softmax"

    def node_operator(self) -> str:
        return "Softmax"

    def desc(self) -> str:
        return "Unsupported axis"

    def code(self) -> str:
        return "ErrorCode.UNSUPPORTED_NODE"


def test_describe_parser_error() -> None:
    assert network.describe_parser_error(_FakeParserError()) == (
        "node 12 (/model.22/dfl/Softmax: Softmax): Unsupported axis [ErrorCode.UNSUPPORTED_NODE]"
    )
    err = errors.OnnxParseError("TensorRT's ONNX parser rejected m.onnx", ["a", "b"])
    assert str(err) == "TensorRT's ONNX parser rejected m.onnx:\n  - a\n  - b"


def test_phase_tracker() -> None:
    with Progress(disable=True) as progress:
        tracker = PhaseTracker(progress)
        tracker.start("Building engine", None, 3)
        tracker.start("Tactic timing", "Building engine", 10)
        names = [task.description for task in progress.tasks]
        assert names == ["Building engine", "  Tactic timing"]
        tracker.step("Tactic timing", 4)
        assert progress.tasks[1].completed == 5
        tracker.finish("Tactic timing")
        tracker.step("gone", 1)  # unknown phases are ignored, never raised into TensorRT
        assert [task.description for task in progress.tasks] == ["Building engine"]


# ----------------------------------------------------------------------------- calibration


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_calibration_array_from_a_folder(tmp_path: Path) -> None:
    frames = {"a.png": _rgb(720, 1280, 1), "b.png": _rgb(480, 640, 2), "c.png": _rgb(1080, 608, 3)}
    for name, rgb in frames.items():
        assert cv2.imwrite(str(tmp_path / name), rgb[..., ::-1])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    source = calibration.CalibrationSource(tmp_path, frames=10)
    assert source.available() == 4
    batch = calibration.calibration_array(source.frames_rgb())
    assert batch.shape == (3, 3, *INPUT_SHAPE), "the unreadable file is skipped"
    assert batch.dtype == np.float32
    assert batch.flags.c_contiguous
    for got, name in zip(batch, ("a.png", "b.png", "c.png"), strict=True):
        np.testing.assert_array_equal(
            got, to_model_input(letterbox_image(frames[name]), np.float32)
        )
    with pytest.raises(errors.CalibrationError, match="no readable frame"):
        calibration.calibration_array(iter(()))


def test_synthetic_calibration_frames() -> None:
    frames = list(calibration.CalibrationSource(None, frames=2, seed=3).frames_rgb())
    assert [f.shape for f in frames] == [(1080, 1920, 3), (720, 1280, 3)]
    assert all(f.dtype == np.uint8 for f in frames)
    assert calibration.calibration_array(iter(frames)).shape == (2, 3, *INPUT_SHAPE)


def test_synthetic_frames_without_scenes_fail_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "camdet.scenes", None)
    with pytest.raises(
        errors.CalibrationError, match=r"synthetic calibration needs camdet\.scenes"
    ):
        calibration.synthetic_frames(4, seed=0)


def test_int8_without_frames_is_refused_before_converting(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    request = builder.BuildRequest(
        onnx=paths["onnx"],
        config=paths["config"],
        labels=paths["labels"],
        precision=contracts.Precision.INT8,
        calibration=calibration.CalibrationSource(tmp_path / "frames", frames=100),
        timing_cache=tmp_path / "cache" / "timing.cache",
    )
    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    kept = request.converted_onnx_for(inputs.onnx_sha256)
    assert kept == tmp_path / "cache" / f"detector-{inputs.onnx_sha256[:16]}-640x640-int8.onnx"
    with pytest.raises(errors.CalibrationError) as caught:
        builder.convert_for_build(request, inputs)
    assert str(caught.value) == (
        "INT8 needs at least 8 calibration frames and up to 100 frames from "
        f"{tmp_path / 'frames'} gives 0; "
        f"no kept conversion at {kept}"
    )
    assert not kept.exists()


# ----------------------------------------------------------------------------- TensorRT (GPU)


@pytest.mark.tensorrt
@needs_tensorrt
def test_build_fp16_plan_and_check(paths: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(cli.app, _build_args(paths, tmp_path))
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
    checked = runner.invoke(
        cli.app,
        [
            "check",
            "--plan",
            str(paths["plan"]),
            "--onnx",
            str(paths["onnx"]),
            "--config",
            str(paths["config"]),
            "--labels",
            str(paths["labels"]),
        ],
    )
    assert checked.exit_code == 0, checked.output


@pytest.mark.tensorrt
@needs_tensorrt
def test_build_int8_keeps_its_quantized_onnx(paths: dict[str, Path], tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(8):
        assert cv2.imwrite(str(frames / f"{i}.jpg"), _rgb(720, 1280, i))
    cache = tmp_path / "cache" / "int8.onnx"
    args = [
        *_build_args(paths, tmp_path),
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


# ----------------------------------------------------------------------------- orchestration
# A strict stand-in for the slice of the TensorRT 10/11 Python API that camdet.engine calls
# (names and signatures from TensorRT's API docs and samples). It proves the glue runs end
# to end here - parse, I/O types, profile, precision, calibration, caches, progress,
# inspection, sidecar - not that TensorRT behaves so: the tensorrt-marked tests do that.


class _Enum:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _fake_tensorrt(calls: list[str]) -> object:  # noqa: C901 - one fake module, many classes
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.16.1.11"
    dtypes = types.SimpleNamespace(HALF=_Enum("HALF"), FLOAT=_Enum("FLOAT"))
    trt.DataType = dtypes
    trt.TensorFormat = types.SimpleNamespace(LINEAR=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=_Enum("WORKSPACE"))
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED=_Enum("DETAILED"))
    # No BuilderFlag: TensorRT 11 removed the precision flags, so the build must not need them.
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.TensorIOMode = types.SimpleNamespace(INPUT=_Enum("INPUT"), OUTPUT=_Enum("OUTPUT"))
    trt.LayerInformationFormat = types.SimpleNamespace(JSON=_Enum("JSON"))

    class ILogger:
        Severity = types.SimpleNamespace(
            **{n: _Enum(n) for n in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")}
        )

    class IProgressMonitor:
        pass

    class Tensor:
        __slots__ = ("_dtype", "allowed_formats", "is_network_input", "name", "shape")

        def __init__(self, name: str, shape: list[int], is_input: bool, dtype: _Enum) -> None:
            self.name, self.shape, self.is_network_input = name, shape, is_input
            self._dtype, self.allowed_formats = dtype, 0

        @property
        def dtype(self) -> _Enum:  # strongly typed: read-only, from the ONNX file
            return self._dtype

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            for values, target, is_input in (
                (model.graph.input, self.network.inputs, True),
                (model.graph.output, self.network.outputs, False),
            ):
                for v in values:
                    dims = [d.dim_value or -1 for d in v.type.tensor_type.shape.dim]
                    dtype = {1: dtypes.FLOAT, 10: dtypes.HALF}[v.type.tensor_type.elem_type]
                    target.append(Tensor(v.name, dims, is_input, dtype))
                    calls.append(f"{v.name} {dtype.name}")
            calls.append("ops " + " ".join(sorted({n.op_type for n in model.graph.node})))
            calls.append("parse")
            return True

    class Profile:
        def set_shape(self, name: str, low: list[int], opt: list[int], high: list[int]) -> None:
            self.shapes = (name, list(low), list(opt), list(high))

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return self.blob + b"+timed"

    class Config:
        __slots__ = (
            "builder_optimization_level",
            "profiles",
            "profiling_verbosity",
            "progress_monitor",
            "timing_cache",
            "workspace",
        )

        def __init__(self) -> None:
            self.profiles, self.progress_monitor = [], None

        def set_memory_pool_limit(self, pool: _Enum, size: int) -> None:
            self.workspace = (pool.name, size)

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(bytes(blob))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.timing_cache

    class HostMemory(bytes):
        nbytes = property(len)

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            assert flags == 1 << 0, "STRONGLY_TYPED"
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> HostMemory:
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.step_complete("Building engine", 0)
                monitor.phase_finish("Building engine")
            state = {
                "io": [
                    (t.name, t.dtype.name, t.shape, t.is_network_input)
                    for t in network.inputs + network.outputs
                ],
                "profile": config.profiles[0].shapes,
            }
            return HostMemory(json.dumps(state).encode())

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.batch = engine, None

        def set_input_shape(self, name: str, shape: list[int]) -> bool:
            self.batch = shape[0]
            return True

        def get_tensor_shape(self, name: str) -> list[int]:
            _, _, shape, _ = self.engine.io[name]
            return [self.batch, *shape[1:]]

    class Inspector:
        def get_engine_information(self, fmt: _Enum) -> str:
            assert fmt.name == "JSON"
            return json.dumps(TRT10_DETAILED)

    class Engine:
        def __init__(self, state: dict) -> None:
            self.io = {t[0]: t for t in state["io"]}
            self.names = [t[0] for t in state["io"]]
            self.profile = state["profile"]

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> _Enum:
            return trt.TensorIOMode.INPUT if self.io[name][3] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> _Enum:
            return getattr(dtypes, self.io[name][1])

        def get_tensor_profile_shape(self, name: str, index: int) -> list[list[int]]:
            assert (name, index) == (self.profile[0], 0)
            return self.profile[1:]

        def create_execution_context(self) -> Context:
            return Context(self)

        def create_engine_inspector(self) -> Inspector:
            return Inspector()

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> Engine:
            return Engine(json.loads(plan))

    for cls in (ILogger, IProgressMonitor, OnnxParser, Builder, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    # ModelOpt looks for TensorRT plugins when `import tensorrt` works; the stand-in is
    # TensorRT's builder API only, so ModelOpt must see no TensorRT, as on a CPU machine.
    from modelopt.onnx import trt_utils

    monkeypatch.setattr(trt_utils, "TRT_PYTHON_AVAILABLE", False)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", _fake_tensorrt(calls))
    gpu = sidecars.GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0")
    monkeypatch.setattr(builder, "query_gpu", lambda index=0: gpu)
    return calls


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
        assert cv2.imwrite(str(frames / f"{i}.jpg"), _rgb(360, 640, i))
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
