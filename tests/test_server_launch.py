"""The real tritonserver's launch settings and how its death is reported (issue #12)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camdet.serving.launch import (
    _PYTHON_BACKEND_SHM,
    SHM_DIR,
    ServerError,
    has_cuda_gpu,
    portable_launch,
    spawn,
)
from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.serving.server import Ports, TritonServer

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


def test_a_killed_servers_shared_memory_is_removed_when_it_is_reaped(tmp_path: Path) -> None:
    # The Python backend removes its /dev/shm regions when the server shuts down; a server
    # killed with its stubs leaves them (64 MiB each), unless stop() removes them.
    server = small_server(tmp_path).start()
    prefix = server.launch.shm_prefix
    assert prefix is not None and prefix.startswith("camdet_")
    try:
        regions = list(SHM_DIR.glob(f"{prefix}*"))
        assert regions, "no region under the server's own prefix"
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
        assert all(region.exists() for region in regions)  # what a kill leaves behind
    finally:
        server.stop()
    assert not list(SHM_DIR.glob(f"{prefix}*"))


def test_a_server_that_cannot_start_says_its_exit_code_and_error(tmp_path: Path) -> None:
    server = small_server(tmp_path)
    (tmp_path / "repo" / "validate" / "config.pbtxt").write_text("name: 'validate' oops {")
    with pytest.raises(ServerError) as info:
        server.start(timeout_s=120)
    first, *rest = str(info.value).splitlines()
    assert first == f"tritonserver exited with code 1; server log {server.log_path}:"
    assert any(line.startswith("E") and "validate" in line for line in rest[:10]), rest


_BROKEN_CONFIG = """
name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "x", data_type: TYPE_UINT8, dims: [ -1 ] } ]
output [ { name: "y", data_type: TYPE_UINT8, dims: [ -1 ] } ]
"""

_BROKEN_MODEL = """
from camdet.triton_models.common import guarded_execute


class TritonPythonModel:
    @guarded_execute
    def execute(self, requests):
        raise RuntimeError("disk /srv/secret/frames.db is gone")
"""


def test_a_server_fault_is_internal_in_one_line_and_its_traceback_is_logged(
    tmp_path: Path,
) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    model = tmp_path / "repo" / "broken"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(_BROKEN_CONFIG)
    (model / "1" / "model.py").write_text(_BROKEN_MODEL)
    ports = Ports.free()
    launch = portable_launch(tmp_path / "repo", ports, tmp_path)
    with TritonServer(launch, ports, tmp_path / "tritonserver.log").start() as server:
        data = grpcclient.InferInput("x", [3], "UINT8")
        data.set_data_from_numpy(np.zeros(3, np.uint8))
        with (
            grpcclient.InferenceServerClient(server.grpc_url) as client,
            pytest.raises(InferenceServerException) as info,
        ):
            client.infer("broken", [data])
        log = server.log_path.read_text()
    assert info.value.status() == "StatusCode.INTERNAL"
    message = info.value.message()
    assert "\n" not in message and "Traceback" not in message and "/srv" not in message
    assert "(RuntimeError); see the server log" in message
    assert "Traceback" in log and "disk /srv/secret/frames.db is gone" in log


def test_a_second_server_on_ports_in_use_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    # Issue #25: a second `camdet serve` on taken ports took the first server's readiness
    # for its own, then died 6 s later in gRPC output. Now it does not start at all.
    import subprocess
    import sys

    from camdet.serving.launch import PortInUseError
    from camdet.serving.server import serve

    with small_server(tmp_path / "first").start() as first:
        holder = rf"is in use by tritonserver \(pid {first.process.pid}\)"
        free = Ports.free()
        ports = Ports(first.ports.http, free.grpc, free.metrics)
        with (
            pytest.raises(PortInUseError, match=rf"port {ports.http} \(--http-port\) .* {holder}"),
            serve(PRODUCTION_REPOSITORY, ports, portable=True, workdir=tmp_path / "second"),
        ):
            pytest.fail("a server started on a port in use")
        command = [sys.executable, "-c", "from camdet.cli.main import app; app()", "serve"]
        ports_args = ["--http-port", str(free.http), "--grpc-port", str(first.ports.grpc)]
        done = subprocess.run(
            [*command, "--portable", *ports_args, "--metrics-port", str(free.metrics)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert "ready" not in done.stdout
        (line,) = done.stderr.strip().splitlines()
        expected = rf"error: port {first.ports.grpc} \(--grpc-port\) on 127\.0\.0\.1 {holder}"
        assert re.fullmatch(expected + ": stop it or choose another port", line), line


def test_the_server_stops_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    # A bench or test run killed outright (timeout, SIGKILL) must not leave its server
    # holding ports, GPU memory and video decoders (perf/RESULTS.md, session 10); a
    # server started from a thread that has ended since must live on until then.
    owner_code = (
        "import shutil, sys, threading, time\n"
        "from pathlib import Path\n"
        "from camdet.serving.launch import portable_launch\n"
        "from camdet.serving.repository import PRODUCTION_REPOSITORY\n"
        "from camdet.serving.server import Ports, TritonServer\n"
        "work = Path(sys.argv[1])\n"
        "shutil.copytree(PRODUCTION_REPOSITORY / 'validate', work / 'repo' / 'validate')\n"
        "ports = Ports.free()\n"
        "server = TritonServer(portable_launch(work / 'repo', ports, work), ports)\n"
        # Started from a thread that then ends, as from a pool: the server must stay.
        "starter = threading.Thread(target=server.start)\n"
        "starter.start(); starter.join(); time.sleep(2)\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        pid = int(owner.stdout.readline())
        assert running(pid)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 60
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    outlived = running(pid)
    if outlived:
        os.killpg(pid, signal.SIGKILL)
    assert not outlived, "tritonserver outlived the process that started it"


def test_starting_a_child_runs_none_of_this_processs_python_in_it(tmp_path: Path) -> None:
    # Between fork and exec a preexec_fn child cleared the other threads' states, so their
    # thread-local objects were finalized there: a PyAV one hung the child before its exec
    # (CI, session 21). The child must run none of the parent's Python.
    code = (
        "import os, sys, threading, time\n"
        "from pathlib import Path\n"
        "from camdet.serving.launch import spawn\n"
        "marker = Path(sys.argv[1])\n"
        "class Finalizer:\n"
        "    def __del__(self):\n"
        "        marker.write_text(str(os.getpid()))\n"
        "store, held = threading.local(), threading.Event()\n"
        "def hold():\n"
        "    store.value = Finalizer(); held.set(); time.sleep(60)\n"
        "threading.Thread(target=hold, daemon=True).start()\n"
        "held.wait()\n"
        "child = spawn(['sh', '-c', 'echo $$'], stdout=-1, text=True)\n"
        "print(child.pid, child.communicate()[0].strip(), flush=True)\n"
        "os._exit(0)  # the parent's own finalizers are not the question\n"
    )
    marker = tmp_path / "finalized"
    done = subprocess.run(
        [sys.executable, "-c", code, str(marker)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    pid, ran_as = done.stdout.split()
    assert pid == ran_as  # the command itself, in the launched process's place
    assert not marker.exists(), f"finalized in the child {marker.read_text()}"


def test_a_missing_program_fails_in_the_caller() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-tritonserver"):
        spawn(["no-such-tritonserver", "--help"])


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
