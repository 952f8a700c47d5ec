"""The camdet command line against real servers: infer, serve (Ctrl-C), demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from camdet.cli.main import app
from camdet.scenes import CLASSES, render_frame
from camdet.serving.server import Ports
from tests.helpers.images import encode

pytestmark = pytest.mark.server


def test_help_explains_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "infer", "demo", "ingest", "bench", "scenes"):
        assert command in result.output


def test_infer_prints_json_detections_with_labels(server, tmp_path: Path) -> None:
    frame = render_frame(np.random.default_rng(4), 1280, 720)
    good = tmp_path / "frame.jpg"
    good.write_bytes(encode(frame.image))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(encode(frame.image)[:1000])
    result = CliRunner().invoke(app, ["infer", str(good), str(bad), "--url", server.grpc_url])
    assert result.exit_code == 1  # one file failed
    first, second = (json.loads(line) for line in result.output.strip().splitlines())
    assert first["image"] == str(good)
    assert len(first["detections"]) > 0
    for det in first["detections"]:
        assert det["label"] == CLASSES[det["class_id"]]
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
    assert "truncated JPEG" in second["error"]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_serve_prints_endpoints_and_stops_on_ctrl_c(repository: Path) -> None:
    ports = Ports.free()
    argv = [
        sys.executable,
        "-m",
        "camdet.cli.main",
        "serve",
        "--portable",
        "--repository",
        str(repository),
        "--http-port",
        str(ports.http),
        "--grpc-port",
        str(ports.grpc),
        "--metrics-port",
        str(ports.metrics),
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 180
        while not _ready(ports.http):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    # It says where it really listens: loopback unless --address exposes it.
    assert f"gRPC    127.0.0.1:{ports.grpc}" in output
    said = " ".join(output.split())  # rich may wrap the line
    assert f"model repository: {repository} (from --repository / CAMDET_MODEL_REPOSITORY)" in said
    assert "stopped." in output
    assert not _ready(ports.http)


@pytest.mark.slow
def test_demo_streams_cameras_and_checks_truth(repository: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "camdet.cli.main",
            "demo",
            "--cameras",
            "2",
            "--frames",
            "4",
            "--repository",
            str(repository),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cam0" in result.stdout and "cam1" in result.stdout
    assert "8 frames answered" in result.stdout
    assert "server stopped." in result.stdout


def test_backends_build_says_what_is_missing_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from camdet.cli.main import app

    result = CliRunner().invoke(app, ["backends", "build", "dali", "--source", str(tmp_path)])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: build_dali_backend: missing source checkout ")
    assert f"{tmp_path}/dali_backend" in line
