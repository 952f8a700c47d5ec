"""The 16:9 profile end to end: a 640x384 detector installed and served by the real server.

``CAMDET_INPUT_SIZE`` is read when a process imports camdet, so the export, the install
and the server run as processes with it set, as a user would run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from camdet.cli.demo import match
from camdet.contract import detect
from camdet.detector.model import DEMO_WEIGHTS
from camdet.scenes import encode_jpeg, render_frame
from camdet.serving.repository import read_config
from camdet.serving.server import Ports, serve

pytestmark = [pytest.mark.server, pytest.mark.slow]

SIZE = "640x384"


def run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "CAMDET_INPUT_SIZE": SIZE}
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_640x384_detector_is_installed_and_served(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "model_repository"
    shutil.copytree(repository, copy, ignore=shutil.ignore_patterns("*.plan", "*.plan.json"))
    onnx = tmp_path / "detector-640x384.onnx"
    weights = str(DEMO_WEIGHTS)
    run(["camdet.detector.export", weights, "--input-size", SIZE, "--out", str(onnx)], tmp_path)
    labels = copy / "postprocess" / "labels.txt"
    run(["camdet.cli.main", "model", "add", str(onnx), "--labels", str(labels)], tmp_path)
    assert list(read_config(copy / "detector" / "config.pbtxt").input[0].dims) == [3, 384, 640]

    monkeypatch.setenv("CAMDET_INPUT_SIZE", SIZE)  # the server's processes read it
    truths = matched = 0
    with (
        serve(copy, Ports.free(), portable=True, workdir=tmp_path / "w") as server,
        grpcclient.InferenceServerClient(server.grpc_url) as client,
    ):
        rng = np.random.default_rng(5)
        for _ in range(4):
            frame = render_frame(rng, 1920, 1080)
            found = [d for d in detect(client, encode_jpeg(frame.image)) if d.score >= 0.5]
            truths += len(frame.boxes)
            matched += sum(iou >= 0.8 for iou in match(found, frame))
    assert truths > 10
    assert matched >= 0.9 * truths, (matched, truths)
