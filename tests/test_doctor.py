"""``camdet doctor`` on this machine: real environment, real repository, real server.

GPU checks must be skipped with a reason on a CPU machine (and run on the GPU one);
a broken repository or an absent server must fail with a fix and exit 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from camdet.cli.main import app
from camdet.serving.launch import has_cuda_gpu
from camdet.serving.server import Ports, TritonServer

GPU_CHECKS = ("gpu", "nvjpeg-hw", "nvdec", "mps", "plan")
runner = CliRunner()


def doctor(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def by_name(report: dict) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in report["checks"]}


@pytest.mark.server
def test_healthy_machine_and_server_pass(server: TritonServer) -> None:
    code, report = doctor("--url", server.grpc_url, "--bench-seconds", "3")
    checks = by_name(report)
    assert code == 0 and report["ok"], report
    for name in ("python", "numpy", "dali", "repository", "contracts", "server", "models"):
        assert checks[name]["status"] == "pass", checks[name]
    assert "portable and production contracts are identical" in checks["contracts"]["detail"]
    assert "detect_video" in checks["models"]["detail"]
    assert checks["benchmark"]["status"] == "pass", checks["benchmark"]
    assert "0 failed" in checks["benchmark"]["detail"]
    for check in report["checks"]:
        assert check["status"] in ("pass", "warn", "fail", "skip")
        if check["status"] != "pass":
            assert check["fix"], f"{check['name']}: a non-pass must say why or what to do"


@pytest.mark.skipif(has_cuda_gpu(), reason="needs a machine without a GPU")
def test_gpu_checks_are_skipped_with_the_reason_on_a_cpu_machine() -> None:
    _, report = doctor()
    checks = by_name(report)
    for name in GPU_CHECKS:
        assert checks[name]["status"] == "skip"
        assert "no CUDA GPU here" in checks[name]["fix"]
    assert checks["server"]["status"] == "skip"
    assert "--url" in checks["server"]["fix"]


@pytest.mark.gpu
def test_gpu_checks_decode_on_the_gpu_machine() -> None:
    """On a GPU machine the GPU checks decode real frames (JPEG on the hardware decoder of
    an H100/A100-class GPU, an H.264 clip on NVDEC) instead of reading names."""
    _, report = doctor()
    checks = by_name(report)
    assert checks["gpu"]["status"] == "pass", checks["gpu"]
    jpeg = checks["nvjpeg-hw"]
    assert jpeg["status"] in ("pass", "warn") and "frames/s" in jpeg["detail"], jpeg
    if any(model in checks["gpu"]["detail"] for model in ("H100", "H200", "A100")):
        assert jpeg["status"] == "pass" and "hardware JPEG decoder in use" in jpeg["detail"]
    nvdec = checks["nvdec"]
    assert nvdec["status"] == "pass", nvdec
    assert "decoded 8 of 8 H.264 frames" in nvdec["detail"]
    assert checks["mps"]["status"] == "pass", checks["mps"]  # the H100 machines have MPS
    assert checks["contracts"]["status"] == "pass", checks["contracts"]


def test_broken_repository_fails_with_the_problem(repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "repo"
    for config in repository.glob("*/config.pbtxt"):
        if config.parent.name != "postprocess":
            (broken / config.parent.name).mkdir(parents=True)
            shutil.copy(config, broken / config.parent.name / "config.pbtxt")
    code, report = doctor("--repository", str(broken))
    check = by_name(report)["repository"]
    assert code == 1 and not report["ok"]
    assert check["status"] == "fail"
    assert "step model 'postprocess' is not in the repository" in check["detail"]
    assert "tests/test_repository.py" in check["fix"]


def test_absent_server_fails_and_exits_1() -> None:
    url = f"127.0.0.1:{Ports.free().grpc}"
    code, report = doctor("--url", url, "--bench-seconds", "1")
    check = by_name(report)["server"]
    assert code == 1
    assert check["status"] == "fail"
    assert f"no server answers at {url}" in check["detail"]
    assert "camdet serve" in check["fix"]


def test_table_output_names_every_check() -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.stdout
    for name in ("python", "numpy", "dali", "repository", "server"):
        assert name in result.stdout
