"""Issue #25 items 7 and 6: how ``camdet ingest`` ends.

Item 7, Ctrl-C on a live RTSP camera stops cleanly, with frames in flight.

A real ``camdet ingest`` process streams a real RTSP camera (GStreamer's RTSP server on
loopback, an H.264 clip passed through to ``detect_video``) to the real portable
tritonserver in real-time mode. SIGINT arrives while the process's own metrics show frames
in flight. The process must exit 0 without a traceback, and its final totals must add up
(captured = answered + dropped + failed + in flight) with nothing failed: the stop itself
fails no frame. A second SIGINT (a second Ctrl-C; ``timeout -s INT`` signals the process
and then its whole group) cuts the drain short: frames on the wire stay in flight.

Item 6: an ingest in which no camera ever delivered a frame exits 1 and says, per camera,
why.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers.ingest import wait_until
from tests.helpers.rtsp import free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]

CLIP_SEEDS = (41, 42)  # the conftest's ``clips``, served as RTSP /cam0 and /cam1
COUNTERS = ("captured", "answered", "dropped", "failed", "in_flight")


def _metric(text: str, name: str, camera: str) -> float:
    found = re.search(rf'^camdet_client_{name}{{camera="{camera}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def _totals(stdout: str) -> dict[str, dict[str, int]]:
    """Counters per camera from the totals table (rows start with the camera id)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c for c in re.split(r"[\s│┃]+", line) if c]
        if cells and cells[0] in ("cam0", "cam1"):
            numbers = [c for c in cells[1:] if c.isdigit()]
            rows[cells[0]] = dict(zip(COUNTERS, map(int, numbers[-6:-1]), strict=True))
    return rows


@pytest.mark.parametrize(
    ("after_s", "signals"), [(4.0, 1), (15.0, 2)], ids=["once", "twice-at-clip-end"]
)
def test_sigint_on_live_rtsp_cameras_with_frames_in_flight_stops_cleanly(
    server, rtsp, after_s: float, signals: int
) -> None:
    metrics_port = free_port()
    command = [
        sys.executable, "-m", "camdet.client.cli",
        f"cam0={rtsp.url('/cam0')}", f"cam1={rtsp.url('/cam1')}",
        "--server", server.grpc_url, "--mode", "realtime",
        "--metrics-port", str(metrics_port), "--no-live",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    try:
        started = time.monotonic()

        def answered() -> bool:
            text = _metrics(metrics_port)
            return all(_metric(text, "frames_answered_total", c) >= 3 for c in ("cam0", "cam1"))

        wait_until(answered, 60, "answers from both cameras")
        time.sleep(max(0.0, after_s - (time.monotonic() - started)))
        # SIGINT the moment frames are in flight (a frame is in the decoder or on the wire).
        wait_until(
            lambda: any(
                _metric(_metrics(metrics_port), "frames_in_flight", c) >= 1
                for c in ("cam0", "cam1")
            ),
            30,
            "frames in flight",
            interval_s=0.01,
        )
        process.send_signal(signal.SIGINT)
        if signals == 2:  # a second Ctrl-C, or ``timeout -s INT``: it signals the group too
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    print(stdout, stderr[-3000:])  # shown on failure, or with -rP
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "CancelledError" not in stderr + stdout, stderr
    rows = _totals(stdout)
    assert set(rows) == {"cam0", "cam1"}, stdout
    for camera, row in rows.items():
        assert row["captured"] == (
            row["answered"] + row["dropped"] + row["failed"] + row["in_flight"]
        ), (camera, stdout)
        assert row["failed"] == 0, (camera, stdout, stderr)
        assert row["answered"] >= 3, (camera, stdout)
        if signals == 1:  # the drain had the time it needed
            assert row["in_flight"] == 0, (camera, stdout)


def test_ingest_that_captured_nothing_exits_1_naming_why_per_camera(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    down = f"rtsp://127.0.0.1:{free_port()}/cam"
    command = [
        sys.executable, "-m", "camdet.client.cli", f"door={down}", f"folder={empty}",
        "--server", f"127.0.0.1:{free_port()}", "--duration", "3", "--no-live",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
        check=False,
    )
    assert done.returncode == 1, done
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("camera door: never opened:") and "Connection refused" in line
        for line in lines
    ), done.stdout
    assert any(line.startswith("camera folder: never opened: no images") for line in lines), (
        done.stdout
    )
    assert "error: no camera delivered a frame" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
