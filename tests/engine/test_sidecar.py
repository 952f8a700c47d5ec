"""camdet.engine.sidecar: the plan's sidecar, and ``build_engine.py check`` on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import build_engine as cli
from camdet.engine import config_edit, errors, onnx_checks
from camdet.engine import contract as contracts
from camdet.engine import sidecar as sidecars
from camdet.engine.files import file_sha256
from tests.helpers.engine import plan_check_args, runner
from tests.helpers.onnx_models import yolo_onnx


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
        *plan_check_args(paths),
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
