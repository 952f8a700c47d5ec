"""Start and stop a real ``tritonserver``: the NGC container's, or the portable one.

:func:`serve` picks the server (:mod:`.launch` says how each runs), derives the portable
repository (:mod:`.portable`), checks the ports (:mod:`.ports`) and yields a
:class:`TritonServer` that answered ready; the server is stopped when the block exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from camdet.cli.extras import GPU_EXTRA
from camdet.contract import STEP_BATCHES_METRIC
from camdet.serving import mps
from camdet.serving.backends import DaliBackend, add_dali_backend, find_dali_backend
from camdet.serving.launch import (
    Launch,
    PortInUseError,
    ServerError,
    container_binary,
    container_launch,
    driver_gpu_count,
    has_cuda_gpu,
    portable_backend_dir,
    portable_launch,
    remove_shm_regions,
    spawn,
)
from camdet.serving.ports import Ports, busy_port, listener
from camdet.serving.security import LOCAL, Exposure

logger = logging.getLogger(__name__)


def _answers_200(url: str) -> bool:
    """Whether a GET of ``url`` (loopback) answers 200 right now."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class TritonServer:
    """A running ``tritonserver`` process, readiness-checked.

    Use as a context manager; the process is stopped and reaped on exit.
    """

    def __init__(self, launch: Launch, ports: Ports, log_path: Path | None = None) -> None:
        self.launch = launch
        self.ports = ports
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint on loopback."""
        return f"{self.launch.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint on loopback."""
        return f"{self.launch.host}:{self.ports.http}"

    def start(self, timeout_s: float = 180.0) -> TritonServer:
        """Start the process and wait until ``/v2/health/ready`` answers 200.

        Raises:
            ServerError: If the process exits or is not ready within ``timeout_s``.
        """
        env = {**os.environ, **self.launch.env}
        logger.info("starting %s", " ".join(self.launch.argv))
        with self.log_path.open("wb") as log:
            self.process = spawn(
                self.launch.argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"{self.death_report()}")
            if _answers_200(url):
                self._check_ready_is_ours()
                return
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def _check_ready_is_ours(self) -> None:
        """Raise unless the server that answered ready is the process started here.

        Ports are checked before the start, so this guards the race in which another
        server takes the HTTP port meanwhile: its readiness is not this server's.
        """
        holder = listener(self.ports.http)
        if self.process is not None and holder is not None and holder[0] != self.process.pid:
            self.stop()
            raise PortInUseError(
                f"port {self.ports.http} (--http-port) answered ready from {holder[1]} "
                f"(pid {holder[0]}), not from the server started here"
            )

    def log_tail(self, lines: int = 40) -> str:
        """The server's error lines (model load failures first), then its last lines.

        Without a GPU, the lines in which Triton reports that it found no CUDA driver or
        NVML are left out: they are expected there and would hide the real cause.
        """
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        all_lines = text.splitlines()
        if not has_cuda_gpu():
            all_lines = [line for line in all_lines if not _is_cpu_noise(line)]
        errors = [line for line in all_lines if line.startswith("E")][-10:]
        tail = [line for line in all_lines[-lines:] if line not in errors]
        return "\n".join(errors + tail)

    def exit_cause(self) -> str | None:
        """How the process ended, in words (None while it runs or before it started).

        E.g. ``"tritonserver was killed by signal 9 (SIGKILL)"`` or ``"tritonserver exited
        with code 1"``.
        """
        code = None if self.process is None else self.process.poll()
        if code is None:
            return None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            return f"tritonserver was killed by signal {-code} ({name})"
        return f"tritonserver exited with code {code}"

    def death_report(self, lines: int = 15) -> str:
        """Why the server is gone: the cause first, then its log's errors and last lines."""
        cause = self.exit_cause() or "tritonserver is running"
        return f"{cause}; server log {self.log_path}:\n{self.log_tail(lines)}"

    def step_batches(self) -> dict[tuple[str, str, str], int]:
        """Batches each step executed so far, by devices: ``(model, inputs, outputs) -> n``.

        Read from the ``camdet_step_batches_total`` counter on the metrics endpoint
        (:class:`camdet.triton_models.common.DeviceStats`).
        """
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://{self.launch.host}:{self.ports.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5.0) as response:
            text = response.read().decode()
        counts: dict[tuple[str, str, str], int] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == STEP_BATCHES_METRIC:
                    labels = sample.labels
                    key = (labels["model"], labels["inputs"], labels["outputs"])
                    counts[key] = counts.get(key, 0) + int(sample.value)
        return counts

    def is_running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Ask the server to shut down (SIGINT), kill it if it lingers, and reap it.

        Returns:
            The exit code, or None if it was never started.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._remove_shm()
        return self.process.returncode

    def kill(self) -> None:
        """Kill the server and its backend stubs at once (tests of server loss)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._remove_shm()

    def _remove_shm(self) -> None:
        """Remove what a server that did not shut down cleanly left in ``/dev/shm``.

        Unlinking is safe even while a dying stub still maps a region: its memory goes
        back when the last mapping does.
        """
        if self.launch.shm_prefix is None or self.process is None:
            return
        removed = remove_shm_regions(self.launch.shm_prefix)
        if removed:
            logger.info("removed %d shared-memory regions the server left", len(removed))

    def __enter__(self) -> TritonServer:
        return self if self.is_running() else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def container_plan_problems(repository: Path) -> list[str]:
    """Why the detector's TensorRT plan cannot be served here (empty when it can).

    A plan only loads in the TensorRT version that built it, on GPUs of its compute
    capability; ``build_engine.py`` records both in ``model.plan.json`` beside it.
    """
    from camdet.engine.errors import BuildEngineError
    from camdet.engine.sidecar import check_plan_compatibility, query_gpu, read_sidecar

    plan = Path(repository) / "detector" / "1" / "model.plan"
    if not plan.is_file():
        return [f"no TensorRT plan at {plan}: build it with build_engine.py (docker/README.md)"]
    try:
        sidecar = read_sidecar(plan)
        gpu = query_gpu()
    except BuildEngineError as exc:
        return [str(exc)]
    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except ImportError:  # the server image has TensorRT's libraries, not always its Python
        trt_version = sidecar.tensorrt_version
    return check_plan_compatibility(sidecar, trt_version, gpu.name, gpu.compute_capability)


_CPU_NOISE = (
    "CUDA driver",
    "CudaDriverHelper",
    "pinned memory",
    "pinned system memory",
    "CUDA memory pool",
    "NVML",
    "libnvidia-ml",
)
"""Phrases of the log lines a GPU-less machine always gets from Triton."""


def _is_cpu_noise(line: str) -> bool:
    return any(phrase in line for phrase in _CPU_NOISE)


def _kept_log(ports: Ports) -> Path:
    """Where the server of a temporary workdir logs: the temp folder, by its gRPC port."""
    return Path(tempfile.gettempdir()) / f"camdet-tritonserver-{ports.grpc}.log"


def dali_backend() -> DaliBackend | None:
    """Triton's DALI backend, where it is built for this DALI, unless ``CAMDET_DALI_BACKEND=0``.

    With it the portable server runs the production ``preprocess`` model as it is
    (``backend: "dali"``); without it, the Python stand-in (:mod:`.portable`).
    """
    if os.environ.get("CAMDET_DALI_BACKEND", "").strip() in ("0", "false", "no"):
        return None
    return find_dali_backend()


def _has_torch() -> bool:
    """Whether torch imports (the ``gpu`` extra; the CPU install leaves it out)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _pipelines_from_env() -> bool | None:
    """``CAMDET_PIPELINES`` (``1``/``0``) as a choice, or None (the machine decides)."""
    value = os.environ.get("CAMDET_PIPELINES", "").strip()
    return None if value == "" else value not in ("0", "false", "no")


