"""The real perf_analyzer 2.51 drives ``detect_video`` in sequences, one stream per camera."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from camdet.perf import perf_analyzer
from camdet.perf.input_data import contract_problems, schema_problems
from camdet.perf.video_input_data import video_document

from camdet.serving.repository import read_config

pytestmark = [pytest.mark.server, pytest.mark.slow]

FRAMES = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cameras' 320x240 H.264 clips, written by the documented command."""
    out = tmp_path_factory.mktemp("video_data")
    args = ["--out", str(out), "--streams", "2", "--frames", str(FRAMES), "--size", "320x240"]
    done = subprocess.run(
        [sys.executable, "-m", "camdet.perf.video_input_data", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out / "detect_video.json"


def test_document_is_streams_of_access_units_that_fit_the_contract(repository: Path) -> None:
    document = video_document(2, 4, 160, 120)
    assert [len(stream) for stream in document["data"]] == [4, 4]
    assert schema_problems(document) == []
    config = read_config(repository / "detect_video" / "config.pbtxt")
    assert contract_problems(document, config, sequence=True) == []
    assert contract_problems(document, config, sequence=False) == [
        "data[0] is a stream; detect_video is not a sequence model",
        "data[1] is a stream; detect_video is not a sequence model",
    ]


def test_perf_analyzer_runs_camera_sequences_without_errors(server, data, tmp_path) -> None:
    csv = tmp_path / "detect_video.csv"
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        before = client.get_inference_statistics("preprocess_video").model_stats[0]
        done = perf_analyzer.run(
            [
                *("-m", "detect_video", "-i", "grpc", "-u", server.grpc_url),
                *("--input-data", str(data), "--sequence-length", str(FRAMES)),
                "--serial-sequences",
                *("--request-parameter", "codec:h264:string"),
                *("--concurrency-range", "2", "--measurement-interval", "3000"),
                *("--stability-percentage", "100", "--max-trials", "10", "-f", str(csv)),
            ],
            base=perf_analyzer.ensure_command(),
            timeout_s=240,
        )
        after = client.get_inference_statistics("preprocess_video").model_stats[0]
    assert done.returncode == 0, done.stdout[-2000:]
    (row,) = perf_analyzer.read_csv(csv)
    assert float(row["Inferences/Second"]) > 0
    assert after.inference_stats.fail.count == before.inference_stats.fail.count
    assert after.inference_stats.success.count > before.inference_stats.success.count
