"""Cameras sharded over three real portable tritonservers; one is killed and restarted.

Each camera has a preferred server (rendezvous hashing by camera id). When its server
dies, only that server's cameras move, each to its own next preference; when the server
is back they return. Every frame a camera delivered is accounted for throughout:
``captured == answered + dropped + failed + in_flight``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from camdet.client.config import CameraConfig
from camdet.client.ingest_options import IngestOptions
from camdet.client.servers import Endpoint, rendezvous_order
from camdet.client.sharding import Shard, shard_cameras
from camdet.client.sinks import CallbackSink, Result
from camdet.client.streamer import BackgroundIngest, Ingest
from typer.testing import CliRunner

from camdet.cli.main import app
from camdet.serving.launch import has_cuda_gpu, portable_launch
from camdet.serving.portable import generate_portable_repository
from camdet.serving.server import Ports, TritonServer
from tests.helpers.clips import make_clips
from tests.helpers.ingest import Watch, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]

SERVERS = 3
CAMERAS_PER_SERVER = 2
CAMERA_FPS = 2.0  # light: six cameras, 12 frames/s over three servers on a busy CPU
START_TIMEOUT_S = 420.0  # three servers starting at once on a loaded 2-core machine


@pytest.fixture(scope="module")
def servers(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    """Three portable servers on free loopback ports, started in parallel."""
    root = tmp_path_factory.mktemp("sharded")
    portable = generate_portable_repository(repository, root / "repo", gpu=has_cuda_gpu())
    started: list[TritonServer] = []
    for n in range(SERVERS):
        workdir = root / f"server{n}"
        workdir.mkdir()
        ports = Ports.free()
        launch = portable_launch(portable, ports, workdir)
        started.append(TritonServer(launch, ports, workdir / "tritonserver.log"))
    with contextlib.ExitStack() as stack:
        for server in started:
            stack.callback(server.stop)
        with ThreadPoolExecutor(SERVERS) as pool:
            list(pool.map(lambda s: s.start(START_TIMEOUT_S), started))
        yield started
    assert not any(s.is_running() for s in started)


def pick_cameras(urls: list[str]) -> dict[str, list[str]]:
    """Camera ids, ``CAMERAS_PER_SERVER`` per server, with each id's preference order."""
    endpoints = [Endpoint.parse(u) for u in urls]
    chosen: dict[str, list[str]] = {}
    per_server = dict.fromkeys(urls, 0)
    for n in range(200):
        order = [e.url for e in rendezvous_order(f"cam{n}", endpoints)]
        if per_server[order[0]] < CAMERAS_PER_SERVER:
            per_server[order[0]] += 1
            chosen[f"cam{n}"] = order
    assert set(per_server.values()) == {CAMERAS_PER_SERVER}
    return chosen


def answers(results: list[Result], camera: str, server: str, since: float) -> int:
    """Frames of ``camera`` captured after ``since`` and answered by ``server``."""
    return sum(
        r.frame.camera_id == camera and r.server == server and r.frame.captured_mono > since
        for r in results
    )


def test_three_servers_one_killed_and_restarted(servers, tmp_path_factory) -> None:
    urls = [s.grpc_url for s in servers]
    preferences = pick_cameras(urls)
    first = {camera: order[0] for camera, order in preferences.items()}
    victim = servers[1]
    moved = [c for c, url in first.items() if url == victim.grpc_url]
    stayed = [c for c in first if c not in moved]
    clip = make_clips(tmp_path_factory.mktemp("clips"), [41], frames=20)[0]
    cameras = [
        CameraConfig(camera, str(clip.path), fps=CAMERA_FPS, loop=True) for camera in preferences
    ]
    results: list[Result] = []
    options = IngestOptions(decode_on_client=True, track=False)
    ingest = Ingest(cameras, urls, [CallbackSink(results.append)], options)
    with Watch(ingest.accounting) as watch, BackgroundIngest(ingest) as running:
        started = time.monotonic() - 1.0
        wait_until(
            lambda: all(answers(results, c, first[c], started) >= 2 for c in first),
            120,
            "two answers per camera from its preferred server",
        )
        assert ingest.assignment() == first

        victim.kill()
        killed_at = time.monotonic()
        fallback = {c: preferences[c][1] for c in moved}
        wait_until(
            lambda: all(answers(results, c, fallback[c], killed_at) >= 2 for c in moved),
            60,
            "the killed server's cameras answered by their next preference",
        )
        assert ingest.assignment() == {**first, **fallback}

        victim.start(START_TIMEOUT_S)
        back_at = time.monotonic()
        wait_until(
            lambda: all(answers(results, c, victim.grpc_url, back_at) >= 2 for c in moved),
            60,
            "the restarted server's cameras back on it",
        )
        assert ingest.assignment() == first
        totals = running.stop(120)

    assert watch.samples > 100 and not watch.violations
    for camera in first:
        t = totals[camera]
        assert t.balanced and t.in_flight == 0, (camera, t)
        assert t.answered == sum(r.frame.camera_id == camera for r in results), (camera, t)
        assert t.captured >= t.answered >= 6, (camera, t)
    # Only the killed server's cameras moved: the others never left their server.
    for camera in stayed:
        assert {r.server for r in results if r.frame.camera_id == camera} == {first[camera]}
    for camera in moved:
        assert {r.server for r in results if r.frame.camera_id == camera} == {
            first[camera],
            fallback[camera],
        }


def test_cli_streams_only_its_shard_to_the_servers_its_camera_file_names(
    server, tmp_path: Path
) -> None:
    clip = make_clips(tmp_path, [42], frames=6)[0]
    ids = [f"cam{n}" for n in range(6)]
    mine = [
        c.id for c in shard_cameras([CameraConfig(i, str(clip.path)) for i in ids], Shard(0, 2))
    ]
    assert 0 < len(mine) < len(ids)
    cameras = tmp_path / "cameras.yaml"
    entries = "".join(f"  - {{id: {i}, url: '{clip.path}', pace: false}}\n" for i in ids)
    cameras.write_text(f"servers: ['{server.grpc_url}']\ncameras:\n{entries}")
    jsonl = tmp_path / "results.jsonl"
    result = CliRunner().invoke(
        app,
        ["ingest", "--cameras", str(cameras), "--mode", "capacity",
         "--decode-on-client", "--no-track", "--no-live", "--jsonl", str(jsonl)],
        env={"CAMDET_URL": None, "CAMDET_SHARD": "0/2"},  # as the Kubernetes pods set it
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"shard 0/2: {len(mine)} cameras" in result.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert Counter(r["camera"] for r in records) == dict.fromkeys(mine, 6)
    assert {r["server"] for r in records} == {server.grpc_url}
