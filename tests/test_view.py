"""The view's parts without a server: address and key rules, the sink's costs, decoding, metrics.

The browser test (``test_view_browser.py``) runs the whole thing; these pin down the rules
cheaply: a public address needs a key, every request carries it, nothing is drawn for a
camera nobody watches, watched cameras are drawn at a capped rate and width, H.264 access
units decode to the frames they belong to, and Triton's counters become per-model times.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from camdet.client.config import CameraConfig
from camdet.client.reader import CapturedFrame
from camdet.client.sinks import Result
from camdet.client.sources import AvSource
from camdet.client.streamer import Ingest
from camdet.client.view.annotate import AccessUnitDecoder, render
from camdet.client.view.app import KEY_COOKIE, KEY_HEADER, View
from camdet.client.view.options import ViewAddress, ViewSettings, default_metrics_urls
from camdet.client.view.sink import ViewSink
from camdet.client.view.stats import TritonRates, parse_triton_metrics
from typer.testing import CliRunner

from camdet.cli.main import app
from camdet.contract import Detection
from camdet.scenes import write_clip
from camdet.tracking.lines import CountLine

KEY = "s3cret-view-key"


def test_address_parsing_and_the_key_rule() -> None:
    assert ViewAddress.parse("8080") == ViewAddress("127.0.0.1", 8080)
    assert ViewAddress.parse("0.0.0.0:9000") == ViewAddress("0.0.0.0", 9000)
    assert ViewAddress.parse("[::1]:81") == ViewAddress("::1", 81)
    assert not ViewAddress.parse("8080").public and not ViewAddress.parse("[::1]:1").public
    assert ViewAddress.parse("0.0.0.0:8080").public
    with pytest.raises(ValueError, match="ADDRESS"):
        ViewAddress.parse("host:port")
    with pytest.raises(ValueError, match="key"):
        ViewSettings(ViewAddress.parse("0.0.0.0:8080"))
    with pytest.raises(ValueError, match="8 printable"):
        ViewSettings(ViewAddress.parse("8080"), key="short")
    ViewSettings(ViewAddress.parse("0.0.0.0:8080"), key=KEY)
    assert default_metrics_urls(["grpcs://a:8001", "b:9001", "a:8001"]) == (
        "http://a:8002/metrics",
        "http://b:8002/metrics",
    )


def test_ingest_refuses_a_public_view_without_a_key(tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"")
    result = CliRunner().invoke(
        app, ["ingest", str(clip), "--view", "0.0.0.0:8080"], env={"CAMDET_VIEW_KEY": ""}
    )
    assert result.exit_code == 2, result.output
    assert "other machines can reach this address" in result.output


def _frame(camera: str, index: int, image: np.ndarray) -> CapturedFrame:
    now = time.monotonic()
    return CapturedFrame(camera, index, 0, index, None, time.time(), now, None, image)


def _result(camera: str, index: int, image: np.ndarray) -> Result:
    detections = [Detection((100.0, 100.0, 500.0, 400.0), 0.9, 0, "box", track_id=7)]
    return Result(_frame(camera, index, image), detections, 0.01, "s")


def test_sink_draws_only_watched_cameras_at_a_capped_rate_and_width() -> None:
    image = np.full((720, 1280, 3), 90, np.uint8)
    sink = ViewSink(fps=5.0, max_width=640, count_line=CountLine(640, 0, 640, 720))
    sink.counts = lambda: {"a": {"in": 3, "out": 1}}
    for index in range(50):
        sink.write(_result("a", index, image))
    assert sink.rendered == 0 and sink.picture("a") is None  # nobody watches: nothing drawn
    sink.watch("a")
    start = time.monotonic()
    index = 50
    while time.monotonic() - start < 1.0:
        sink.write(_result("a", index, image))
        sink.write(_result("b", index, image))
        index += 1
        time.sleep(0.01)
    time.sleep(0.2)
    assert 3 <= sink.rendered <= 7, sink.rendered  # ~5 per second, of ~90 frames
    assert sink.picture("b") is None
    picture = sink.picture("a")
    decoded = cv2.imdecode(np.frombuffer(picture.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (360, 640, 3)
    bright = (decoded[:, 314:326] > 200).all(axis=2).any(axis=1)
    assert bright.mean() > 0.8  # the count line, scaled to x = 320
    assert np.abs(decoded[60:190, 48:53].astype(int) - 90).mean() > 30  # the box, scaled
    sink.unwatch("a")
    rendered = sink.rendered
    for _ in range(20):
        sink.write(_result("a", index, image))
        index += 1
    time.sleep(0.3)
    assert sink.rendered == rendered
    sink.close()


def test_render_keeps_narrow_frames_and_draws_labels() -> None:
    image = np.zeros((240, 320, 3), np.uint8)
    jpeg = render(image, [Detection((10, 10, 100, 100), 0.5, 1, "disc", 3)], 640)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (240, 320, 3) and decoded.max() > 100


def test_access_units_decode_to_their_own_frames_and_restart_at_a_keyframe(
    tmp_path: Path,
) -> None:
    clip = tmp_path / "c.mp4"
    write_clip(clip, 3, 30, 320, 240, fps=10, keyframe_interval=10)
    units = [f.video for f in AvSource(str(clip), {}, live=False).session()]
    pictures = [f.rgb() for f in AvSource(str(clip), {}, live=False, pass_video=False).session()]
    decoder = AccessUnitDecoder()
    out = {}
    for key, unit in enumerate(units):
        if key in (12, 13):  # a gap: decoding waits for the next keyframe (20)
            continue
        for index, frame in decoder.decode(unit, key):
            out[index] = frame.to_ndarray(format="rgb24")
    assert sorted(out) == [*range(12), *range(20, 30)]
    for index, image in out.items():
        assert np.abs(image.astype(int) - pictures[index]).mean() < 2.0, index


TRITON_TEXT = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="detector",version="1"} REQ
nv_inference_request_failure{model="detector",version="1"} 2
nv_inference_queue_duration_us{model="detector",version="1"} QUEUE
nv_inference_compute_input_duration_us{model="detector",version="1"} 0
nv_inference_compute_infer_duration_us{model="detector",version="1"} INFER
nv_inference_compute_output_duration_us{model="detector",version="1"} 0
nv_inference_pending_request_count{model="detector",version="1"} 3
nv_gpu_utilization{gpu_uuid="x"} 0.5
"""


