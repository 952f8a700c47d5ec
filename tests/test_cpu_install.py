"""The CPU install (``pip install camdet``, no torch) serves, streams and postprocesses.

torch is made unimportable (:mod:`tests.helpers.no_torch`) in subprocesses and in the
portable server's Python-backend stubs; the CPU path must work without ever trying the
import, and the commands of the ``gpu`` extra must say so in one line (issue #25, item 4).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from camdet.cli.extras import GPU_EXTRA
from camdet.contract import detect
from camdet.scenes import render_frame
from camdet.serving.launch import has_cuda_gpu
from camdet.serving.server import Ports, serve
from tests.helpers.images import encode
from tests.helpers.no_torch import no_torch_dir, tried_imports

CPU_MODULES = [
    "camdet.cli.main",
    "camdet.cli.demo",
    "camdet.cli.doctor",
    "camdet.client.cli",
    "camdet.client.streamer",
    "camdet.doctor.local",
    "camdet.serving.server",
    "camdet.serving.portable",
    "camdet.perf.bench",
    "camdet.perf.bench_run",
    "camdet.perf.pipelines",
    "camdet.runtime.runners",
    "camdet.steps.postprocess.host",
    "camdet.steps.preprocess.runner",
    "camdet.geometry",
]
"""The CPU product's modules: CLI, client, serving, doctor, bench, the CPU steps."""

SCRIPT_CPU_POSTPROCESS = """
import numpy as np
from camdet.perf.pipelines import postprocess_raw
raw = np.zeros((1, 6, 100), np.float16)
raw[0, :4] = [[320], [320], [100], [80]]
raw[0, 4, 7] = 0.9
images = np.full((1, 3, 640, 640), 0.5, np.float16)
(found,) = postprocess_raw(raw, [(720, 1280)], images)
assert found.class_ids.tolist() == [0] and found.colors.tolist() == [[0.5, 0.5, 0.5]], found
"""


def _run_without_torch(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list]:
    folder, marker = no_torch_dir(tmp_path / "no_torch")
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
        check=False,
    )
    return result, tried_imports(marker)


def test_cpu_modules_import_without_torch(tmp_path: Path) -> None:
    code = "; ".join(f"import {m}" for m in CPU_MODULES)
    result, tried = _run_without_torch(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert tried == []


def test_gpus_without_torch_are_named_with_the_extra_to_install(tmp_path: Path) -> None:
    # The CPU arrangement either way; where the driver sees GPUs (a GPU machine with the
    # CPU install), one warning says how to serve on them.
    code = (
        "import logging; logging.basicConfig()\n"
        "from camdet.serving.launch import driver_gpu_count, has_cuda_gpu\n"
        "print(has_cuda_gpu(), has_cuda_gpu(), driver_gpu_count())\n"
    )
    result, _ = _run_without_torch(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second, gpus = result.stdout.split()
    assert (first, second) == ("False", "False")
    warning = (
        "but torch is not installed: serving the CPU arrangement. "
        'To serve on the GPU: pip install "camdet[gpu]"'
    )
    assert result.stderr.count(warning) == (1 if int(gpus) else 0), result.stderr


def test_asking_for_the_pipelines_without_torch_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import os; os.environ['CAMDET_PIPELINES'] = '1'\n"
        "from camdet.serving.launch import ServerError\n"
        "from camdet.serving.repository import PRODUCTION_REPOSITORY\n"
        "from camdet.serving.server import Ports, serve\n"
        "try:\n"
        "    with serve(PRODUCTION_REPOSITORY, Ports.free(), portable=True):\n"
        "        print('served')\n"
        "except ServerError as error:\n"
        "    print(error)\n"
    )
    result, _ = _run_without_torch(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == (
        "the one-process pipelines (CAMDET_PIPELINES=1) run torch, which is not installed "
        f"(the CPU install leaves it out): {GPU_EXTRA}"
    )


def test_cpu_postprocess_runs_without_torch(tmp_path: Path) -> None:
    result, tried = _run_without_torch(tmp_path, "-c", SCRIPT_CPU_POSTPROCESS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert tried == []


@pytest.mark.parametrize("command", [["demo", "--help"], ["serve", "--help"], ["bench", "--help"]])
def test_cpu_commands_without_torch(tmp_path: Path, command: list[str]) -> None:
    result, _ = _run_without_torch(tmp_path, "-m", "camdet.cli.main", *command)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    "command", [["detector", "train"], ["detector", "export"], ["perf", "gpu-parity"]]
)
def test_gpu_extra_commands_say_what_to_install(tmp_path: Path, command: list[str]) -> None:
    result, _ = _run_without_torch(tmp_path, "-m", "camdet.cli.main", *command, "--help")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: python -m camdet.cli.main {' '.join(command)} needs torch (torch is not "
        f"installed; the CPU install leaves it out): {GPU_EXTRA}"
    ], result.stderr


@pytest.mark.server
@pytest.mark.skipif(has_cuda_gpu(), reason="a GPU server runs the torch steps (camdet[gpu])")
def test_served_cpu_ensemble_without_torch(
    server, repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The portable CPU server's stubs cannot import torch and answer as the normal run."""
    folder, marker = no_torch_dir(tmp_path / "no_torch")
    # The stubs take their packages from this process's sys.path (serving.launch.stub_python),
    # read when the server starts: the blocker goes first for this server only.
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(folder))
        blocked = serve(repository, Ports.free(), portable=True, workdir=tmp_path / "triton")
        running = blocked.__enter__()
    try:
        rng = np.random.default_rng(7)
        jpegs = [encode(render_frame(rng, 1280, 720).image) for _ in range(4)]
        with (
            grpcclient.InferenceServerClient(running.grpc_url) as without,
            grpcclient.InferenceServerClient(server.grpc_url) as normal,
        ):
            for jpeg in jpegs:
                got, expected = detect(without, jpeg), detect(normal, jpeg)
                assert got == expected
                assert got, "no detections: the comparison has no substance"
    finally:
        blocked.__exit__(None, None, None)
    assert tried_imports(marker) == []
    # Not vacuous: the stubs' first site folder was the blocker.
    (pth,) = (tmp_path / "triton" / "stub-python").rglob("camdet-sys-path.pth")
    assert str(folder) in pth.read_text().splitlines()[0]
