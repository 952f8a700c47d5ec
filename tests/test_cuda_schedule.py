"""The primary CUDA context's scheduling flag, which the GPU pipelines may set."""

from __future__ import annotations

import subprocess
import sys

import pytest

from camdet.runtime.cuda_schedule import SCHEDULES, set_schedule


def test_an_unknown_schedule_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="one of auto, spin, yield, blocking-sync, got 'sleep'"):
        set_schedule(0, "sleep")


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "auto"])
def test_the_flag_holds_for_the_context_torch_creates(schedule: str) -> None:
    # A fresh process: the flag is per process and must be set before the context exists.
    code = (
        "import torch\n"
        "from camdet.runtime.cuda_schedule import schedule_of, set_schedule\n"
        f"print(set_schedule(0, {schedule!r}))\n"
        "torch.zeros(1, device='cuda').sum().item()\n"
        "print(schedule_of(0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, after = out.stdout.splitlines()
    assert first == f"{schedule} (context not created yet)"
    assert after == f"('{schedule}', True)"


@pytest.mark.gpu
def test_the_flag_is_set_on_a_context_already_active() -> None:
    # As in a Python-backend stub: something made the context before the model sets it.
    code = (
        "import torch\n"
        "from camdet.runtime.cuda_schedule import schedule_of, set_schedule\n"
        "torch.zeros(1, device='cuda').sum().item()\n"
        "print(set_schedule(0, 'blocking-sync'))\n"
        "torch.zeros(1, device='cuda').sum().item()\n"
        "print(schedule_of(0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "blocking-sync (context already active)",
        "('blocking-sync', True)",
    ]
