"""Cameras sharded over ingest replicas, and servers named by the camera file.

Two stable assignments by camera id, both rendezvous (highest random weight) hashing, so
growing a set by one moves only about ``1 / (n + 1)`` of the cameras:

- camera -> ingest replica (:func:`shard_cameras`): each of ``count`` client processes
  (a Kubernetes StatefulSet's pods, numbered 0..count-1) streams only its own cameras
  from the one shared camera file;
- camera -> server (:func:`camdet.client.servers.rendezvous_order`): inside one client,
  each camera's preferred server, with fail-over to the next preference.

A camera file may name its servers next to its cameras::

    servers: [gpu-a:8001, gpu-b:8001, grpcs://gpu-c:8001]
    cameras:
      - {id: gate, url: "rtsp://10.0.0.5:554/stream1"}
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from camdet.client.config import CameraConfig, ConfigError, read_document
from camdet.client.servers import Endpoint

SHARD_ENV = "CAMDET_SHARD"
"""Environment variable of ``camdet ingest --shard``."""

_SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """This replica's place among the ingest replicas.

    Attributes:
        index: This replica, 0-based (a StatefulSet pod's ordinal).
        count: Number of replicas; every camera belongs to exactly one of them.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``INDEX/COUNT``, e.g. ``2/4`` for the third of four replicas.

        Raises:
            ValueError: On another form or an index outside ``[0, count)``.
        """
        found = _SHARD_PATTERN.match(text)
        if found is None:
            raise ValueError(f"shard {text!r}: use INDEX/COUNT, e.g. 0/3")
        return cls(int(found[1]), int(found[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard(0, 1)
"""One replica streams every camera."""


def _weight(key: str, camera_id: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{camera_id}".encode(), digest_size=8).digest()


def shard_of(camera_id: str, count: int) -> int:
    """The replica (0..count-1) that streams a camera: the highest rendezvous weight.

    Replica ``i`` is keyed by its index alone, so replicas that stay keep their cameras
    when others are added or removed.
    """
    return max(range(count), key=lambda index: _weight(f"replica-{index}", camera_id))


def shard_cameras(cameras: Iterable[CameraConfig], shard: Shard) -> list[CameraConfig]:
    """The cameras of one replica, in file order."""
    return [c for c in cameras if shard_of(c.id, shard.count) == shard.index]


def load_servers(path: Path) -> list[str]:
    """The ``servers`` list of a camera file (empty when it names none).

    Raises:
        ConfigError: If ``servers`` is not a list of valid, distinct gRPC URLs.
    """
    document = read_document(path)
    servers = document.get("servers", [])
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise ConfigError(f"{path}: 'servers' must be a list of host:port strings")
    try:
        endpoints = [Endpoint.parse(s) for s in servers]
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from error
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError(f"{path}: servers repeat: {servers}")
    return list(servers)


def choose_servers(
    given: Sequence[str] | None, camera_file: Path | None, default: str
) -> list[str]:
    """The servers to use: ``--server``/``CAMDET_URL``, else the file's, else ``default``."""
    if given:
        return list(given)
    from_file = load_servers(camera_file) if camera_file is not None else []
    return from_file or [default]
