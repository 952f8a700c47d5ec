"""How to run ``tritonserver``: the NGC container's, or the portable one, and its arguments.

In the NGC container ``tritonserver`` is on PATH and serves the production repository
with its DALI, TensorRT and Python backends. Elsewhere the Triton 2.51 binary shipped in
the ``nvidia-pytriton`` wheel serves the portable repository (Python backend only), with
a backend folder assembled here for the running Python version and a stub Python that
must import numpy 1.x. :mod:`.server` starts what this module describes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camdet.serving.ports import Ports
from camdet.serving.security import LOCAL, Exposure

logger = logging.getLogger(__name__)

CONTAINER_BINARY = "tritonserver"
SHM_DIR = Path("/dev/shm")
"""Where the Python backend's shared-memory regions live (POSIX shared memory on Linux)."""
# Room for a batch of 64 FP16 640x640 frames in the Python backend's shared memory. Each
# setting is its own flag: Triton reads one flag as one key and value, commas included.
_PYTHON_BACKEND_SHM = (
    "python,shm-default-byte-size=67108864",
    "python,shm-growth-byte-size=67108864",
)


class ServerError(RuntimeError):
    """The server could not be started, died, or did not become ready."""


class PortInUseError(ServerError):
    """A port the server needs is taken; the message names it and its holder, in one line."""


@dataclass(frozen=True)
class Launch:
    """How to run one server: argv and the extra environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    portable: bool = True
    host: str = "localhost"
    """Where this machine reaches the server (the bind address, loopback for wildcards)."""
    shm_prefix: str | None = None
    """Name prefix of this server's Python-backend shared-memory regions in ``/dev/shm``
    (portable server; :func:`remove_shm_regions`)."""


def spawn(argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``tritonserver`` or the MPS daemon so that it ends with this process.

    The child gets SIGTERM when this process dies (``PR_SET_PDEATHSIG``, Linux): a
    ``camdet`` process, bench or test run killed outright (``timeout``, SIGKILL) left
    them running, holding their ports, GPU memory and video decoders (perf/RESULTS.md,
    session 10); both shut down cleanly on SIGTERM. The signal follows the *thread* that
    started the child, so every child is started from one thread that lives as long as
    the process, whichever thread asks (servers are started from thread pools too).

    A fresh interpreter sets the signal and then execs the command (:data:`_END_WITH_PARENT`),
    not a ``preexec_fn``: with one, the forked child runs this process's Python before
    exec, clearing the other threads' states, whose thread-local objects are then
    finalized in the child; a PyAV object's finalizer waited there for threads the child
    does not have, and the server never started (CI, session 21).

    Args:
        argv: The command.
        **popen: :class:`subprocess.Popen`'s other arguments.

    Raises:
        FileNotFoundError: ``argv[0]`` is not a program on the child's ``PATH``.
    """
    if _END_WITH_PARENT is not None:
        path = (popen.get("env") or os.environ).get("PATH", os.defpath)
        program = shutil.which(argv[0], path=path)
        if program is None:
            raise FileNotFoundError(errno.ENOENT, "no such program", argv[0])
        launcher = [sys.executable, "-I", "-S", "-c", _END_WITH_PARENT, str(os.getpid())]
        argv = [*launcher, program, *argv]
    return _SPAWNER.submit(subprocess.Popen, argv, **popen).result()


def _new_spawner() -> None:
    """The one long-lived thread that starts :func:`spawn`'s children (``_SPAWNER``).

    A forked child has none of its parent's threads: it gets its own.
    """
    global _SPAWNER
    _SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="camdet-spawn")


_new_spawner()
os.register_at_fork(after_in_child=_new_spawner)


_END_WITH_PARENT: str | None = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):  # the parent ended before the signal was set\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[3:])\n"
    if sys.platform == "linux"
    else None
)
"""The launcher's code (``python -I -S -c``; arguments: the parent's PID, the program's
path, the command): ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, which survives ``exec``, then
the command in its place, same PID. None off Linux: no such guarantee there."""


def has_cuda_gpu() -> bool:
    """Whether torch sees a CUDA device (decides GPU or CPU instance groups).

    Without torch (the CPU install) the answer is no; if the CUDA driver sees GPUs all
    the same, a warning says once how to serve on them.
    """
    try:
        import torch
    except ImportError:
        _warn_gpus_without_torch()
        return False
    return torch.cuda.is_available()


