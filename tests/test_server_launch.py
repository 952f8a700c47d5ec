"""The real tritonserver's launch settings and how its death is reported (issue #12)."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from camdet.repository import PRODUCTION_REPOSITORY
from camdet.server import (
    _PYTHON_BACKEND_SHM,
    Ports,
    ServerError,
    TritonServer,
    has_cuda_gpu,
    portable_launch,
)

pytestmark = pytest.mark.server


def small_server(tmp_path: Path, verbose: bool = False) -> TritonServer:
    """A real portable tritonserver serving only ``validate`` (ready in seconds)."""
    repository = tmp_path / "repo"
    shutil.copytree(PRODUCTION_REPOSITORY / "validate", repository / "validate")
    ports = Ports.free()
    launch = portable_launch(repository, ports, tmp_path, verbose=verbose)
    return TritonServer(launch, ports, tmp_path / "tritonserver.log")


def test_python_backend_reads_each_shm_setting_separately(tmp_path: Path) -> None:
    # One "--backend-config=python,a=1,b=2" would reach the backend as the single key
    # "a" with the value "1,b=2"; read back what the Python backend actually applied.
    settings = dict(s.removeprefix("python,").split("=") for s in _PYTHON_BACKEND_SHM)
    assert set(settings) == {"shm-default-byte-size", "shm-growth-byte-size"}
    with small_server(tmp_path, verbose=True).start() as server:
        log = server.log_path.read_text()
    applied = re.search(r'"Shared memory configuration is ([^"]*)"', log)
    assert applied is not None, log[-2000:]
    values = dict(pair.split("=") for pair in applied.group(1).split(","))
    assert {k: values[k] for k in settings} == settings
    config = re.search(r'"backend configuration:\\n(\{.*\})"', log)
    assert config is not None
    cmdline = json.loads(config.group(1).replace('\\"', '"'))["cmdline"]
    assert {k: cmdline[k] for k in settings} == settings


def test_a_killed_server_is_reported_by_its_signal_first(tmp_path: Path) -> None:
    server = small_server(tmp_path).start()
    try:
        assert server.exit_cause() is None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
        report = server.death_report()
    finally:
        server.stop()
    first, *rest = report.splitlines()
    assert first == f"tritonserver was killed by signal 9 (SIGKILL); server log {server.log_path}:"
    assert 0 < len(rest) <= 15
    if not has_cuda_gpu():  # Triton's no-GPU messages would bury the cause
        assert not [line for line in rest if "CUDA" in line or "NVML" in line], rest


def test_a_server_that_cannot_start_says_its_exit_code_and_error(tmp_path: Path) -> None:
    server = small_server(tmp_path)
    (tmp_path / "repo" / "validate" / "config.pbtxt").write_text("name: 'validate' oops {")
    with pytest.raises(ServerError) as info:
        server.start(timeout_s=120)
    first, *rest = str(info.value).splitlines()
    assert first == f"tritonserver exited with code 1; server log {server.log_path}:"
    assert any(line.startswith("E") and "validate" in line for line in rest[:10]), rest
