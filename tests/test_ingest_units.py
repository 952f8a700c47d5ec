"""Ingest building blocks without a tritonserver: accounting, buffers, sources, sinks, config.

Sources are read from real servers on loopback (GStreamer RTSP, an HTTP MJPEG camera) and
real files; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import threading
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from camdet.client.accounting import Accounting, percentile
from camdet.client.backoff import Backoff, BackoffPolicy
from camdet.client.config import (
    CameraConfig,
    ConfigError,
    camera_from_argument,
    load_cameras,
)
from camdet.client.metrics import IngestCollector, serve_metrics
from camdet.client.reader import CapturedFrame, Decimator, FrameBuffer
from camdet.client.report import LiveView, totals_table
from camdet.client.servers import Endpoint, rendezvous_order
from camdet.client.sinks import AnnotatedVideoSink, JsonLinesSink, Result, annotate
from camdet.client.sources import (
    AvSource,
    ImageFolderSource,
    MjpegHttpSource,
    SourceError,
    has_huffman_tables,
    iter_multipart,
    multipart_boundary,
    open_source,
    source_kind,
)
from rich.console import Console

from camdet.contract import Detection
from camdet.scenes import SceneSequence, encode_jpeg
from tests.helpers.clips import CLIP_FPS, make_clips
from tests.helpers.mjpeg import MjpegServer
from tests.helpers.rtsp import RtspServer, require_gst_rtsp
from tests.helpers.servers import self_signed_certificate


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory):
    return make_clips(tmp_path_factory.mktemp("clips"), [11], frames=30)[0]


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def captured(index: int, image: np.ndarray | None = None, encoded: bytes | None = None):
    return CapturedFrame(
        "cam", index, 0, index, None, time.time(), time.monotonic(), encoded, image
    )


# ------------------------------------------------------------------------- accounting


def test_accounting_identity_holds_at_every_instant_under_concurrency() -> None:
    accounting = Accounting(["a", "b"])
    stop = threading.Event()
    bad = []

    def worker(camera: str, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(1000):
            accounting.captured(camera)
            rng.choice(
                [
                    lambda: accounting.answered(camera, 0.01),
                    lambda: accounting.dropped(camera),
                    lambda: accounting.failed(camera),
                ]
            )()

    def watcher() -> None:
        while not stop.is_set():
            bad.extend(t for t in accounting.snapshot().values() if not t.balanced)

    watching = threading.Thread(target=watcher)
    watching.start()
    workers = [threading.Thread(target=worker, args=(c, i)) for i, c in enumerate("aabb")]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watching.join()
    assert not bad
    for totals in accounting.snapshot().values():
        assert totals.captured == 2000
        assert totals.in_flight == 0
        assert totals.answered + totals.dropped + totals.failed == 2000


def test_latency_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    accounting = Accounting(["a"])
    for latency in (0.1, 0.2, 0.3, 0.4):
        accounting.captured("a")
        accounting.answered("a", latency)
    totals = accounting.snapshot()["a"]
    assert (totals.latency_p50_s, totals.latency_p99_s) == (0.2, 0.4)


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(BackoffPolicy(0.5, 4.0, 2.0, jitter=0.5), random.Random(1))
    delays = [backoff.next_delay() for _ in range(2000)]
    ceilings = [0.5, 1.0, 2.0, 4.0] + [4.0] * 1996
    assert all(c * 0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    with pytest.raises(ValueError, match="invalid backoff policy"):
        BackoffPolicy(2.0, 1.0)


# ----------------------------------------------------------------- servers and config


def test_rendezvous_assignment_is_stable_spread_and_minimal_on_change() -> None:
    servers = [Endpoint.parse(f"host{i}:8001") for i in range(3)]
    cameras = [f"cam{i}" for i in range(60)]
    first = {c: rendezvous_order(c, servers)[0] for c in cameras}
    assert first == {c: rendezvous_order(c, list(reversed(servers)))[0] for c in cameras}
    assert {e.address for e in first.values()} == {s.address for s in servers}
    # Removing a server moves only its own cameras, each to its second choice.
    remaining = servers[:2]
    for camera in cameras:
        now = rendezvous_order(camera, remaining)[0]
        if first[camera] in remaining:
            assert now == first[camera]
        else:
            assert now == rendezvous_order(camera, servers)[1]


def test_endpoint_urls() -> None:
    assert Endpoint.parse("localhost:8001") == Endpoint("localhost:8001", False)
    assert Endpoint.parse("grpc://h:1") == Endpoint("h:1", False)
    assert Endpoint.parse("grpcs://h:1") == Endpoint("h:1", True)
    assert Endpoint.parse("grpcs://h:1").url == "grpcs://h:1"
    with pytest.raises(ValueError, match="has no port"):
        Endpoint.parse("localhost")
    with pytest.raises(ValueError, match="use host:port, grpc:// or grpcs://"):
        Endpoint.parse("http://h:1")


def test_camera_lists_in_yaml_and_toml_are_the_same(tmp_path: Path) -> None:
    (tmp_path / "cams.yaml").write_text(
        "cameras:\n"
        "  - id: gate\n    url: rtsp://10.0.0.5/s1\n    fps: 5\n"
        "    options: {timeout: 5000000}\n"
        "  - url: /data/clip.mp4\n    loop: true\n"
    )
    (tmp_path / "cams.toml").write_text(
        '[[cameras]]\nid = "gate"\nurl = "rtsp://10.0.0.5/s1"\nfps = 5\n'
        "options = { timeout = 5000000 }\n"
        '[[cameras]]\nurl = "/data/clip.mp4"\nloop = true\n'
    )
    from_yaml = load_cameras(tmp_path / "cams.yaml")
    assert from_yaml == load_cameras(tmp_path / "cams.toml")
    assert from_yaml == [
        CameraConfig("gate", "rtsp://10.0.0.5/s1", fps=5, options={"timeout": "5000000"}),
        CameraConfig("cam1", "/data/clip.mp4", loop=True),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("cameras:\n  - {id: a, url: x, fsp: 5}\n", "camera entry 0: unknown keys ['fsp']"),
        ("cameras:\n  - {id: a, url: x}\n  - {id: a, url: y}\n", "camera id 'a' is used twice"),
        ("cameras:\n  - {id: a, url: x, fps: 0}\n", "camera 'a': fps must be > 0, got 0"),
        ("cameras:\n  - {id: a, url: ''}\n", "camera 'a': url is empty"),
        ("cams: []\n", "expected a non-empty 'cameras' list"),
    ],
)
def test_bad_camera_lists_say_what_is_wrong(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "cams.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_cameras(path)
    assert error in str(caught.value)


def test_cameras_from_the_command_line() -> None:
    assert camera_from_argument("gate=rtsp://h/s", 3) == CameraConfig("gate", "rtsp://h/s")
    assert camera_from_argument("rtsp://h/s?a=b", 3) == CameraConfig("cam3", "rtsp://h/s?a=b")
    assert camera_from_argument("/x/y.mp4", 0).id == "cam0"


def test_source_kinds_from_urls(tmp_path: Path) -> None:
    def kind(url: str) -> str:
        return source_kind(CameraConfig("c", url))

    assert kind("rtsp://h/s") == kind("rtsps://h/s") == "rtsp"
    assert kind("http://h/video.mjpg") == "mjpeg"
    assert kind("/dev/video0") == kind("usb:1") == "usb"
    assert kind(str(tmp_path)) == "folder"
    assert kind("/data/clip.mp4") == "file"
    with pytest.raises(SourceError, match="is not a file"):
        open_source(CameraConfig("c", str(tmp_path / "missing.mp4")))


# -------------------------------------------------------------- buffer and decimation


def test_realtime_buffer_evicts_oldest_and_capacity_buffer_blocks() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        realtime = FrameBuffer(2, drop_oldest=True, loop=loop)
        assert realtime.put(captured(0)) == [] and realtime.put(captured(1)) == []
        assert [f.index for f in realtime.put(captured(2))] == [0]
        assert (await realtime.get()).index == 1

        capacity = FrameBuffer(1, drop_oldest=False, loop=loop)
        capacity.put(captured(0))
        done = threading.Event()
        threading.Thread(target=lambda: (capacity.put(captured(1)), done.set())).start()
        await asyncio.sleep(0.2)
        assert not done.is_set()  # back-pressured
        assert (await capacity.get()).index == 0
        await asyncio.to_thread(done.wait, 5)
        assert (await capacity.get()).index == 1
        capacity.close()
        assert await capacity.get() is None
        assert [f.index for f in capacity.put(captured(2))] == [2]  # closed: rejected

    asyncio.run(scenario())


def test_decimation_keeps_the_target_rate() -> None:
    decimator = Decimator(10)
    kept = [i for i in range(90) if decimator.keep(i / 30)]
    assert kept == list(range(0, 90, 3))
    assert all(Decimator(None).keep(t) for t in (0.0, 0.0, 0.001))


# --------------------------------------------------------------------------- sources


def test_video_file_source_yields_every_frame_in_order(clip) -> None:
    expected = decoded_frames(clip.path)
    frames = list(AvSource(str(clip.path), {}, live=False, pass_video=False).session())
    assert [f.position for f in frames] == list(range(len(expected)))
    assert [f.pts_s for f in frames] == pytest.approx([i / CLIP_FPS for i in range(30)])
    assert all(f.encoded is None for f in frames)
    for got, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got.rgb(), want)


def test_paced_file_source_runs_at_the_clip_rate(clip) -> None:
    start = time.monotonic()
    count = sum(1 for _ in AvSource(str(clip.path), {}, live=False, pace=True).session())
    assert count == 30
    assert 2.9 * 0.95 <= time.monotonic() - start <= 2.9 + 1.5


@pytest.mark.parametrize("tls", [False, True], ids=["rtsp", "rtsps"])
def test_rtsp_source_delivers_the_clip_bit_exactly(clip, tls: bool, tmp_path: Path) -> None:
    require_gst_rtsp()
    expected = decoded_frames(clip.path)
    certificate = self_signed_certificate(tmp_path) if tls else None
    with RtspServer({"/cam": clip.path}, tls=certificate) as rtsp:
        assert rtsp.url("/cam").startswith("rtsps://" if tls else "rtsp://")
        source = open_source(CameraConfig("c", rtsp.url("/cam"), decode_on_client=True))
        frames = list(source.session())  # the session ends with the clip
    assert [f.position for f in frames] == list(range(len(expected)))
    for got, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got.rgb(), want)


def test_rtsp_source_that_is_down_raises_a_source_error() -> None:
    require_gst_rtsp()
    source = open_source(CameraConfig("c", "rtsp://127.0.0.1:9/none"))
    with pytest.raises(SourceError, match=re.escape("cannot open rtsp://127.0.0.1:9/none")):
        next(source.session())


def test_mjpeg_camera_passes_jpegs_through_untouched() -> None:
    jpegs = [encode_jpeg(image) for image in scene_images(5, seed=3)]
    for content_length in (True, False):
        with MjpegServer(jpegs, fps=50, content_length=content_length) as camera:
            frames = []
            for frame in MjpegHttpSource(camera.url).session():
                frames.append(frame)
                if len(frames) == 12:
                    break
        assert [f.encoded for f in frames] == [jpegs[i % 5] for i in range(12)]
        assert [f.position for f in frames] == list(range(12))


def test_mjpeg_camera_with_a_password() -> None:
    jpegs = [encode_jpeg(SceneSequence(3, 64, 48).frame(0).image)]
    with MjpegServer(jpegs, fps=50, credentials=("admin", "s3cr:t")) as camera:
        url = camera.url.replace("http://", "http://admin:s3cr%3At@")
        assert next(MjpegHttpSource(url).session()).encoded == jpegs[0]
        with pytest.raises(SourceError, match="401"):
            next(MjpegHttpSource(url.replace("s3cr", "wrong")).session())


def test_multipart_parsing_handles_boundary_spellings() -> None:
    assert multipart_boundary("multipart/x-mixed-replace; boundary=--myb") == b"myb"
    assert multipart_boundary('multipart/x-mixed-replace;boundary="myb"') == b"myb"
    assert multipart_boundary("image/jpeg") is None
    body = b"--myb\r\nContent-Type: image/jpeg\r\n\r\nAAA\r\n--myb\r\n\r\nBB\r\n--myb\r\n"
    assert list(iter_multipart(io.BufferedReader(io.BytesIO(body)), b"myb")) == [b"AAA", b"BB"]


def scene_images(
    count: int, seed: int = 4, width: int = 320, height: int = 240
) -> list[np.ndarray]:
    """``count`` consecutive RGB frames of one synthetic camera."""
    sequence = SceneSequence(seed, width, height)
    return [sequence.frame(i).image for i in range(count)]


def write_mjpeg_avi(path: Path, images: list[np.ndarray]) -> None:
    """Encode RGB frames as an MJPEG stream in an AVI container, 10 fps."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuvj420p"
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_mjpeg_stream_in_a_container_passes_through(tmp_path: Path) -> None:
    path = tmp_path / "mjpeg.avi"
    images = scene_images(6)
    write_mjpeg_avi(path, images)
    frames = list(open_source(CameraConfig("c", str(path))).session())
    assert len(frames) == 6
    for frame, image in zip(frames, images, strict=True):
        assert frame.pixels is None and frame.encoded.startswith(b"\xff\xd8")
        decoded = cv2.imdecode(np.frombuffer(frame.encoded, np.uint8), cv2.IMREAD_COLOR)
        assert np.abs(decoded[..., ::-1].astype(int) - image).mean() < 6


