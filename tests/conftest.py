"""Shared fixtures: a real portable tritonserver on free ports, camera clips, an RTSP camera.

Helper code (plain functions and classes) lives in ``tests/helpers/``; test modules import it
as ``tests.helpers.<module>`` (the repository root is on ``sys.path``: pytest's
``pythonpath = ["."]``). No test module imports another test module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.serving.server import Ports, TritonServer, serve
from tests.helpers.clips import CLIP_FRAMES, Clip, make_clips
from tests.helpers.rtsp import RtspServer, require_gst_rtsp, rtsp_mounts

# Servers the tests start run the Python stand-in for preprocess even where Triton's DALI
# backend is built (camdet.serving.server.dali_backend), so that every machine tests the
# same arrangement; tests/test_dali_backend.py serves the backend itself.
os.environ.setdefault("CAMDET_DALI_BACKEND", "0")
# A GPU test session runs two portable servers at once on one card (the session's and a
# module's); at the machine's count of pipeline instances (6 of each on an 80 GB H100) two
# do not fit (perf/RESULTS.md, session 21), at 4 of each they passed there (session 20).
os.environ.setdefault("CAMDET_PIPELINE_INSTANCES", "4")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU tests, with the reason, where there is no CUDA device."""
    from camdet.serving.launch import has_cuda_gpu

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


@pytest.fixture(scope="module")
def clips(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    """The test module's H.264 clips: one per seed of its ``CLIP_SEEDS``.

    ``CLIP_FRAMES`` in the module overrides the clips' length. A module that needs other
    clips (HEVC, B-frames) defines its own ``clips`` fixture; ``rtsp`` serves those too.
    """
    frames = getattr(request.module, "CLIP_FRAMES", CLIP_FRAMES)
    return make_clips(tmp_path_factory.mktemp("clips"), request.module.CLIP_SEEDS, frames)


@pytest.fixture(scope="module")
def rtsp(clips: list[Clip] | dict[str, Clip]) -> Iterator[RtspServer]:
    """A GStreamer RTSP camera serving the module's ``clips`` (see :func:`rtsp_mounts`)."""
    require_gst_rtsp()
    with RtspServer(rtsp_mounts(clips)) as server:
        yield server


_ALLOWED_SKIPS = ("needs an NVIDIA GPU", "needs TensorRT", "needs the DALI backend")
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