def driver_gpu_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver), asked without torch."""
    found = _driver_devices()
    return 0 if found is None else found[1]


def smallest_gpu_memory_gib() -> float | None:
    """Total memory of the smallest GPU the CUDA driver sees, GiB (None: no GPU or driver).

    Asked of the driver (``cuDeviceTotalMem``), which needs no CUDA context: the server's
    parent process makes none.
    """
    found = _driver_devices()
    if found is None or found[1] == 0:
        return None
    cuda, count = found
    sizes = []
    for ordinal in range(count):
        device, size = ctypes.c_int(), ctypes.c_size_t()
        if cuda.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
            return None
        if cuda.cuDeviceTotalMem_v2(ctypes.byref(size), device) != 0:
            return None
        sizes.append(size.value)
    return min(sizes) / 2**30


def _driver_devices() -> tuple[ctypes.CDLL, int] | None:
    """The initialised CUDA driver and how many GPUs it sees (None: no driver)."""
    from camdet.runtime.cuda_schedule import driver

    try:
        cuda, status = driver()
    except OSError:
        return None
    count = ctypes.c_int()
    if status != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return None
    return cuda, count.value


@functools.cache
def _warn_gpus_without_torch() -> None:
    """Say once that this machine's GPUs go unused without the ``gpu`` extra."""
    if count := driver_gpu_count():
        logger.warning(
            "%d CUDA GPU(s) found, but torch is not installed: serving the CPU arrangement. "
            'To serve on the GPU: pip install "camdet[gpu]"',
            count,
        )


def cuda_device_count() -> int:
    """CUDA devices torch sees (0 without torch or CUDA)."""
    if not has_cuda_gpu():
        return 0
    import torch

    return torch.cuda.device_count()


def container_binary() -> str | None:
    """Path of the container's ``tritonserver`` if it is on PATH."""
    return shutil.which(CONTAINER_BINARY)