def _metrics(requests: int, queue_us: int, infer_us: int) -> str:
    text = TRITON_TEXT.replace("REQ", str(requests)).replace("QUEUE", str(queue_us))
    return text.replace("INFER", str(infer_us))


def test_triton_counters_become_per_model_rates_and_times() -> None:
    assert parse_triton_metrics(_metrics(5, 10, 20))["detector"]["pending"] == 3
    rates = TritonRates()
    rates.update(_metrics(100, 1_000_000, 2_000_000), now=10.0)
    (row,) = rates.update(_metrics(150, 1_100_000, 2_500_000), now=12.0)
    assert row == {
        "model": "detector",
        "rps": 25.0,
        "queue_ms": 2.0,
        "compute_ms": 10.0,
        "failed": 2,
        "pending": 3,
        "requests": 150,
    }


async def _key_checks(view: View) -> None:
    url = await view.start()
    try:
        jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address host
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(url) as response:
                assert response.status == 401
            async with session.get(f"{url}api/state", headers={KEY_HEADER: "wrong-key!"}) as r:
                assert r.status == 401
            async with session.get(f"{url}api/state", headers={KEY_HEADER: KEY}) as r:
                assert r.status == 200 and (await r.json())["cameras"][0]["id"] == "a"
            async with session.get(f"{url}?key={KEY}", allow_redirects=False) as response:
                assert response.status == 302 and response.headers["Location"] == "/"
                assert response.cookies[KEY_COOKIE].value == KEY
            async with session.get(url) as response:  # the cookie now
                assert response.status == 200 and "camdet" in await response.text()
            async with session.ws_connect(f"{url}ws") as socket:
                assert (await socket.receive_json())["cameras"] == ["a"]
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(f"{url}ws", headers={"Origin": "http://evil.example"})
    finally:
        await view.close()


def test_every_request_needs_the_key_and_cross_origin_sockets_are_refused(
    tmp_path: Path,
) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"")
    sink = ViewSink()
    ingest = Ingest([CameraConfig("a", str(clip))], ["localhost:1"], [sink])
    settings = ViewSettings(ViewAddress("127.0.0.1", 0), key=KEY, metrics_urls=())
    asyncio.run(_key_checks(View(ingest, sink, settings)))