@contextlib.contextmanager
def serve(
    production_repository: Path,
    ports: Ports | None = None,
    portable: bool | None = None,
    verbose: bool = False,
    workdir: Path | None = None,
    timeout_s: float = 180.0,
    exposure: Exposure = LOCAL,
    pipelines: bool | None = None,
) -> Iterator[TritonServer]:
    """Serve the ensemble: the container's server if present, else the portable one.

    Args:
        production_repository: The production ``model_repository``.
        ports: Ports to listen on (default 8000/8001/8002).
        portable: Force portable (True) or container (False) mode; None picks.
        verbose: Triton verbose logging (shows each step's tensor devices).
        workdir: Where to put the portable repository and backend folder (temp if None).
        timeout_s: Readiness deadline.
        exposure: Listen address, gRPC TLS and restricted APIs (default: loopback only).
        pipelines: Portable mode: serve each ensemble's preprocess -> detector ->
            postprocess as one process (:func:`.portable.add_pipelines`); None: where there
            is a GPU, unless ``CAMDET_PIPELINES=0``.

    Yields:
        The ready server; it is stopped when the block exits.
    """
    from camdet.serving.portable import generate_portable_repository

    ports = ports or Ports()
    busy = busy_port(ports, exposure.address)
    if busy is not None:
        raise PortInUseError(busy)
    binary = container_binary()
    use_portable = binary is None if portable is None else portable
    gpu = has_cuda_gpu() if use_portable else driver_gpu_count() > 0
    if pipelines is None:
        pipelines = _pipelines_from_env()
    if use_portable and pipelines and not _has_torch():
        raise ServerError(
            "the one-process pipelines (CAMDET_PIPELINES=1) run torch, which is not "
            f"installed (the CPU install leaves it out): {GPU_EXTRA}"
        )
    with tempfile.TemporaryDirectory(prefix="camdet-") as tmp:
        root = Path(workdir or tmp)
        if use_portable:
            dali = dali_backend()
            repository = generate_portable_repository(
                production_repository,
                root / "portable_repository",
                gpu=gpu,
                pipelines=pipelines,
                dali_backend=dali is not None,
            )
            launch = portable_launch(repository, ports, root, verbose, exposure)
            if dali is not None:
                add_dali_backend(portable_backend_dir(root), dali)
        else:
            if binary is None:
                raise ServerError(
                    "no tritonserver on PATH: run inside the NGC container or use portable mode"
                )
            problems = container_plan_problems(production_repository)
            if problems:
                raise ServerError("cannot serve the TensorRT plan:\n- " + "\n- ".join(problems))
            launch = container_launch(binary, production_repository, ports, verbose, exposure)
        # Outside a temporary workdir, so that the log a failure names is still there.
        log = root / "tritonserver.log" if workdir else _kept_log(ports)
        one_process = use_portable and pipelines is not False  # None: yes, on a GPU
        with mps.private_mps(mps.setting(), gpu, one_process) as mps_env:
            launch = dataclasses.replace(launch, env={**launch.env, **mps_env})
            with TritonServer(launch, ports, log).start(timeout_s) as server:
                yield server
