"""Real parts for the ingest tests: synthetic clips, a GStreamer RTSP server, a slow server.

Nothing here is mocked: clips are real H.264 MP4s with exact ground truth, the RTSP server
is GStreamer's (run by Debian's python3), and the slow server is a real ``tritonserver``
whose detector sleeps before inferring.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from camdet.client.accounting import Accounting, CameraTotals
from camdet.client.sinks import Result

from camdet.cli.demo import match
from camdet.scenes import Frame, coco_targets, write_clip
from camdet.serving.portable import generate_portable_repository
from camdet.serving.server import Launch, Ports, TritonServer, has_cuda_gpu, portable_launch

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS = 640, 360, 10
CLIP_FRAMES = 150  # 15 s; a camera that reaches the end reconnects and starts again
GST_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)
SCORE_THRESHOLD = 0.5  # detections counted against ground truth


# ------------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    """A synthetic camera clip and its ground truth per frame index.

    Attributes:
        path: The MP4.
        truths: Ground truth per frame, in presentation order.
        display: Presentation index of each packet in decode order, for clips with
            B-frames (None: the orders agree).
    """

    path: Path
    truths: list[tuple[np.ndarray, np.ndarray]]
    display: tuple[int, ...] | None = None

    def frame(self, position: int) -> Frame:
        """Ground truth (boxes xyxy in clip pixels, class ids) of a frame, looping.

        ``position`` counts frames as the source delivers them: decoded frames in
        presentation order, passed-through access units in decode order.
        """
        index = position % len(self.truths)
        if self.display is not None:
            index = self.display[index]
        boxes, class_ids = self.truths[index]
        return Frame(np.empty((0, 0, 3), np.uint8), boxes, class_ids)


def make_clips(folder: Path, seeds: Iterable[int], frames: int = CLIP_FRAMES) -> list[Clip]:
    """Write (or reuse) one H.264 clip per seed in ``folder``."""
    clips = []
    for seed in seeds:
        path = folder / f"clip{seed}_{frames}.mp4"
        json_path = path.with_suffix(".json")
        if not json_path.exists():
            write_clip(path, seed, frames, CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS)
        clips.append(Clip(path, coco_targets(json.loads(json_path.read_text()))))
    return clips


def transcode_clip(clip: Clip, codec: str, bframes: int = 0) -> Clip:
    """The clip re-encoded (``"h264"``/``"hevc"``), same frames and GOP, maybe B-frames.

    The new clip's ground truth is the source's: the frames are the same pictures.
    """
    path = clip.path.with_name(f"{clip.path.stem}_{codec}_b{bframes}.mp4")
    encoder, params = {"h264": ("libx264", "x264-params"), "hevc": ("libx265", "x265-params")}[
        codec
    ]
    if not path.exists():
        with av.open(str(clip.path)) as source, av.open(str(path), "w") as sink:
            stream = sink.add_stream(encoder, rate=CLIP_FPS)
            stream.width, stream.height, stream.pix_fmt = CLIP_WIDTH, CLIP_HEIGHT, "yuv420p"
            gop = f"keyint={CLIP_FPS}:min-keyint={CLIP_FPS}:scenecut=0:bframes={bframes}"
            stream.options = {"preset": "ultrafast", "crf": "20", params: gop}
            if codec == "hevc":
                stream.options[params] += ":log-level=error"
            for index, frame in enumerate(source.decode(video=0)):
                picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"))
                picture.pts, picture.time_base = index, Fraction(1, CLIP_FPS)
                sink.mux(stream.encode(picture))
            sink.mux(stream.encode(None))
    return Clip(path, clip.truths, decode_order_display(path))


def decode_order_display(path: Path) -> tuple[int, ...] | None:
    """Presentation index of each packet in decode order (None: no reordering)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.size]
    rank = {value: index for index, value in enumerate(sorted(pts))}
    order = tuple(rank[value] for value in pts)
    return None if order == tuple(range(len(order))) else order


def damaged_clip(clip: Clip, skip_first: int, corrupt: Iterable[int]) -> Clip:
    """The clip remuxed without its first packets and with some packets' NAL units broken.

    The result starts mid-GOP (no keyframe for ``skip_first`` < GOP packets) and the
    packets at positions ``corrupt`` (in the new clip) carry a NAL header with the
    forbidden bit set: the undecodable bytes a damaged network packet leaves.
    """
    corrupt = set(corrupt)
    path = clip.path.with_name(f"{clip.path.stem}_damaged.mp4")
    with av.open(str(clip.path)) as source, av.open(str(path), "w") as sink:
        stream = sink.add_stream_from_template(source.streams.video[0])
        packets = [p for p in source.demux(source.streams.video[0]) if p.size]
        for position, packet in enumerate(packets[skip_first:]):
            data = bytes(packet)
            if position in corrupt:
                data = data[:4] + bytes([0x80 | data[4]]) + bytes(len(data) - 5)
            damaged = av.Packet(data)
            damaged.pts, damaged.dts = packet.pts, packet.dts
            damaged.time_base, damaged.stream = packet.time_base, stream
            damaged.is_keyframe = packet.is_keyframe
            sink.mux(damaged)
    truths = clip.truths[skip_first : len(packets)]
    return Clip(path, truths)


