"""Camera sources: RTSP/RTSPS, video files, image folders, MJPEG over HTTP and USB cameras.

A source opens one *session* (a connection, or one pass over a file) at a time and yields
its frames. Frames that already arrive as JPEG (MJPEG cameras, MJPEG streams in any
container, JPEG files) keep their bytes (``encoded``) and are never decoded. H.264 and
HEVC streams are demuxed, never decoded: each packet becomes an Annex-B access unit
(``video``) for the server's video decoder, unless the camera decodes on the client.
Everything else is decoded by PyAV/FFmpeg (``pixels``), converted to RGB only if it is
kept after decimation, and encoded to JPEG later, only if it is sent. Reconnecting is the
reader's job: a session ends by returning (end of stream) or by raising
:class:`SourceError`.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import BinaryIO

import av
import cv2
import numpy as np
from camdet.client.config import CameraConfig
from camdet.client.demux import CODEC_NAMES, AccessUnit, AnnexBConverter

logger = logging.getLogger(__name__)

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_PASSTHROUGH_CODECS = frozenset({"mjpeg", "jpeg"})
_CHUNK = 64 * 1024


class SourceError(RuntimeError):
    """A camera could not be opened or stopped delivering; the reader reconnects."""


@dataclass(frozen=True)
class Timeouts:
    """Network timeouts of a source, seconds.

    Attributes:
        open_s: Connecting and reading the stream header.
        read_s: Waiting for the next data; a camera silent for longer is reconnected.
    """

    open_s: float = 10.0
    read_s: float = 5.0


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class SourceFrame:
    """One frame as the source delivers it.

    Attributes:
        encoded: JPEG or PNG bytes when the source delivers them (sent untouched).
        pixels: The decoded frame when the source had to decode: ``[H, W, 3]`` uint8 RGB,
            or FFmpeg's frame in the decoder's own format, converted by :meth:`rgb` only
            for frames that survive decimation.
        pts_s: Presentation time in seconds from the stream, or None if it has none.
        position: Index of the frame within its session, 0-based, before any decimation
            (for access units: in decode order).
        video: The H.264/HEVC access unit when the stream passes through undecoded.
    """

    encoded: bytes | None
    pixels: np.ndarray | av.VideoFrame | None
    pts_s: float | None
    position: int
    video: AccessUnit | None = None

    def rgb(self) -> np.ndarray | None:
        """``[H, W, 3]`` uint8 RGB pixels (converted on each call), None for encoded frames."""
        if isinstance(self.pixels, av.VideoFrame):
            return self.pixels.to_ndarray(format="rgb24")
        return self.pixels


class Source(ABC):
    """Where one camera's frames come from.

    Attributes:
        live: True for cameras (an end of stream means reconnect); False for files and
            folders (an end of stream means done, or start again when looping).
    """

    live: bool = True

    @abstractmethod
    def session(self) -> Iterator[SourceFrame]:
        """Open the source and yield its frames until the stream ends.

        Raises:
            SourceError: If the source cannot be opened or fails mid-stream.
        """


class Pacer:
    """Sleeps so that frames leave at their presentation times, like a live camera."""

    def __init__(self) -> None:
        self._origin: float | None = None

    def wait(self, pts_s: float | None) -> None:
        """Block until ``pts_s`` seconds after the first frame's time (None: no wait)."""
        if pts_s is None:
            return
        now = time.monotonic()
        if self._origin is None:
            self._origin = now - pts_s
        delay = self._origin + pts_s - now
        if delay > 0:
            time.sleep(delay)


class AvSource(Source):
    """Anything FFmpeg opens: RTSP/RTSPS, files, V4L2 USB cameras, other stream URLs.

    Args:
        url: What FFmpeg opens.
        options: FFmpeg options.
        live: Whether the end of the stream means reconnect.
        pace: Deliver at the stream's own rate (files).
        container_format: FFmpeg input format, or None to probe.
        timeouts: Network timeouts.
        pass_video: H.264/HEVC packets pass through as access units (False: decoded
            here, the old path for servers without a video decoder).
    """

    def __init__(
        self,
        url: str,
        options: dict[str, str],
        live: bool,
        pace: bool = False,
        container_format: str | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        pass_video: bool = True,
    ) -> None:
        self.url = url
        self.options = options
        self.live = live
        self.pace = pace
        self.container_format = container_format
        self.timeouts = timeouts
        self.pass_video = pass_video

    def session(self) -> Iterator[SourceFrame]:
        """Yield frames: MJPEG and H.264/HEVC pass through, other codecs are decoded."""
        try:
            container = av.open(
                self.url,
                format=self.container_format,
                options=self.options,
                timeout=(self.timeouts.open_s, self.timeouts.read_s),
            )
        except (av.FFmpegError, OSError) as error:
            raise SourceError(f"cannot open {self.url}: {error}") from error
        with container:
            if not container.streams.video:
                raise SourceError(f"{self.url} has no video stream")
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            passthrough = codec in _PASSTHROUGH_CODECS
            video = self.pass_video and codec in CODEC_NAMES
            logger.info(
                "opened %s (%s%s)",
                self.url,
                codec,
                ", JPEG passthrough" if passthrough else ", undecoded" if video else "",
            )
            try:
                if video:
                    yield from self._access_units(container, stream)
                else:
                    yield from self._decoded_frames(container, stream, passthrough)
            except (av.FFmpegError, OSError) as error:
                raise SourceError(f"{self.url} failed: {error}") from error

    def _decoded_frames(
        self, container: av.container.InputContainer, stream: av.VideoStream, passthrough: bool
    ) -> Iterator[SourceFrame]:
        pacer = Pacer() if self.pace else None
        for position, (encoded, pixels, pts_s) in enumerate(
            _frames(container, stream, passthrough)
        ):
            if pacer is not None:
                pacer.wait(pts_s)
            yield SourceFrame(encoded, pixels, pts_s, position)

    def _access_units(
        self, container: av.container.InputContainer, stream: av.VideoStream
    ) -> Iterator[SourceFrame]:
        """One frame per access unit, in decode order; paced by decode time."""
        pacer = Pacer() if self.pace else None
        converter = AnnexBConverter(stream)
        position = 0
        for packet in container.demux(stream):
            pts_s = _seconds(packet.pts, packet.time_base)
            if pacer is not None:
                # B-frames make presentation times jump back and forth; decode times rise.
                pacer.wait(_seconds(packet.dts, packet.time_base))
            for unit in converter.convert(packet):
                yield SourceFrame(None, None, pts_s, position, unit)
                position += 1
        for unit in converter.flush():
            yield SourceFrame(None, None, None, position, unit)
            position += 1


