"""Triton backends built on this machine for the portable server: the DALI backend.

``docker/build_dali_backend.sh`` builds Triton's DALI backend (``libtriton_dali.so``) for
the Triton 2.51 server of the ``nvidia-pytriton`` wheel, against the DALI wheel of this
environment, and installs it as ``<backends_root()>/dali/`` with a ``BUILD_INFO`` file.
With it, the portable server can serve the production ``preprocess`` model as it is
(``backend: "dali"``) instead of the Python stand-in: the server's ``--backend-directory``
holds ``python/`` (the wheel's) and ``dali/`` (:func:`add_dali_backend`).

On a machine without a GPU the DALI backend cannot autoserialize ``1/dali.py``: the
pipeline is declared with ``device_id=0`` and DALI 2.4 refuses to build (and so to
serialize) a GPU pipeline without CUDA. :func:`serialize_dali_pipeline` writes the same
graph, serialized for the CPU, as ``1/model.dali``, which the backend loads first.

No typer and no Triton import here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

BACKENDS_ENV = "CAMDET_BACKENDS_DIR"
"""Environment variable naming the folder that holds built backends (``dali/``)."""

DALI_LIBRARY = "libtriton_dali.so"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "build_dali_backend.sh"
"""The build recipe (in the source tree: the CLI runs it from a checkout)."""

SERIALIZED_PIPELINE = "model.dali"
"""The file name the DALI backend loads before trying to autoserialize ``dali.py``."""


class BackendBuildError(RuntimeError):
    """The build script failed; the message is its one-line reason."""


@dataclass(frozen=True)
class DaliBackend:
    """A built DALI backend.

    Attributes:
        directory: The ``dali`` folder holding ``libtriton_dali.so`` (link it as
            ``<backend-directory>/dali``).
        build_info: ``BUILD_INFO``'s lines, by first word (``dali_backend``, ``triton``,
            ``dali``, ``cuda``, ``server``).
    """

    directory: Path
    build_info: dict[str, str]

    @property
    def library(self) -> Path:
        """Path of ``libtriton_dali.so``."""
        return self.directory / DALI_LIBRARY

    @property
    def dali_version(self) -> str | None:
        """The DALI version it was built against (None if ``BUILD_INFO`` does not say)."""
        words = self.build_info.get("dali", "").split()
        return words[0] if words else None

    def describe(self) -> str:
        """One line for ``camdet doctor``: where, and what it was built from."""
        source = self.build_info.get("dali_backend", "").split()
        pinned = f"{source[0]} {source[1][:8]}" if len(source) >= 2 else "?"
        return (
            f"DALI backend {self.library} (dali_backend {pinned}, DALI {self.dali_version or '?'})"
        )


def backends_root() -> Path:
    """Where built backends live.

    ``$CAMDET_BACKENDS_DIR``, else ``<sys.prefix>/share/camdet/backends`` (where
    ``docker/build_dali_backend.sh`` installs by default).
    """
    override = os.environ.get(BACKENDS_ENV)
    return Path(override) if override else Path(sys.prefix) / "share" / "camdet" / "backends"


def installed_dali_version() -> str | None:
    """The version of the DALI wheel in this environment (None without one)."""
    for dist in ("nvidia-dali-cuda120", "nvidia-dali-cuda130", "nvidia-dali-cuda110"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def dali_backend_status(root: Path | None = None) -> tuple[DaliBackend | None, str]:
    """Whether the DALI backend is built and usable here, with the reason in words.

    Args:
        root: Folder holding ``dali/`` (default: :func:`backends_root`).

    Returns:
        ``(backend, line)``: the backend, or None when it is not built or was built for
        another DALI than the installed one (a DALI backend binds to DALI's C++ ABI of
        one release); ``line`` says which, for ``camdet doctor``.
    """
    directory = (root or backends_root()) / "dali"
    library = directory / DALI_LIBRARY
    if not library.is_file():
        return None, (
            f"DALI backend not built (no {library}): preprocess runs on the Python stand-in; "
            "build it with `camdet backends build dali`"
        )
    info = _read_build_info(directory / "BUILD_INFO")
    backend = DaliBackend(directory, info)
    installed = installed_dali_version()
    if backend.dali_version and installed and backend.dali_version != installed:
        return None, (
            f"DALI backend {library} was built for DALI {backend.dali_version}, but DALI "
            f"{installed} is installed: rebuild it with `camdet backends build dali`"
        )
    return backend, backend.describe()


def find_dali_backend(root: Path | None = None) -> DaliBackend | None:
    """The built DALI backend if it is usable here, else None (:func:`dali_backend_status`)."""
    return dali_backend_status(root)[0]


def _read_build_info(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    info = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key:
            info[key] = value.strip()
    return info


def add_dali_backend(backend_dir: Path, backend: DaliBackend) -> Path:
    """Link ``backend`` as ``<backend_dir>/dali`` (beside the Python backend's ``python/``).

    Args:
        backend_dir: The server's ``--backend-directory``.
        backend: The built backend (:func:`find_dali_backend`).

    Returns:
        The link.
    """
    link = backend_dir / "dali"
    if link.is_symlink() or link.exists():
        if link.resolve() == backend.directory.resolve():
            return link
        link.unlink()
    backend_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(backend.directory.resolve(), target_is_directory=True)
    return link


def serialize_dali_pipeline(model_dir: Path, num_threads: int = 4) -> list[Path]:
    """Write ``<version>/model.dali``: each version's ``dali.py`` serialized for the CPU.

    For a DALI-backend model served by CPU instances on a machine without a GPU (see the
    module's docstring): the same ``preprocess`` graph, with ``device_id=None`` and
    ``decode_device="cpu"``. The backend sets batch size, threads and device itself.

    Args:
        model_dir: A copy of the model's folder (written into).
        num_threads: DALI threads recorded in the file (the config's ``num_threads``
            parameter wins).

    Returns:
        The files written.
    """
    from camdet.steps.preprocess.pipeline import load_pipeline_module

    written = []
    for dali_py in sorted(model_dir.glob("[0-9]*/dali.py")):
        module = load_pipeline_module(dali_py)
        pipe = module.preprocess(
            batch_size=module.MAX_BATCH_SIZE,
            num_threads=num_threads,
            device_id=None,
            decode_device="cpu",
        )
        target = dali_py.with_name(SERIALIZED_PIPELINE)
        pipe.serialize(filename=str(target))
        written.append(target)
    return written


def build_dali_backend(
    source: Path | None = None,
    prefix: Path | None = None,
    build_dir: Path | None = None,
    jobs: int = 2,
) -> DaliBackend:
    """Build and install the DALI backend with ``docker/build_dali_backend.sh``.

    Args:
        source: Folder of local checkouts (``dali_backend``, ``core``, ``common``,
            ``backend``, ``Catch2``, ``rapidjson`` at the pinned commits); None clones them
            from GitHub.
        prefix: Where to install ``dali/`` (default: :func:`backends_root`).
        build_dir: The build folder (default: the script's, under ``$TMPDIR``).
        jobs: Parallel compile jobs.

    Returns:
        The installed backend.

    Raises:
        BackendBuildError: With the script's one-line reason (missing compiler, CMake,
            headers, or the failed step and its log).
    """
    if not BUILD_SCRIPT.is_file():
        raise BackendBuildError(
            f"the build recipe {BUILD_SCRIPT} is not here (a source checkout has it)"
        )
    root = prefix or backends_root()
    argv = ["bash", str(BUILD_SCRIPT), "--prefix", str(root), "--jobs", str(jobs)]
    argv += ["--python", sys.executable]
    if source is not None:
        argv += ["--source", str(source)]
    if build_dir is not None:
        argv += ["--build-dir", str(build_dir)]
    logger.info("building the DALI backend: %s", " ".join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise BackendBuildError(lines[-1] if lines else f"build failed ({result.returncode})")
    logger.info("%s", result.stdout.strip())
    backend, line = dali_backend_status(root)
    if backend is None:
        raise BackendBuildError(line)
    return backend