# -------------------------------------------------------------------------- RTSP server


def require_gst_rtsp() -> None:
    """Skip (fail on CI) when Debian's GStreamer RTSP server is not installed."""
    probe = (
        subprocess.run(
            [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
            capture_output=True,
            check=False,
        )
        if Path(SYSTEM_PYTHON).exists()
        else None
    )
    if probe is not None and probe.returncode == 0:
        return
    message = f"GStreamer RTSP server missing: apt-get install {GST_PACKAGES}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """``tests/rtsp_server.py`` in a process: start, stop, start again on the same port.

    Args:
        clips: Mount point (``/cam0``) -> clip path.
        tls: ``(certificate, key)`` PEM files to serve RTSPS instead.
    """

    def __init__(self, clips: dict[str, Path], tls: tuple[Path, Path] | None = None) -> None:
        self.clips = clips
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        """The camera URL of a mount point."""
        return f"{'rtsps' if self.tls else 'rtsp'}://127.0.0.1:{self.port}{mount}"

    def start(self, timeout_s: float = 15.0) -> RtspServer:
        """Start and wait until it prints READY and accepts connections.

        Raises:
            RuntimeError: If the process exits or is not ready in time.
        """
        argv = [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), "--port", str(self.port)]
        argv += [arg for mount, path in self.clips.items() for arg in ("--clip", f"{mount}={path}")]
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump_lines, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        output = []
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=0.1))
            if self.process.poll() is not None:
                raise RuntimeError(f"RTSP server exited: {''.join(output)}")
            if any(line.startswith("READY") for line in output) and _accepts(self.port):
                return self
        self.stop()
        raise RuntimeError(f"RTSP server not ready in {timeout_s} s: {''.join(output)}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _pump_lines(stream, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------- TLS, slow server


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost``/127.0.0.1 and its key (openssl)."""
    cert, key = folder / "server.crt", folder / "server.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return cert, key


SLOW_DETECTOR = '''"""Test variant of the portable detector: {delay_s} s of extra work per frame."""

import time

from camdet.triton_models.portable.detector_onnx import TritonPythonModel as _Detector


class TritonPythonModel(_Detector):
    def execute(self, requests):
        time.sleep({delay_s} * len(requests))
        return super().execute(requests)
'''


def slow_repository(production: Path, destination: Path, delay_s: float) -> Path:
    """The portable repository with a detector that takes ``delay_s`` more per frame."""
    generate_portable_repository(production, destination, gpu=has_cuda_gpu())
    (destination / "detector" / "1" / "model.py").write_text(SLOW_DETECTOR.format(delay_s=delay_s))
    return destination


def tls_server(repository: Path, workdir: Path, certificate: tuple[Path, Path]) -> TritonServer:
    """A (not yet started) portable tritonserver whose gRPC endpoint is TLS only."""
    ports = Ports.free()
    launch = portable_launch(repository, ports, workdir)
    cert, key = certificate
    tls_args = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={cert}",
        f"--grpc-server-key={key}",
        f"--grpc-root-cert={cert}",
    ]
    return TritonServer(
        Launch([*launch.argv, *tls_args], launch.env), ports, workdir / "tritonserver.log"
    )


# -------------------------------------------------------------------------- observing


@dataclass
class Watch:
    """Samples the accounting every 50 ms in a thread and keeps every unbalanced sample."""

    accounting: Accounting
    samples: int = 0
    violations: list[dict[str, CameraTotals]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            snapshot = self.accounting.snapshot()
            self.samples += 1
            if not all(t.balanced for t in snapshot.values()):
                self.violations.append(snapshot)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``condition()`` until true.

    Raises:
        AssertionError: Naming ``what`` if it stays false for ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Score:
    """Detections of answered frames against the clip's ground truth."""

    frames: int = 0
    truths: int = 0
    detections: int = 0
    matched: int = 0

    @property
    def recall(self) -> float:
        """Matched truths / truths."""
        return self.matched / max(self.truths, 1)

    @property
    def precision(self) -> float:
        """Matched detections / detections."""
        return self.matched / max(self.detections, 1)


def score(results: Iterable[Result], clip: Clip) -> Score:
    """Match each answered frame's detections to the truth of its clip frame.

    The frame's ``position`` in its session is its index in the clip: each RTSP session
    streams the clip from frame 0 over TCP, and files and MJPEG streams are read in order.
    """
    total = Score()
    for result in results:
        truth = clip.frame(result.frame.position)
        found = [d for d in result.detections if d.score >= SCORE_THRESHOLD]
        total.frames += 1
        total.truths += len(truth.boxes)
        total.detections += len(found)
        total.matched += len(match(found, truth))
    return total


def by_camera(results: Iterable[Result]) -> dict[str, list[Result]]:
    """Answered frames grouped by camera id, in arrival order."""
    grouped: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        grouped[result.frame.camera_id].append(result)
    return grouped


def assert_boxes_inside(results: Iterable[Result], width: int, height: int) -> None:
    """Every box lies inside the original frame, in its pixels."""
    for result in results:
        assert result.frame.size() == (width, height)
        for d in result.detections:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, d
