"""The portable GPU server's private CUDA MPS daemon (``CAMDET_MPS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from camdet.serving import mps
from camdet.serving.launch import ServerError


@pytest.mark.parametrize(
    ("choice", "gpu", "pipelines", "theirs", "expected"),
    [
        ("auto", True, True, False, True),  # the portable GPU server's pipeline processes
        ("auto", True, False, False, False),  # three processes, or the container: if asked
        ("1", True, False, False, True),
        ("auto", False, True, False, False),  # no GPU, nothing to share
        ("0", True, True, False, False),
        ("auto", True, True, True, False),  # the machine's own MPS serves them already
        ("1", True, True, True, False),
    ],
)
def test_when_a_private_daemon_is_started(
    choice: str, gpu: bool, pipelines: bool, theirs: bool, expected: bool
) -> None:
    assert mps.wanted(choice, gpu, pipelines, theirs) is expected


def test_the_machines_own_mps_is_found_by_its_variables_or_its_default_pipe(
    tmp_path: Path,
) -> None:
    assert not mps.machine_mps({}, tmp_path)
    assert mps.machine_mps({"CUDA_MPS_PIPE_DIRECTORY": "/run/mps"}, tmp_path)
    (tmp_path / "control").touch()  # what a daemon listening at the default pipe leaves
    assert mps.machine_mps({}, tmp_path)


def test_asking_for_mps_without_a_gpu_is_an_error_that_says_so() -> None:
    with pytest.raises(ServerError, match="CAMDET_MPS=1 needs a CUDA GPU"):
        mps.wanted("1", gpu=False, pipelines=True, theirs=False)


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
    with mps.private_mps("auto", gpu=False, pipelines=True) as env:
        assert env == {}


@pytest.mark.gpu
def test_a_cuda_process_runs_through_the_private_daemon() -> None:
    binary = mps.control_binary()
    assert binary is not None, "nvidia-cuda-mps-control is not on this GPU machine"
    daemon = mps.start(binary)
    folder = daemon.folder
    try:
        code = "import torch; print(int((torch.ones(1000, device='cuda') * 2).sum().item()))"
        # Bounded: a client of a daemon whose MPS server cannot start waits for ever.
        out = daemon.client(code, timeout_s=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "2000"
        # The daemon started an MPS server for that client: its log says so.
        assert "Starting new server" in daemon.log_tail(100)
    finally:
        daemon.stop()
    assert daemon.process.returncode is not None
    assert not folder.exists()