def pytriton_root() -> Path:
    """The ``pytriton`` package folder holding the bundled Triton server."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise ServerError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0")
    return Path(spec.origin).parent


def portable_backend_dir(root: Path, python: tuple[int, int] = sys.version_info[:2]) -> Path:
    """Assemble ``<root>/backends/python`` for this Python: library, utils and stub.

    The wheel ships one Python-backend stub per Python version; Triton expects the stub
    beside ``libtriton_python.so`` in one folder.
    """
    server = pytriton_root() / "tritonserver"
    backend = root / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    stub = (
        server / "python_backend_stubs" / f"{python[0]}.{python[1]}" / "triton_python_backend_stub"
    )
    if not stub.exists():
        raise ServerError(
            f"no Python backend stub for Python {python[0]}.{python[1]} in {stub.parent.parent}"
        )
    sources = [
        server / "backends" / "python" / "libtriton_python.so",
        server / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ]
    for source in sources:
        link = backend / source.name
        if not link.exists():
            link.symlink_to(source)
    return backend.parent


def stub_python(workdir: Path) -> Path:
    """A ``bin`` folder whose ``python3`` sees this interpreter's ``sys.path``.

    A bare virtual environment (no pip) with one ``.pth`` file that adds every entry of
    this process's ``sys.path`` as a site folder, so virtualenvs, editable installs and
    PYTHONPATH-based set-ups (like the GPU machine's) all reach the models.
    """
    env = workdir / "stub-python"
    if not (env / "pyvenv.cfg").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site_dir = env / "lib" / version / "site-packages"
    entries = [p for p in sys.path if p and Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in entries]
    (site_dir / "camdet-sys-path.pth").write_text("\n".join(lines) + "\n")
    return env / "bin"


def check_stub_numpy(python_bin: Path) -> str:
    """The numpy version the portable server's models will import; refuse numpy 2.

    The Triton 2.51 Python-backend stub inside nvidia-pytriton was built against numpy 1:
    under numpy 2 every model input reaches Python as 0xFF bytes, and the models fail with
    misleading errors (``first bytes ffffffff``, ``nvImageCodec failure: '#4'``).

    Args:
        python_bin: The ``bin`` folder from :func:`stub_python`.

    Returns:
        The numpy version found.

    Raises:
        ServerError: If numpy is missing or its major version is not 1.
    """
    # The stub's embedded interpreter finds packages through the .pth of stub_python only
    # (PYTHONPATH does not come first there), so the probe must not see PYTHONPATH either.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [str(python_bin / "python3"), "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    version = probe.stdout.strip()
    if probe.returncode != 0 or not version:
        raise ServerError(
            f"the portable server's Python cannot import numpy: {probe.stderr[-300:]}"
        )
    if version.split(".")[0] != "1":
        raise ServerError(
            f"numpy {version} is installed, but the portable server needs numpy 1.x: the "
            "Triton 2.51 Python-backend stub in nvidia-pytriton was built for numpy 1, and "
            "under numpy 2 every model input arrives as 0xFF bytes. "
            "Fix: pip install 'numpy<2' in this environment"
        )
    return version


def portable_launch(
    repository: Path,
    ports: Ports,
    workdir: Path,
    verbose: bool = False,
    exposure: Exposure = LOCAL,
) -> Launch:
    """The command line and environment of the portable server."""
    root = pytriton_root()
    libs = root.parent / "nvidia_pytriton.libs"
    python_bin = stub_python(workdir)
    check_stub_numpy(python_bin)
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(
            filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")])
        ),
        # The stub's embedded interpreter ignores PYTHONPATH and takes its packages from the
        # first python3 on PATH: give it one that sees exactly this interpreter's packages.
        "PATH": os.pathsep.join(filter(None, [str(python_bin), os.environ.get("PATH")])),
    }
    # Regions of its own, so that what a killed server leaves in /dev/shm can be removed.
    prefix = f"camdet_{uuid.uuid4().hex[:12]}_"
    argv = [
        str(root / "tritonserver" / "bin" / "tritonserver"),
        f"--backend-directory={portable_backend_dir(workdir)}",
        f"--cache-directory={root / 'tritonserver' / 'caches'}",
        *_common_args(repository, ports, verbose, exposure),
        f"--backend-config=python,shm-region-prefix-name={prefix}",
    ]
    return Launch(argv, env, portable=True, host=exposure.local_host, shm_prefix=prefix)


def remove_shm_regions(prefix: str, directory: Path = SHM_DIR) -> list[Path]:
    """Remove the shared-memory regions a stopped server's Python backend left behind.

    A server that shuts down removes its regions (64 MiB or more each, one per model
    instance); one killed by a signal, or whose stubs were, leaves them in ``/dev/shm``,
    which is memory: a day of test runs on the 2-core VM left 19 GiB there and the next
    run was killed for memory. Call only once no process of that server is alive.

    Returns:
        The regions removed.
    """
    removed = []
    for region in directory.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
            removed.append(region)
    return removed


def container_launch(
    binary: str,
    repository: Path,
    ports: Ports,
    verbose: bool = False,
    exposure: Exposure = LOCAL,
) -> Launch:
    """The command line of the container's own server (all backends)."""
    argv = [binary, *_common_args(repository, ports, verbose, exposure)]
    return Launch(argv, {}, portable=False, host=exposure.local_host)


def _common_args(
    repository: Path, ports: Ports, verbose: bool, exposure: Exposure = LOCAL
) -> list[str]:
    return [
        f"--model-repository={repository}",
        *exposure.args(),
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        "--exit-on-error=true",
        "--disable-auto-complete-config",
        *(f"--backend-config={setting}" for setting in _PYTHON_BACKEND_SHM),
        *cuda_pool_args(repository),
        f"--log-verbose={1 if verbose else 0}",
    ]


def cuda_pool_args(repository: Path, gpus: int | None = None) -> list[str]:
    """``--cuda-memory-pool-byte-size`` for every GPU, sized from the repository's configs.

    Triton's default pool (64 MiB) holds a dozen 640x640 FP16 frames; beyond that the
    Python backend moves GPU tensors through CPU shared memory (see
    :func:`camdet.serving.repository.cuda_pool_bytes`). ``CAMDET_CUDA_POOL_MB`` overrides the size.
    """
    from camdet.serving.repository import cuda_pool_bytes, read_repository

    gpus = cuda_device_count() if gpus is None else gpus
    if gpus == 0:
        return []
    override = os.environ.get("CAMDET_CUDA_POOL_MB")
    size = int(override) << 20 if override else cuda_pool_bytes(read_repository(repository))
    logger.info("CUDA memory pool: %d MiB on each of %d GPUs", size >> 20, gpus)
    return [f"--cuda-memory-pool-byte-size={gpu}:{size}" for gpu in range(gpus)]