_Item = tuple[bytes | None, av.VideoFrame | None, float | None]


def _seconds(pts: int | None, time_base: object) -> float | None:
    return None if pts is None or time_base is None else float(pts * time_base)


def _frames(
    container: av.container.InputContainer, stream: av.VideoStream, passthrough: bool
) -> Iterator[_Item]:
    """Complete JPEG packets as they are; anything else decoded by FFmpeg."""
    for packet in container.demux(stream):
        if passthrough and packet.size:
            data = bytes(packet)
            if has_huffman_tables(data):
                yield data, None, _seconds(packet.pts, packet.time_base)
                continue
        try:
            frames = packet.decode()
        except av.InvalidDataError as error:
            # A damaged packet (e.g. the first ones after joining mid-GOP) costs its frame
            # only; the stream goes on.
            logger.debug("skipping undecodable packet: %s", error)
            continue
        for frame in frames:
            yield None, frame, _seconds(frame.pts, frame.time_base)


def has_huffman_tables(jpeg: bytes) -> bool:
    """Whether a JPEG defines its Huffman tables (DHT) before the scan.

    Many USB and IP cameras send "AVI1" MJPEG frames that leave the standard tables out.
    FFmpeg decodes them, but a strict JPEG decoder (the server's) rejects them, so such
    frames are decoded here and re-encoded instead of passed through.
    """
    if not jpeg.startswith(JPEG_SOI):
        return False
    pos = len(JPEG_SOI)
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
        marker = jpeg[pos + 1]
        if marker == 0xC4:
            return True
        if marker == 0xDA:  # start of scan: no tables came before it
            return False
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    return False


class ImageFolderSource(Source):
    """The images of a folder in name order; JPEG and PNG files pass through undecoded."""

    live = False

    def __init__(self, folder: Path, fps: float | None, pace: bool) -> None:
        self.folder = Path(folder)
        self.fps = fps
        self.pace = pace

    def session(self) -> Iterator[SourceFrame]:
        """Yield every image once, at ``fps`` when pacing."""
        paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        pacer = Pacer() if self.pace and self.fps else None
        for position, path in enumerate(paths):
            pts_s = position / self.fps if self.fps else None
            if pacer is not None:
                pacer.wait(pts_s)
            yield _image_file_frame(path, pts_s, position)


def _image_file_frame(path: Path, pts_s: float | None, position: int) -> SourceFrame:
    data = path.read_bytes()
    if data.startswith((JPEG_SOI, PNG_SIGNATURE)):
        return SourceFrame(data, None, pts_s, position)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"cannot decode {path}")
    return SourceFrame(None, np.ascontiguousarray(bgr[..., ::-1]), pts_s, position)


