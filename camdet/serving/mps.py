"""A private CUDA MPS daemon for the portable GPU server (``CAMDET_MPS``).

The portable GPU server runs each pipeline instance in a Python-backend process of its
own, and each process has its own CUDA context. Without MPS the GPU runs one context at
a time, switching between them: on an H100 under 256 cameras a DALI decode took ~20-25 ms
per batch whatever its size (8, 16 or 32 frames), and a plain decode process beside the
loaded server ran 2.3x slower than alone (perf/RESULTS.md, session 8). Under MPS the
processes' work goes through one server context and runs on the GPU at the same time.

The daemon is private to the server: its pipe and log folders are a temporary folder of
its own, named to ``tritonserver`` (and so to its stubs) through
``CUDA_MPS_PIPE_DIRECTORY`` and ``CUDA_MPS_LOG_DIRECTORY``; other CUDA programs on the
machine do not see it, and it stops with the server. The card's settings (compute mode
and the like) are left as they are. A client probe checks that a CUDA context can be
made through the daemon before the server starts; where it cannot (no binary, a GPU in
a mode that refuses a second MPS server), ``auto`` serves without MPS and says why. Where
the machine runs MPS itself, the server's processes are its clients and none is started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from camdet.serving.launch import ServerError, spawn

logger = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
"""The MPS control daemon (part of the NVIDIA driver's compute utilities)."""
_DRIVER_BIN = "/usr/local/nvidia/bin"
"""Where containers mount the driver's binaries when they are not on PATH."""
PIPE_VARIABLES = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")
SETTINGS = ("auto", "1", "0")
"""``CAMDET_MPS``: ``auto`` (default) a private daemon for the portable GPU server with its
one-process pipelines, where one can run; ``1`` for any server on a GPU, an error where it
cannot run; ``0`` never."""

# A CUDA client in miniature: through the daemon, make a context and allocate on GPU 0.
_PROBE = """
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
context, pointer = ctypes.c_void_p(), ctypes.c_uint64()
for name, call in (
    ("cuInit", lambda: cuda.cuInit(0)),
    ("cuDevicePrimaryCtxRetain", lambda: cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0)),
    ("cuCtxSetCurrent", lambda: cuda.cuCtxSetCurrent(context)),
    ("cuMemAlloc", lambda: cuda.cuMemAlloc_v2(ctypes.byref(pointer), 1 << 20)),
):
    status = call()
    if status != 0:
        sys.exit(f"{name} returned CUresult {status}")
"""


class MpsError(ServerError):
    """The private MPS daemon could not start, or a CUDA client could not use it."""


def control_binary() -> str | None:
    """Path of ``nvidia-cuda-mps-control`` (PATH, then the driver's container mount)."""
    return shutil.which(CONTROL) or shutil.which(CONTROL, path=_DRIVER_BIN)


def setting() -> str:
    """``CAMDET_MPS`` (``auto``, ``1`` or ``0``; ``on``/``off``, ``yes``/``no`` also read).

    Raises:
        MpsError: For any other value.
    """
    value = os.environ.get("CAMDET_MPS", "auto").strip().lower() or "auto"
    value = {"on": "1", "yes": "1", "true": "1", "off": "0", "no": "0", "false": "0"}.get(
        value, value
    )
    if value not in SETTINGS:
        raise MpsError(f"CAMDET_MPS={value!r}: expected auto, 1 or 0")
    return value


def wanted(choice: str, gpu: bool, pipelines: bool, theirs: bool) -> bool:
    """Whether to start a private daemon for this server.

    Args:
        choice: :func:`setting`'s value.
        gpu: Whether the server will run on CUDA GPUs.
        pipelines: Whether it is the portable server with its one-process pipelines,
            the arrangement measured under MPS (the three-process one, whose GPU tensors
            cross processes by CUDA IPC, was not: it gets MPS only with ``1``).
        theirs: Whether the machine's own MPS is in use (:func:`machine_mps`): the
            server's processes then are its clients already.

    Raises:
        MpsError: ``1`` without a GPU.
    """
    if choice == "0":
        return False
    if choice == "1" and not gpu:
        raise MpsError("CAMDET_MPS=1 needs a CUDA GPU, and this machine has none")
    return gpu and not theirs and (choice == "1" or pipelines)


_DEFAULT_PIPE = Path("/tmp/nvidia-mps")
"""Where CUDA clients look for an MPS daemon when ``CUDA_MPS_PIPE_DIRECTORY`` is unset."""


def machine_mps(env: dict[str, str], default_pipe: Path = _DEFAULT_PIPE) -> bool:
    """Whether CUDA processes started with ``env`` would be clients of an MPS daemon already.

    True when ``env`` names MPS folders, or when a daemon listens at the default pipe.
    """
    return any(v in env for v in PIPE_VARIABLES) or (default_pipe / "control").exists()


@dataclass
class MpsDaemon:
    """A running private control daemon.

    Attributes:
        process: The daemon (``nvidia-cuda-mps-control -f``, in the foreground).
        folder: Its temporary pipe and log folders' parent, removed by :meth:`stop`.
        binary: The control binary (also how :meth:`stop` asks it to quit).
    """

    process: subprocess.Popen[bytes]
    folder: Path
    binary: str

    @property
    def env(self) -> dict[str, str]:
        """The variables that make a CUDA process a client of this daemon."""
        return _folders(self.folder)

    def client(self, code: str, timeout_s: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run the Python program ``code`` as a CUDA client of this daemon (output captured).

        Raises:
            subprocess.TimeoutExpired: It ran longer than ``timeout_s``.
        """
        return subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def log_tail(self, lines: int = 10) -> str:
        """The last lines of the daemon's log (its MPS servers' lines included)."""
        path = self.folder / "log" / "control.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the daemon to quit (after its clients are gone), kill it if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [self.binary],
                    input=b"quit\n",
                    env={**os.environ, **self.env},
                    capture_output=True,
                    timeout=timeout_s,
                    check=False,
                )
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _folders(folder: Path) -> dict[str, str]:
    """The MPS pipe and log variables for a daemon's folder."""
    return dict(zip(PIPE_VARIABLES, (str(folder / "pipe"), str(folder / "log")), strict=True))


def start(binary: str, timeout_s: float = 10.0, probe_timeout_s: float = 60.0) -> MpsDaemon:
    """Start a private control daemon and check that a CUDA client can use it.

    Args:
        binary: ``nvidia-cuda-mps-control``.
        timeout_s: How long to wait for its control pipe.
        probe_timeout_s: How long the client probe may take (the first client starts
            the MPS server).

    Raises:
        MpsError: The daemon did not start, or the probe could not make a context.
    """
    # Short: the pipe is a Unix socket, whose path must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="camdet-mps-"))
    for sub in ("pipe", "log"):
        (folder / sub).mkdir()
    # In the foreground the daemon logs to stdout (its log folder stays empty).
    with (folder / "log" / "control.log").open("wb") as log:
        process = spawn(
            [binary, "-f"],
            env={**os.environ, **_folders(folder)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = MpsDaemon(process, folder, binary)
    deadline = time.monotonic() + timeout_s
    while not (folder / "pipe" / "control").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = daemon.log_tail()
            daemon.stop()
            raise MpsError(f"{CONTROL} did not start (exit {process.poll()}): {tail}")
        time.sleep(0.05)
    try:
        probe = daemon.client(_PROBE, probe_timeout_s)
        failure = probe.stderr.strip() if probe.returncode != 0 else None
    except subprocess.TimeoutExpired:
        failure = f"no answer within {probe_timeout_s:.0f} s"
    if failure is not None:  # the daemon is stopped either way, not left behind
        tail = daemon.log_tail()
        daemon.stop()
        raise MpsError(f"a CUDA client could not use the MPS daemon: {failure} {tail}")
    return daemon


@contextlib.contextmanager
def private_mps(choice: str, gpu: bool, pipelines: bool) -> Iterator[dict[str, str]]:
    """A private daemon for one server's lifetime, if :func:`wanted`: yields its variables.

    Yields ``{}`` when MPS is not wanted, or with ``auto`` when it cannot run here (the
    reason is logged as a warning; the server then runs as without MPS).

    Raises:
        MpsError: With ``CAMDET_MPS=1``, when the daemon cannot run here.
    """
    if not wanted(choice, gpu, pipelines, machine_mps(dict(os.environ))):
        yield {}
        return
    binary = control_binary()
    try:
        if binary is None:
            raise MpsError(f"{CONTROL} is not on PATH (it comes with the NVIDIA driver)")
        daemon = start(binary)
    except (MpsError, OSError) as exc:
        if choice == "1":
            raise MpsError(str(exc)) from exc
        logger.warning("CUDA MPS not used (%s); CAMDET_MPS=0 silences this", exc)
        yield {}
        return
    logger.info("CUDA MPS: private daemon, pipe %s (CAMDET_MPS=0: without)", daemon.folder)
    try:
        yield daemon.env
    finally:
        daemon.stop()
