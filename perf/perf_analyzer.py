"""perf_analyzer 2.51, the version of the portable server, installed beside camdet and run.

perf_analyzer ships in exactly one pip artifact of our server's version: the tritonclient
2.51.0 manylinux wheel (``tritonclient-2.51.0.data/data/bin/perf_analyzer``). camdet
cannot depend on that tritonclient (its ``http`` extra pins ``geventhttpclient<=2.0.2``,
locust needs ``>=2.5.1``), so :func:`install` fetches the wheel with pip and copies out
only the binary, checked against its pinned SHA-256, into the environment's
``share/camdet/``. Its two missing libraries, ``libb64.so.0d`` and ``libcudart.so.12``,
are bundled in the nvidia-pytriton wheel camdet already installs (for its tritonserver);
:func:`library_dir` links them under their ``NEEDED`` names so one ``LD_LIBRARY_PATH``
entry serves both, and neither a system package nor another wheel is needed.

``PERF_ANALYZER`` (a command line, e.g. ``env LD_LIBRARY_PATH=/x /opt/perf_analyzer`` or
the NGC SDK container's ``perf_analyzer``) overrides everything.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = "2.51.0"
"""perf_analyzer version: the Triton release of nvidia-pytriton 0.7.0's server."""
WHEEL_REQUIREMENT = f"tritonclient=={VERSION}"
WHEEL_MEMBER = f"tritonclient-{VERSION}.data/data/bin/perf_analyzer"
BINARY_SHA256 = {"x86_64": "a8e3fa6d2fcd535770f18fa3c9baf21aee85697352637d24c6b2818401c95a34"}
"""SHA-256 of the binary in the wheel (its RECORD entry), per machine architecture."""
ENV_VAR = "PERF_ANALYZER"
INSTALL_DIR = Path(sys.prefix) / "share" / "camdet" / f"perf_analyzer-{VERSION}"
INSTALL_COMMAND = "camdet perf-analyzer install"
PYTRITON_LIBS = "nvidia_pytriton.libs"
LIBRARY_SOURCES = {
    "libb64.so.0d": "libb64-*.so.0d",
    "libcudart.so.12": "libcudart-*.so.12*",
}
"""The binary's ``NEEDED`` libraries that no system has by default, and the file-name
pattern of their copies in nvidia-pytriton's ``nvidia_pytriton.libs`` (the CUDA runtime
there, 12.6, is the one Triton 2.51 and this perf_analyzer were built with)."""


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer cannot be installed or found."""


def binary_path(install_dir: Path = INSTALL_DIR) -> Path:
    """Where :func:`install` puts the binary."""
    return install_dir / "perf_analyzer"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_sha256() -> str:
    machine = platform.machine()
    if machine not in BINARY_SHA256:
        raise PerfAnalyzerError(
            f"no pinned perf_analyzer {VERSION} for {machine}: set {ENV_VAR} to a perf_analyzer "
            "command (e.g. from nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk)"
        )
    return BINARY_SHA256[machine]


def _download_wheel(folder: Path) -> Path:
    """``pip download`` the tritonclient wheel (no dependencies) into ``folder``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-q", "-d", str(folder), WHEEL_REQUIREMENT]
    log.info("fetching perf_analyzer: %s", shlex.join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob(f"tritonclient-{VERSION}-*.whl"))
    if done.returncode != 0 or not wheels:
        raise PerfAnalyzerError(f"pip download {WHEEL_REQUIREMENT} failed:\n{done.stderr}")
    return wheels[0]


def install(install_dir: Path = INSTALL_DIR, force: bool = False) -> Path:
    """Install the perf_analyzer binary of the tritonclient wheel into ``install_dir``.

    Args:
        install_dir: Destination folder (default: ``<sys.prefix>/share/camdet/...``).
        force: Fetch again even when a binary with the pinned digest is there.

    Returns:
        Path of the installed binary.

    Raises:
        PerfAnalyzerError: No pinned binary for this architecture, pip failed, or the
            binary's digest differs from the pinned one.
    """
    expected = _expected_sha256()
    target = binary_path(install_dir)
    if not force and target.exists() and _sha256(target) == expected:
        library_dir(install_dir)
        return target
    install_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=install_dir) as tmp:
        wheel = _download_wheel(Path(tmp))
        extracted = Path(tmp) / "perf_analyzer"
        with zipfile.ZipFile(wheel) as archive, archive.open(WHEEL_MEMBER) as src:
            extracted.write_bytes(src.read())
        if (got := _sha256(extracted)) != expected:
            raise PerfAnalyzerError(f"{WHEEL_MEMBER}: sha256 {got}, pinned {expected}")
        extracted.chmod(0o755)
        extracted.replace(target)  # same filesystem: a reader never sees half a binary
    library_dir(install_dir)
    log.info("perf_analyzer %s installed at %s", VERSION, target)
    return target