class MjpegHttpSource(Source):
    """An MJPEG camera over HTTP (``multipart/x-mixed-replace``); JPEGs pass through."""

    def __init__(self, url: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.url = url
        self.timeouts = timeouts

    def session(self) -> Iterator[SourceFrame]:
        """Yield each part of the multipart stream as one JPEG frame."""
        try:
            # One socket timeout bounds both the connection and each wait for data.
            response = open_http(self.url, self.timeouts.read_s)
        except (urllib.error.URLError, OSError) as error:
            raise SourceError(f"cannot open {self.url}: {error}") from error
        with response:
            boundary = multipart_boundary(response.headers.get("Content-Type", ""))
            if boundary is None:
                raise SourceError(
                    f"{self.url} is not an MJPEG stream (Content-Type "
                    f"{response.headers.get('Content-Type')!r})"
                )
            try:
                for position, part in enumerate(iter_multipart(response, boundary)):
                    yield SourceFrame(part, None, None, position)
            except OSError as error:
                raise SourceError(f"{self.url} failed: {error}") from error


def open_http(url: str, timeout_s: float) -> http.client.HTTPResponse:
    """GET ``url``, logging in with the credentials the URL carries, if any.

    ``http://user:password@host/...`` credentials are sent by HTTP basic or digest
    authentication, whichever the camera asks for.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.urlopen(url, timeout=timeout_s)
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    user, password = (urllib.parse.unquote(v or "") for v in (parts.username, parts.password))
    passwords.add_password(None, bare, user, password)
    opener = urllib.request.build_opener(
        urllib.request.HTTPBasicAuthHandler(passwords),
        urllib.request.HTTPDigestAuthHandler(passwords),
    )
    return opener.open(bare, timeout=timeout_s)


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/x-mixed-replace`` Content-Type, or None."""
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/x-mixed-replace":
        return None
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary.strip("-"):
        return None
    # Cameras disagree on whether the parameter carries the leading "--"; matching the
    # bare token finds the delimiter lines either way.
    return boundary.lstrip("-").encode()


def iter_multipart(stream: BinaryIO, boundary: bytes) -> Iterator[bytes]:
    """Bodies of the parts of a multipart stream, as they arrive.

    Uses each part's ``Content-Length`` when given, else the next delimiter line.

    Args:
        stream: The HTTP response body (``read1`` is used, so parts are yielded as soon
            as they are complete).
        boundary: The boundary token without leading dashes.
    """
    buffer = bytearray()
    while True:
        part = _next_part(buffer, b"--" + boundary)
        if part is not None:
            yield part
            continue
        chunk = stream.read1(_CHUNK)
        if not chunk:
            return
        buffer += chunk


def _next_part(buffer: bytearray, delimiter: bytes) -> bytes | None:
    """Cut the first complete part out of ``buffer`` (None: more data needed)."""
    start = buffer.find(delimiter)
    if start < 0:
        return None
    header_end = buffer.find(b"\r\n\r\n", start)
    if header_end < 0:
        return None
    headers = bytes(buffer[start + len(delimiter) : header_end]).decode("latin-1")
    body_start = header_end + 4
    length = _content_length(headers)
    if length is not None:
        end = body_start + length
        if len(buffer) < end:
            return None
        next_start = end
    else:
        end = buffer.find(b"\r\n" + delimiter, body_start)
        if end < 0:
            return None
        next_start = end + 2
    body = bytes(buffer[body_start:end])
    del buffer[:next_start]
    return body


def _content_length(headers: str) -> int | None:
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def source_kind(camera: CameraConfig) -> str:
    """The source kind of a camera: its ``kind``, or guessed from the URL for ``auto``."""
    if camera.kind != "auto":
        return camera.kind
    url = camera.url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("rtsp", "rtsps"):
        return "rtsp"
    if scheme in ("http", "https"):
        return "mjpeg"
    if url.startswith(("/dev/video", "usb:")):
        return "usb"
    if scheme == "" and Path(url).is_dir():
        return "folder"
    return "file"


def rtsp_options(timeouts: Timeouts) -> dict[str, str]:
    """FFmpeg defaults for RTSP cameras: TCP transport, socket timeout, quick start."""
    return {
        "rtsp_transport": "tcp",
        "timeout": str(int(timeouts.read_s * 1e6)),  # microseconds
        "analyzeduration": "500000",  # microseconds; the SDP already names the codec
    }


def open_source(
    camera: CameraConfig, timeouts: Timeouts = DEFAULT_TIMEOUTS, pass_video: bool = True
) -> Source:
    """The source of a camera (nothing is opened until :meth:`Source.session`).

    Args:
        camera: The camera.
        timeouts: Network timeouts.
        pass_video: H.264/HEVC pass through undecoded (unless the camera decodes on the
            client).

    Raises:
        SourceError: If a folder or file does not exist.
    """
    kind = source_kind(camera)
    options = dict(camera.options)
    pass_video = pass_video and not camera.decode_on_client
    if kind == "rtsp":
        options = {**rtsp_options(timeouts), **options}
        return AvSource(camera.url, options, True, False, None, timeouts, pass_video)
    if kind == "mjpeg":
        return MjpegHttpSource(camera.url, timeouts)
    if kind == "usb":
        device = camera.url
        if device.startswith("usb:"):
            device = f"/dev/video{device[4:]}"
        return AvSource(device, options, True, False, "v4l2", timeouts, pass_video)
    if kind == "folder":
        if not Path(camera.url).is_dir():
            raise SourceError(f"camera {camera.id!r}: {camera.url} is not a folder")
        return ImageFolderSource(Path(camera.url), camera.fps, camera.pace)
    if kind == "file":
        path = camera.url.removeprefix("file://")
        if not Path(path).is_file():
            raise SourceError(f"camera {camera.id!r}: {path} is not a file")
        return AvSource(path, options, False, camera.pace, None, timeouts, pass_video)
    return AvSource(camera.url, options, True, False, None, timeouts, pass_video)