def without_huffman_tables(jpeg: bytes) -> bytes:
    """The JPEG with its DHT segments cut out, as "AVI1" MJPEG cameras send it."""
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if jpeg[pos + 1] != 0xC4:
            out += jpeg[pos:end]
        pos = end
    return bytes(out + jpeg[pos:])


def test_mjpeg_without_huffman_tables_is_decoded_not_passed_through(tmp_path: Path) -> None:
    source_path, stripped_path = tmp_path / "full.avi", tmp_path / "avi1.avi"
    images = scene_images(4)
    write_mjpeg_avi(source_path, images)
    with av.open(str(source_path)) as full, av.open(str(stripped_path), "w") as stripped:
        out = stripped.add_stream_from_template(full.streams.video[0])
        for packet in full.demux(video=0):
            if packet.size:
                assert has_huffman_tables(bytes(packet))
                copy = av.Packet(without_huffman_tables(bytes(packet)))
                assert not has_huffman_tables(bytes(copy))
                copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
                copy.stream = out
                stripped.mux(copy)
    frames = list(open_source(CameraConfig("c", str(stripped_path))).session())
    assert len(frames) == 4 and all(f.encoded is None for f in frames)
    for frame, image in zip(frames, images, strict=True):
        assert np.abs(frame.rgb().astype(int) - image).mean() < 6


