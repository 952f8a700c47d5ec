"""The portable GPU server's private CUDA MPS daemon (``CAMDET_MPS``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from camdet.serving import mps
from camdet.serving.launch import ServerError


@pytest.mark.parametrize(
    ("choice", "gpu", "portable", "env", "expected"),
    [
        ("auto", True, True, {}, True),  # the portable GPU server: several CUDA processes
        ("auto", True, False, {}, False),  # the container's server: only if asked
        ("1", True, False, {}, True),
        ("auto", False, True, {}, False),  # no GPU, nothing to share
        ("0", True, True, {}, False),
        ("auto", True, True, {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/nvidia-mps"}, False),  # theirs
    ],
)
def test_when_a_private_daemon_is_started(
    choice: str, gpu: bool, portable: bool, env: dict[str, str], expected: bool
) -> None:
    assert mps.wanted(choice, gpu, portable, env) is expected


def test_asking_for_mps_without_a_gpu_is_an_error_that_says_so() -> None:
    with pytest.raises(ServerError, match="CAMDET_MPS=1 needs a CUDA GPU"):
        mps.wanted("1", gpu=False, portable=True, env={})


@pytest.mark.parametrize(("value", "expected"), [("", "auto"), ("ON", "1"), ("no", "0")])
def test_the_setting_reads_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("CAMDET_MPS", value)
    assert mps.setting() == expected


def test_an_unknown_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMDET_MPS", "sometimes")
    with pytest.raises(ServerError, match="CAMDET_MPS='sometimes': expected auto, 1 or 0"):
        mps.setting()


def test_without_a_gpu_auto_starts_nothing() -> None:
    with mps.private_mps("auto", gpu=False, portable=True) as env:
        assert env == {}


@pytest.mark.gpu
def test_a_cuda_process_runs_through_the_private_daemon() -> None:
    binary = mps.control_binary()
    assert binary is not None, "nvidia-cuda-mps-control is not on this GPU machine"
    daemon = mps.start(binary)
    folder = daemon.folder
    try:
        code = "import torch; print(int((torch.ones(1000, device='cuda') * 2).sum().item()))"
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **daemon.env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "2000"
        # The daemon started an MPS server for that client: its log says so.
        assert "Starting new server" in daemon.log_tail(100)
    finally:
        daemon.stop()
    assert daemon.process.returncode is not None
    assert not folder.exists()
