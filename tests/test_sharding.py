"""Cameras over ingest replicas and servers: stable, balanced, few moves; files name servers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from camdet.client.config import CameraConfig, ConfigError, load_cameras
from camdet.client.servers import Endpoint, rendezvous_order
from camdet.client.sharding import (
    ALL,
    Shard,
    choose_servers,
    load_servers,
    shard_cameras,
    shard_of,
)
from typer.testing import CliRunner

from camdet.cli.main import app

CAMERA_IDS = [f"camera-{n:04d}" for n in range(2000)]


def test_shard_parse_and_bounds() -> None:
    assert Shard.parse("2/4") == Shard(2, 4)
    assert Shard.parse(" 0 / 1 ") == ALL
    assert str(Shard(1, 3)) == "1/3"
    for text, message in [("3/3", "need 0 <= index < count"), ("a/3", "use INDEX/COUNT")]:
        with pytest.raises(ValueError, match=message):
            Shard.parse(text)


def test_every_camera_in_exactly_one_shard_and_shards_are_balanced() -> None:
    cameras = [CameraConfig(c, f"/data/{c}.mp4") for c in CAMERA_IDS]
    shards = [shard_cameras(cameras, Shard(i, 4)) for i in range(4)]
    ids = [c.id for shard in shards for c in shard]
    assert sorted(ids) == sorted(CAMERA_IDS)
    assert all(abs(len(s) - 500) < 75 for s in shards), [len(s) for s in shards]
    assert shard_cameras(cameras, ALL) == cameras


def test_adding_a_replica_moves_only_the_cameras_it_takes() -> None:
    before = {c: shard_of(c, 4) for c in CAMERA_IDS}
    after = {c: shard_of(c, 5) for c in CAMERA_IDS}
    moved = [c for c in CAMERA_IDS if before[c] != after[c]]
    assert {after[c] for c in moved} == {4}  # every move goes to the new replica
    assert abs(len(moved) - len(CAMERA_IDS) / 5) < 80, len(moved)


def test_adding_a_server_moves_about_one_in_n_plus_one_cameras() -> None:
    three = [Endpoint.parse(f"gpu-{n}:8001") for n in range(3)]
    four = [*three, Endpoint.parse("gpu-3:8001")]
    before = {c: rendezvous_order(c, three)[0] for c in CAMERA_IDS}
    after = {c: rendezvous_order(c, four)[0] for c in CAMERA_IDS}
    moved = [c for c in CAMERA_IDS if before[c] != after[c]]
    assert {after[c] for c in moved} == {four[3]}
    assert abs(len(moved) - len(CAMERA_IDS) / 4) < 80, len(moved)
    assert max(Counter(after.values()).values()) < 1.15 * len(CAMERA_IDS) / 4


def test_fail_over_order_skips_only_the_dead_server() -> None:
    endpoints = [Endpoint.parse(f"gpu-{n}:8001") for n in range(3)]
    for camera in CAMERA_IDS[:200]:
        order = rendezvous_order(camera, endpoints)
        without_first = rendezvous_order(camera, order[1:])
        assert without_first == order[1:]


def test_camera_file_names_servers(tmp_path: Path) -> None:
    yaml_file = tmp_path / "cameras.yaml"
    yaml_file.write_text(
        "servers: [gpu-a:8001, grpcs://gpu-b:8001]\ncameras:\n  - {id: gate, url: /x.mp4}\n"
    )
    toml_file = tmp_path / "cameras.toml"
    toml_file.write_text('servers = ["gpu-a:8001"]\n[[cameras]]\nid = "gate"\nurl = "/x.mp4"\n')
    assert load_servers(yaml_file) == ["gpu-a:8001", "grpcs://gpu-b:8001"]
    assert load_servers(toml_file) == ["gpu-a:8001"]
    assert [c.id for c in load_cameras(yaml_file)] == ["gate"]
    assert choose_servers(None, yaml_file, "localhost:8001") == load_servers(yaml_file)
    assert choose_servers(["other:9001"], yaml_file, "localhost:8001") == ["other:9001"]
    assert choose_servers(None, None, "localhost:8001") == ["localhost:8001"]


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ("gpu-a", "'servers' must be a list"),
        ("[gpu-a]", "has no port"),
        ("[gpu-a:8001, gpu-a:8001]", "servers repeat"),
        ("[http://gpu-a:8001]", "use host:port"),
    ],
)
def test_bad_server_lists_are_refused_with_the_reason(
    tmp_path: Path, servers: str, message: str
) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text(f"servers: {servers}\ncameras:\n  - {{id: gate, url: /x.mp4}}\n")
    with pytest.raises(ConfigError, match=message):
        load_servers(path)


def test_ingest_refuses_a_bad_shard_before_streaming() -> None:
    result = CliRunner().invoke(app, ["ingest", "--shard", "5/3", "/nonexistent.mp4"])
    assert result.exit_code == 2
    assert "need 0 <= index < count" in result.output