def test_image_folder_passes_jpeg_and_png_and_decodes_the_rest(tmp_path: Path) -> None:
    image = SceneSequence(5, 64, 48).frame(0).image
    jpeg = encode_jpeg(image)
    png = cv2.imencode(".png", image[..., ::-1])[1].tobytes()
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.png").write_bytes(png)
    cv2.imwrite(str(tmp_path / "c.bmp"), image[..., ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(ImageFolderSource(tmp_path, fps=None, pace=False).session())
    assert [f.encoded for f in frames[:2]] == [jpeg, png]
    np.testing.assert_array_equal(frames[2].rgb(), image)
    assert len(frames) == 3


# ----------------------------------------------------------------------------- sinks


def result(frame: CapturedFrame, detections: list[Detection]) -> Result:
    return Result(frame, detections, 0.0421, "localhost:8001")


def test_json_lines_records(tmp_path: Path) -> None:
    image = SceneSequence(6, 64, 48).frame(0).image
    detection = Detection((1.04, 2.0, 30.0, 40.0), 0.91234, 2, "triangle")
    sink = JsonLinesSink(tmp_path / "out.jsonl")
    sink.write(result(captured(7, encoded=encode_jpeg(image)), [detection]))
    sink.write(result(captured(8, image=image), []))
    sink.close()
    first, second = (json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines())
    assert first["camera"] == "cam" and first["frame"] == 7
    assert (first["width"], first["height"], first["latency_ms"]) == (64, 48, 42.1)
    assert first["detections"] == [
        {"box": [1.0, 2.0, 30.0, 40.0], "score": 0.9123, "class_id": 2, "label": "triangle"}
    ]
    assert second["frame"] == 8 and second["detections"] == []
    assert first["captured_at"] <= second["captured_at"]


def test_annotated_video_has_every_answered_frame_with_boxes_drawn(tmp_path: Path) -> None:
    images = scene_images(8, seed=7, width=160, height=120)
    box = Detection((40.0, 30.0, 100.0, 90.0), 0.9, 1, "box")
    drawn = annotate(images[0], [box])
    assert tuple(drawn[30, 70]) == (60, 180, 75)  # class 1's colour on the top edge
    sink = AnnotatedVideoSink(tmp_path)
    start = time.monotonic()
    for i, image in enumerate(images):
        frame = CapturedFrame("cam/1", i, 0, i, None, time.time(), start + i / 10, None, image)
        sink.write(result(frame, [box]))
    sink.close()
    assert sink.written == 8 and sink.skipped == 0
    frames = decoded_frames(sink.path("cam/1"))
    assert sink.path("cam/1").name == "cam_1.mp4"
    assert len(frames) == 8 and frames[0].shape == (120, 160, 3)


# --------------------------------------------------------------------- metrics, table


def test_metrics_endpoint_serves_the_accounting() -> None:
    accounting = Accounting(["gate"])
    for _ in range(5):
        accounting.captured("gate")
    accounting.answered("gate", 0.25)
    accounting.dropped("gate", 2)
    accounting.failed("gate")
    metrics = serve_metrics(IngestCollector(accounting, lambda: {"gate": "h:1"}), port=0)
    try:
        with urllib.request.urlopen(metrics.url, timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.close()
    for line in (
        'camdet_client_frames_captured_total{camera="gate"} 5.0',
        'camdet_client_frames_answered_total{camera="gate"} 1.0',
        'camdet_client_frames_dropped_total{camera="gate"} 2.0',
        'camdet_client_frames_failed_total{camera="gate"} 1.0',
        'camdet_client_frames_in_flight{camera="gate"} 1.0',
        'camdet_client_latency_seconds{camera="gate",quantile="0.99"} 0.25',
        'camdet_client_camera_server{camera="gate",server="h:1"} 1.0',
    ):
        assert line in text


def test_totals_table_lists_every_camera() -> None:
    accounting = Accounting(["a", "b"])
    accounting.captured("a")
    console = Console(record=True, width=200)
    console.print(totals_table(accounting.snapshot(), {"a": "h:1", "b": None}, {"a": (3.0, 2.0)}))
    text = console.export_text()
    assert "h:1" in text and "none up" in text and "3.0" in text


def test_live_view_shows_rates_since_the_previous_render() -> None:
    accounting = Accounting(["a"])
    view = LiveView(accounting, lambda: {"a": "h:1"})
    view.render()
    for _ in range(10):
        accounting.captured("a")
    accounting.answered("a", 0.05)
    time.sleep(0.1)
    console = Console(record=True, width=200)
    console.print(view.render())
    row = next(line for line in console.export_text().splitlines() if "│ a " in line)
    frames_in, frames_out = (float(cell) for cell in row.split("│")[3:5])
    assert 10 / 0.5 < frames_in <= 10 / 0.1 and 1 / 0.5 < frames_out <= 1 / 0.1
