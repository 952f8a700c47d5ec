"""Camera lists: one camera per entry, from a YAML or TOML file or from the command line.

YAML::

    cameras:
      - id: gate
        url: rtsp://10.0.0.5:554/stream1
        fps: 5                      # target rate; faster cameras are decimated
        options: {timeout: "5000000"}
      - id: lobby
        url: http://10.0.0.6/mjpeg  # MJPEG over HTTP: JPEGs pass through untouched
      - id: replay
        url: /data/clip.mp4
        loop: true

TOML::

    [[cameras]]
    id = "gate"
    url = "rtsp://10.0.0.5:554/stream1"
    fps = 5
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

SOURCE_KINDS = ("auto", "rtsp", "file", "folder", "mjpeg", "usb", "av")
"""``auto`` picks from the URL: ``rtsp(s)://`` -> rtsp, ``http(s)://`` -> mjpeg,
``/dev/video*`` or ``usb:N`` -> usb, a folder -> folder, anything else -> file. ``av``
opens any other URL FFmpeg understands."""


class ConfigError(ValueError):
    """A camera list that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True)
class CameraConfig:
    """One camera.

    Attributes:
        id: Unique camera name, used in results, metrics and server assignment.
        url: ``rtsp://``/``rtsps://`` URL, ``http(s)://`` MJPEG URL, video file, image
            folder, or ``/dev/videoN`` / ``usb:N``.
        fps: Target frames per second: faster sources are decimated to it; files and
            folders are paced at it (None: a file's own rate, a folder unpaced).
        kind: One of :data:`SOURCE_KINDS`.
        options: FFmpeg options of the source (e.g. ``timeout``, ``video_size``,
            ``input_format``), as strings; they override camdet's defaults.
        loop: Files and folders start again at their end instead of finishing.
        pace: Files and folders deliver frames at their frame rate, like a camera (False:
            as fast as they are taken, for capacity runs).
        jpeg_quality: JPEG quality for decoded frames (None: the ingest default).
        decode_on_client: Decode H.264/HEVC here and send JPEGs to ``detect`` (servers
            without a video decoder; needed for ``fps`` decimation of such streams).
            False: access units pass through to ``detect_video`` undecoded.
    """

    id: str
    url: str
    fps: float | None = None
    kind: str = "auto"
    options: Mapping[str, str] = field(default_factory=dict)
    loop: bool = False
    pace: bool = True
    jpeg_quality: int | None = None
    decode_on_client: bool = False

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise ConfigError(f"camera id must be a non-empty string, got {self.id!r}")
        if not self.url:
            raise ConfigError(f"camera {self.id!r}: url is empty")
        if self.fps is not None and not self.fps > 0:
            raise ConfigError(f"camera {self.id!r}: fps must be > 0, got {self.fps}")
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(f"camera {self.id!r}: kind must be one of {SOURCE_KINDS}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"camera {self.id!r}: jpeg_quality must be in [1, 100]")
        object.__setattr__(self, "options", {str(k): str(v) for k, v in self.options.items()})


_FIELDS = {f.name for f in fields(CameraConfig)}


def camera_from_mapping(entry: Mapping[str, Any], position: int) -> CameraConfig:
    """One camera from a file entry; ``id`` defaults to ``cam<position>``.

    Raises:
        ConfigError: On unknown keys or invalid values.
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(f"camera entry {position} must be a mapping, got {entry!r}")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"camera entry {position}: unknown keys {unknown}; known: {sorted(_FIELDS)}"
        )
    values = {"id": f"cam{position}", **entry}
    values["id"] = str(values["id"])
    try:
        return CameraConfig(**values)
    except TypeError as error:
        raise ConfigError(f"camera entry {position}: {error}") from error


def camera_from_argument(text: str, position: int) -> CameraConfig:
    """One camera from the command line: ``URL`` or ``ID=URL`` (``cam<position>`` default).

    A ``=`` inside a URL (a query string) is not taken as an id separator.
    """
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return CameraConfig(id=name, url=rest)
    return CameraConfig(id=f"cam{position}", url=text)


def check_unique(cameras: Iterable[CameraConfig]) -> list[CameraConfig]:
    """The cameras, as a list, after checking that ids are unique.

    Raises:
        ConfigError: If two cameras share an id.
    """
    cameras = list(cameras)
    seen: set[str] = set()
    for camera in cameras:
        if camera.id in seen:
            raise ConfigError(f"camera id {camera.id!r} is used twice")
        seen.add(camera.id)
    return cameras


def read_document(path: Path) -> Mapping[str, Any]:
    """The top-level mapping of a camera file (``.yaml``/``.yml`` or ``.toml``).

    Raises:
        ConfigError: If the file does not parse or is not a mapping.
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from error
    elif path.suffix.lower() in (".yaml", ".yml"):
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: {error}") from error
    else:
        raise ConfigError(f"{path}: camera lists are .yaml, .yml or .toml files")
    if not isinstance(document, Mapping):
        raise ConfigError(f"{path}: expected a mapping with a 'cameras' list")
    return document


def load_cameras(path: Path) -> list[CameraConfig]:
    """Read a camera list file (``.yaml``/``.yml`` or ``.toml``).

    The file may also name servers (``servers``, see :mod:`camdet.client.sharding`).

    Raises:
        ConfigError: If the file is not a mapping with a ``cameras`` list of valid,
            uniquely named cameras.
    """
    entries = read_document(path).get("cameras")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty 'cameras' list")
    return check_unique(camera_from_mapping(entry, i) for i, entry in enumerate(entries))