def _bundled_libraries() -> dict[str, Path]:
    """The shared libraries the binary lacks, by ``NEEDED`` name, in nvidia-pytriton's wheel.

    auditwheel gave these copies hashed file names, which the dynamic loader would not
    find under the ``NEEDED`` names; hence links, not a search path.
    """
    folder = Path(str(metadata.distribution("nvidia-pytriton").locate_file(PYTRITON_LIBS)))
    found: dict[str, Path] = {}
    for needed, pattern in LIBRARY_SOURCES.items():
        if matches := sorted(folder.glob(pattern)):
            found[needed] = matches[0]
        else:
            log.warning("no %s in %s: it must come from the system", pattern, folder)
    return found


def library_dir(install_dir: Path = INSTALL_DIR) -> Path:
    """Folder of links to the binary's missing libraries (refreshed on every call).

    Refreshing is cheap and follows a reinstalled wheel whose file names changed.
    """
    lib = install_dir / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    for needed, source in _bundled_libraries().items():
        link = lib / needed
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        link.symlink_to(source)
    return lib


def command(install_dir: Path = INSTALL_DIR) -> list[str]:
    """The perf_analyzer command line, without arguments.

    Order: ``$PERF_ANALYZER`` (split like a shell would), the binary :func:`install` put
    in ``install_dir`` (run through ``env LD_LIBRARY_PATH=...``), ``perf_analyzer`` on PATH
    (the NGC SDK container).

    Raises:
        PerfAnalyzerError: None of them exists; the message gives the install command.
    """
    if override := os.environ.get(ENV_VAR, "").strip():
        return shlex.split(override)
    installed = binary_path(install_dir)
    if installed.exists():
        # Keep the caller's entries (NGC images find libcuda through them), minus empty
        # ones, which the loader would read as the current directory.
        inherited = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
        libraries = os.pathsep.join([str(library_dir(install_dir)), *filter(None, inherited)])
        return ["env", f"LD_LIBRARY_PATH={libraries}", str(installed)]
    if on_path := shutil.which("perf_analyzer"):
        return [on_path]
    raise PerfAnalyzerError(f"perf_analyzer not found: run `{INSTALL_COMMAND}` or set {ENV_VAR}")


def ensure_command(install_dir: Path = INSTALL_DIR) -> list[str]:
    """:func:`command`, installing the binary first when there is none."""
    try:
        return command(install_dir)
    except PerfAnalyzerError:
        install(install_dir)
        return command(install_dir)


def run(
    args: Sequence[str],
    base: Sequence[str] | None = None,
    timeout_s: float | None = None,
    log_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run perf_analyzer with ``args`` and return its exit status and output.

    Args:
        args: perf_analyzer arguments.
        base: The command (default: :func:`command`).
        timeout_s: Kill it after this many seconds (``subprocess.TimeoutExpired``).
        log_path: Also write its combined stdout and stderr here.

    Returns:
        The finished process; ``stdout`` holds stdout and stderr interleaved.
    """
    full = [*(base if base is not None else command()), *args]
    log.debug("running %s", shlex.join(full))
    done = subprocess.run(
        full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s
    )
    if log_path is not None:
        log_path.write_text(f"$ {shlex.join(full)}\n{done.stdout}")
    return done


def admin_header_args(header: str, protocol: str = "grpc") -> list[str]:
    """``-H`` arguments that let perf_analyzer use a server's restricted APIs.

    A server started with ``camdet serve --restrict-apis KEY=VALUE`` answers model
    configuration, statistics and shared-memory registration only to requests carrying
    that header, and perf_analyzer calls all three. perf_analyzer 2.51's usage says ``-H``
    is for HTTP only, yet it sends it as gRPC metadata too (checked against Triton 2.51),
    so gRPC gets the key behind Triton's ``triton-grpc-protocol-`` prefix.

    Args:
        header: ``KEY=VALUE``, as given to ``--restrict-apis``.
        protocol: perf_analyzer's ``-i``: ``grpc`` or ``http``.

    Raises:
        ValueError: If ``header`` is not ``KEY=VALUE`` or the protocol is unknown.
    """
    from camdet.serving.security import RestrictedApis

    restricted = RestrictedApis.parse(header)
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be grpc or http, got {protocol!r}")
    headers = restricted.grpc_headers if protocol == "grpc" else restricted.http_headers
    return [arg for key, value in headers.items() for arg in ("-H", f"{key}:{value}")]


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a perf_analyzer ``-f`` CSV file, by column name.

    perf_analyzer writes the measurement rows, then (with ``--collect-metrics``) nothing
    else; a file without rows means the run measured nothing.
    """
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
