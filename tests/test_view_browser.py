"""``camdet ingest --view`` in a real headless Chromium, against a real server and RTSP camera.

The command runs as users run it (a subprocess), on loopback: two RTSP cameras (a
GStreamer RTSP server on loopback, H.264 passing through undecoded, so the view decodes
it) and a looping clip, tracked with a count line, the server's metrics read from its
metrics port. The page must show a tile per camera whose picture keeps changing,
counters that move, Triton's per-model times, an RTSP camera that goes down shown as
down and then back, and a camera opened large on a click. A screenshot is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers.browser import headless_chromium, require_chromium
from tests.helpers.ingest import wait_until
from tests.helpers.rtsp import RtspServer, free_port, require_gst_rtsp

pytestmark = [pytest.mark.server, pytest.mark.slow]

CLIP_SEEDS = (31, 32)
CLIP_FRAMES = 100
SCREENSHOT_ENV = "CAMDET_VIEW_SCREENSHOT"  # also write the screenshot here (the README's)


def _state(url: str) -> dict:
    with urllib.request.urlopen(f"{url}api/state", timeout=5) as response:
        return json.loads(response.read())


def _tiles(chrome) -> dict[str, dict[str, str]]:
    return chrome.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('.tile')].map(t => "
        "[t.dataset.camera, {frames: t.dataset.frames, answered: t.dataset.answered || '0', "
        "state: t.dataset.state || '', src: t.querySelector('img').getAttribute('src') || ''}]))"
    )


def _start_ingest(server, rtsp: RtspServer, clip: Path, port: int, log: Path):
    argv = [sys.executable, "-m", "camdet.client.cli"]
    argv += [f"door={rtsp.url('/cam0')}", f"gate={rtsp.url('/cam1')}", f"yard={clip}"]
    argv += ["--server", server.grpc_url, "--loop", "--live" if False else "--no-live"]
    argv += ["--count-line", "320,0,320,360", "--view", f"127.0.0.1:{port}"]
    argv += ["--triton-metrics", f"http://127.0.0.1:{server.ports.metrics}/metrics"]
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("CAMDET_VIEW_KEY", None)
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _wait_for_page(url: str, process: subprocess.Popen, log: Path) -> None:
    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return bool(_state(url)["cameras"])
        except OSError:
            return False

    wait_until(ready, 60, "the view to answer")


def test_live_view_in_a_real_browser(server, clips, tmp_path: Path) -> None:
    require_gst_rtsp()
    require_chromium()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "ingest.log"
    with RtspServer({"/cam0": clips[0].path, "/cam1": clips[1].path}) as rtsp:
        process = _start_ingest(server, rtsp, clips[1].path, port, log)
        try:
            _wait_for_page(url, process, log)
            assert _state(url)["rendered"] == 0, "rendered with nobody watching"
            with headless_chromium() as chrome:
                chrome.get(url)
                _check_live_tiles(chrome)
                _check_triton_panel(chrome)
                _check_screenshot(chrome, tmp_path / "view.png")
                _check_down_and_back(chrome, rtsp)
                _check_large(chrome, url)
            wait_until(lambda: _state(url)["cameras"][0]["watched"] == 0, 10, "no watchers")
            rendered = _state(url)["rendered"]
            time.sleep(1.5)
            assert _state(url)["rendered"] == rendered, "rendered after the page closed"
        finally:
            process.terminate()
            process.wait(30)
    assert process.returncode == 0, log.read_text()
    assert "view at http://127.0.0.1:" in log.read_text()


def _check_live_tiles(chrome) -> None:
    wait_until(lambda: len(_tiles(chrome)) == 3, 20, "three tiles")
    assert int(chrome.execute_script("return document.body.dataset.cameras")) == 3
    wait_until(lambda: all(int(t["frames"]) >= 2 for t in _tiles(chrome).values()), 45, "pictures")
    first = _tiles(chrome)
    time.sleep(2.5)
    later = _tiles(chrome)
    for camera, tile in later.items():
        assert int(tile["frames"]) > int(first[camera]["frames"]), (camera, first, later)
        assert tile["src"] != first[camera]["src"], camera
        assert int(tile["answered"]) > int(first[camera]["answered"]), (camera, first, later)
        assert tile["state"] == "up", (camera, tile)
    frames_per_s = (int(later["door"]["frames"]) - int(first["door"]["frames"])) / 2.5
    assert frames_per_s <= 6.5, "the picture rate is capped at 5 fps"
    stats = chrome.find_element("css selector", ".tile[data-camera='door'] .stats").text
    assert "fps" in stats and "p99" in stats and "in " in stats and "out " in stats, stats
    # The tile swaps its picture ~5 times a second, and a picture still loading reads 0 x 0:
    # ask until one that has loaded answers.
    script = (
        "const i = document.querySelector('.tile img');"
        " return i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null"
    )
    sizes: list = []
    wait_until(lambda: sizes.append(chrome.execute_script(script)) or sizes[-1], 10, "a picture")
    assert sizes[-1] == [640, 360], sizes[-1]


def _check_triton_panel(chrome) -> None:
    def models() -> str:
        return chrome.find_element("css selector", "#models tbody").text

    wait_until(lambda: "detect" in models(), 15, "Triton's per-model rows")
    assert "ready" in chrome.find_element("id", "servers").text
    assert "metrics ok" in chrome.find_element("id", "servers").text


def _check_screenshot(chrome, path: Path) -> None:
    chrome.save_screenshot(str(path))
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 500 and image.shape[1] > 1000
    assert float(image.std()) > 20, "blank screenshot"
    tiles = chrome.find_elements("css selector", ".tile")
    assert len(tiles) == 3
    for tile in tiles:  # each tile's picture area in the screenshot shows a scene
        box = tile.find_element("css selector", ".frame").rect
        x, y, w, h = (int(box[k]) for k in ("x", "y", "width", "height"))
        assert y + h <= image.shape[0], "tile below the screenshot"
        crop = image[y : y + h, x : x + w]
        assert float(crop.std()) > 15 and len(np.unique(crop.reshape(-1, 3), axis=0)) > 50
    if target := os.environ.get(SCREENSHOT_ENV):
        Path(target).write_bytes(path.read_bytes())


def _check_down_and_back(chrome, rtsp: RtspServer) -> None:
    rtsp.stop()
    wait_until(
        lambda: (
            {c: t["state"] for c, t in _tiles(chrome).items()}
            == {"door": "down", "gate": "down", "yard": "up"}
        ),
        20,
        "the RTSP cameras shown down",
    )
    assert "DOWN" in chrome.find_element("css selector", ".tile[data-camera='door']").text
    assert "1/3 cameras up" in chrome.find_element("id", "summary").text
    frames = int(_tiles(chrome)["door"]["frames"])
    rtsp.start()
    wait_until(
        lambda: all(t["state"] == "up" for t in _tiles(chrome).values()), 40, "cameras back up"
    )
    wait_until(lambda: int(_tiles(chrome)["door"]["frames"]) > frames + 2, 20, "pictures again")


def _check_large(chrome, url: str) -> None:
    chrome.find_element("css selector", ".tile[data-camera='gate']").click()
    large = chrome.find_element("id", "large")
    assert large.is_displayed() and large.get_attribute("data-camera") == "gate"

    def only_gate_watched() -> bool:
        watched = {c["id"]: c["watched"] for c in _state(url)["cameras"]}
        return watched == {"door": 0, "gate": 1, "yard": 0}

    wait_until(only_gate_watched, 10, "only the large camera watched")
    source = large.find_element("css selector", "img").get_attribute("src")
    wait_until(
        lambda: large.find_element("css selector", "img").get_attribute("src") != source,
        10,
        "the large picture to change",
    )
    assert large.find_element("css selector", "img").size["width"] > 640
    chrome.find_element("id", "close").click()
    assert not large.is_displayed()
    wait_until(
        lambda: all(c["watched"] == 1 for c in _state(url)["cameras"]), 10, "all watched again"
    )
