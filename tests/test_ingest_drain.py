"""Issue #12 item 7: a capacity-mode stop (``camdet ingest --duration``) drops nothing.

Six looping image-folder cameras read as fast as back-pressure lets them (capacity mode)
against the real portable server, which on this CPU machine answers a few frames per
second in all: it is the slow server. When ``--duration`` stops the ingest (the CLI's own
``_run``), frames are buffered, held by blocked readers and in flight; every one of them
must end answered or failed, none dropped, and the answered ones must be exactly the
frames captured, in capture order, with no hole.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from camdet.client.accounting import CameraTotals
from camdet.client.cli import _run
from camdet.client.config import CameraConfig
from camdet.client.ingest_options import IngestOptions, Mode
from camdet.client.sinks import CallbackSink, Result
from camdet.client.streamer import Ingest

from camdet.scenes import render_frame
from tests.helpers.images import encode

pytestmark = [pytest.mark.server]

CAMERAS = 6
IMAGES = 5
DURATION_S = 6.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drain") / "frames"
    path.mkdir()
    rng = np.random.default_rng(17)
    for index in range(IMAGES):
        (path / f"{index:03d}.jpg").write_bytes(encode(render_frame(rng, 1280, 720).image))
    return path


def test_capacity_mode_duration_stop_answers_every_captured_frame(server, folder: Path) -> None:
    results: list[Result] = []
    ingest = Ingest(
        [CameraConfig(f"cam{i}", str(folder), loop=True) for i in range(CAMERAS)],
        [server.grpc_url],
        [CallbackSink(results.append)],
        # The drain deadline only bounds a hung server; this one is just slow.
        IngestOptions(mode=Mode.CAPACITY, max_in_flight=2, drain_timeout_s=120.0, track=False),
    )

    async def run() -> dict[str, CameraTotals]:
        stopping = asyncio.create_task(_run(ingest, DURATION_S))
        await asyncio.sleep(DURATION_S - 0.3)
        at_stop = ingest.accounting.snapshot()
        await stopping
        return at_stop

    at_stop = asyncio.run(run())
    totals = ingest.accounting.snapshot()
    # The server was the bottleneck: at the stop, frames were still waiting for it.
    assert sum(t.in_flight for t in at_stop.values()) >= CAMERAS, at_stop
    for camera_id, camera in totals.items():
        assert camera.dropped == 0, (camera_id, camera)
        assert camera.in_flight == 0 and camera.balanced, (camera_id, camera)
        assert camera.answered + camera.failed == camera.captured, (camera_id, camera)
        assert camera.answered > at_stop[camera_id].answered, "the drain answered frames"
        answered = sorted(
            r.frame.session * IMAGES + r.frame.position
            for r in results
            if r.frame.camera_id == camera_id
        )
        # Capture order is session by session through the folder: no frame skipped.
        assert answered == list(range(camera.answered)), (camera_id, answered)
