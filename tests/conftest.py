"""Shared fixtures: a real portable tritonserver on free ports, test images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.serving.server import Ports, TritonServer, serve


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU tests, with the reason, where there is no CUDA device."""
    from camdet.serving.server import has_cuda_gpu

    if has_cuda_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA (run on the GPU machine)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repository() -> Path:
    """The production model repository under test (CAMDET_MODEL_REPOSITORY overrides)."""
    return Path(os.environ.get("CAMDET_MODEL_REPOSITORY", PRODUCTION_REPOSITORY))


@pytest.fixture(scope="session")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real portable tritonserver serving the ensemble, stopped after the session."""
    workdir = tmp_path_factory.mktemp("triton")
    with serve(repository, Ports.free(), portable=True, workdir=workdir) as running:
        yield running
    assert not running.is_running(), "tritonserver still running after stop"


def encode(image_rgb: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    """Encode an RGB frame with OpenCV (independent of the code under test)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, np.ascontiguousarray(image_rgb[..., ::-1]), params)
    assert ok
    return data.tobytes()


_ALLOWED_SKIPS = ("needs an NVIDIA GPU", "needs TensorRT")
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skips that are not about missing GPU/TensorRT hardware."""
    if report.skipped:
        reason = (
            str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        )
        if not any(allowed in reason for allowed in _ALLOWED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On CI, a test skipped for anything but missing GPU/TensorRT fails the run."""
    if os.environ.get("CI") and _unexpected_skips and exitstatus == 0:
        print("\nunexpected skips on CI:\n  " + "\n  ".join(_unexpected_skips))
        session.exitstatus = 1
