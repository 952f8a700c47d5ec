"""camdet.perf: perf_analyzer input data, the bench and its baselines, the locust cameras."""

from __future__ import annotations

import base64
import copy
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from camdet.perf.bench import (
    BenchConfig,
    Tuning,
    VideoClip,
    run_bench,
    side_by_side_ratios,
    tuned_repository,
)
from camdet.perf.frames import EncodedFrame, synthetic_frames
from camdet.perf.input_data import (
    INPUT_DATA_SCHEMA,
    SCHEMA_FILE,
    contract_problems,
    read_encoded_frames,
    schema_problems,
    write_input_data,
)
from camdet.perf.load import LoadPoint, PointResult, ServerProbe, Window, run_point
from camdet.perf.pipelines import (
    BareLoop,
    DaliPreprocess,
    EnsembleClient,
    NaiveClient,
    letterbox_frame,
)
from tritonclient.grpc import model_config_pb2 as mc

from camdet.runtime.runners import make_runner
from camdet.serving.repository import (
    contract,
    ensemble_problems,
    read_config,
    read_repository,
    write_config,
)
from camdet.serving.server import Ports, serve
from tests.helpers.detections import assert_same_detections
from tests.helpers.video import clip

PERF = Path(__file__).resolve().parent.parent / "perf"
STEP_MODELS = ("detect", "validate", "preprocess", "detector", "postprocess")


@pytest.fixture(scope="module")
def frames() -> list[EncodedFrame]:
    """Real encoded frames: one 720p and one 1080p synthetic scene, twice."""
    return synthetic_frames(4, seed=11)


@pytest.fixture(scope="module")
def onnx(repository: Path) -> Path:
    path = repository / "detector" / "1" / "model.onnx"
    if not path.exists():
        pytest.fail(f"no detector at {path}: export it or set CAMDET_MODEL_REPOSITORY")
    return path


@pytest.fixture(scope="module")
def input_data(
    frames: list[EncodedFrame], repository: Path, onnx: Path, tmp_path_factory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("input_data")
    runner = make_runner("onnxruntime", onnx)
    return write_input_data(out, frames, repository, runner, max_tensor_frames=2)


# ------------------------------------------------------------------------ input data


def test_input_data_is_written_for_the_ensemble_and_every_step(input_data, repository) -> None:
    assert set(input_data) == set(STEP_MODELS)
    assert (input_data["detect"].parent / SCHEMA_FILE).exists()
    configs = read_repository(repository)
    for model, path in input_data.items():
        document = json.loads(path.read_text())
        assert schema_problems(document) == [], model
        assert contract_problems(document, configs[model]) == [], model


def test_ensemble_input_data_holds_the_jpeg_bytes(input_data, frames) -> None:
    document = json.loads(input_data["detect"].read_text())
    assert len(document["data"]) == len(frames)
    for entry, frame in zip(document["data"], frames, strict=True):
        tensor = entry["encoded_image"]
        assert tensor["shape"] == [len(frame.data)]
        assert base64.b64decode(tensor["content"]["b64"]) == frame.data
    assert read_encoded_frames(input_data["detect"]) == [f.data for f in frames]


def test_step_input_data_is_the_reference_of_each_step(input_data, frames, onnx) -> None:
    detector = json.loads(input_data["detector"].read_text())["data"]
    post = json.loads(input_data["postprocess"].read_text())["data"]
    assert len(detector) == len(post) == 2
    image, size = letterbox_frame(frames[0].data)
    images = detector[0]["images"]
    assert images["shape"] == [3, 640, 640]
    decoded = np.frombuffer(base64.b64decode(images["content"]["b64"]), dtype="<f2")
    np.testing.assert_array_equal(decoded.reshape(3, 640, 640), image)
    raw = post[0]["raw_detections"]
    expected = np.asarray(make_runner("onnxruntime", onnx)(image[None]))[0]
    assert raw["shape"] == list(expected.shape)
    got = np.frombuffer(base64.b64decode(raw["content"]["b64"]), dtype="<f2")
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-3, atol=1e-2)
    original = np.frombuffer(base64.b64decode(post[0]["original_size"]["content"]["b64"]), "<i4")
    assert original.tolist() == [frames[0].height, frames[0].width] == list(size)
    # postprocess reads the boxes' colours from the same letterboxed frame.
    frame = post[0]["preprocessed_image"]
    assert frame == images


def test_postprocess_input_data_from_the_torch_runner(
    frames, repository, onnx, input_data, tmp_path
) -> None:
    """The torch runner answers with a (CUDA, on a GPU) tensor; the written detections
    are ONNX Runtime's within FP16 rounding."""
    written = write_input_data(
        tmp_path, frames[:1], repository, make_runner("torch", onnx), max_tensor_frames=1
    )

    def raw(path: Path) -> np.ndarray:
        content = json.loads(path.read_text())["data"][0]["raw_detections"]["content"]["b64"]
        return np.frombuffer(base64.b64decode(content), dtype="<f2").astype(np.float32)

    expected = raw(input_data["postprocess"])
    np.testing.assert_allclose(raw(written["postprocess"]), expected, rtol=1e-2, atol=0.1)


def test_torch_runner_computes_what_onnxruntime_computes(frames, onnx) -> None:
    images = np.stack([letterbox_frame(f.data)[0] for f in frames[:3]])
    expected = make_runner("onnxruntime", onnx)(images)
    got = make_runner("torch", onnx)(images).float().cpu().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-2, rtol=1e-3)


DOCUMENTED_EXAMPLES = [
    {"data": [{"INPUT0": [1, 1, 1, 1], "INPUT1": [1, 1, 1, 1]}]},
    {"data": [{"INPUT0": {"b64": "YmFzZTY0IGRlY29kZXI="}}]},
    {"data": [[{"INPUT": ["1"]}, {"INPUT": ["2"]}], [{"INPUT": ["1"]}]]},
    {"data": [{"INPUT": {"content": [1, 1, 1, 1], "shape": [2, 2]}}, {"INPUT": {"content": [1]}}]},
    {"data": [{"INPUT": {"content": {"b64": "/9j/4AAQSkZ"}, "shape": [7964]}}]},
    {"data": [{"INPUT0": [1]}], "validation_data": [{"OUTPUT0": [0]}]},
]


@pytest.mark.parametrize("document", DOCUMENTED_EXAMPLES)
def test_schema_accepts_the_documented_examples(document) -> None:
    assert schema_problems(document) == []


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({}, "$"),
        ({"data": []}, "$.data"),
        ({"data": [{"INPUT": {"b64": "not base64!"}}]}, "$.data[0]"),
        ({"data": [{"INPUT": {"content": [1], "shape": [-1]}}]}, "$.data[0]"),
        ({"data": [{"INPUT": {"shape": [4]}}]}, "$.data[0]"),
        ({"data": [{"INPUT": {"content": [1], "dims": [1]}}]}, "$.data[0]"),
        ({"data": [{}]}, "$.data[0]"),
    ],
)
def test_schema_rejects_malformed_documents(document, where) -> None:
    problems = schema_problems(document)
    assert problems
    assert all(p.startswith(where) for p in problems), problems


def test_contract_problems_name_the_mismatch(input_data, repository) -> None:
    detector = read_config(repository / "detector" / "config.pbtxt")
    document = json.loads(input_data["detector"].read_text())
    broken = copy.deepcopy(document)
    broken["data"][0]["images"]["content"]["b64"] = base64.b64encode(b"\0" * 10).decode()
    broken["data"][1]["images"]["shape"] = [3, 320, 320]
    assert contract_problems(broken, detector) == [
        "data[0].images: 10 bytes for shape [3, 640, 640], expected 2457600",
        "data[1].images: shape [3, 320, 320] does not fit the config dims [3, 640, 640]",
    ]
    ensemble = json.loads(input_data["detect"].read_text())
    assert contract_problems(ensemble, detector)[0] == (
        "data[0] has ['encoded_image'], detector takes ['images']"
    )


def test_written_schema_validates_with_check_jsonschema(input_data) -> None:
    schema = input_data["detect"].parent / SCHEMA_FILE
    assert json.loads(schema.read_text()) == INPUT_DATA_SCHEMA
    binary = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(binary), "--schemafile", str(schema), str(input_data["detect"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------ bench logic


def test_tuned_repository_changes_scheduling_only(repository, tmp_path) -> None:
    tuning = Tuning(
        instances={"detector": 2},
        queue_delay_us={"detector": 5000},
        preferred_batch={"detector": [2, 4]},
        parameters={"detector": {"intra_op_threads": "1"}},
    )
    tuned = tuned_repository(repository, tmp_path / "tuned", tuning, gpu=False)
    before, after = read_repository(repository), read_repository(tuned)
    assert {m: contract(c) for m, c in before.items()} == {m: contract(c) for m, c in after.items()}
    assert ensemble_problems(after) == []
    detector = after["detector"]
    assert [(g.count, g.kind) for g in detector.instance_group] == [
        (2, mc.ModelInstanceGroup.KIND_CPU)
    ]
    assert detector.dynamic_batching.max_queue_delay_microseconds == 5000
    assert list(detector.dynamic_batching.preferred_batch_size) == [2, 4]
    assert detector.parameters["intra_op_threads"].string_value == "1"
    assert after["preprocess"] == before["preprocess"]
    with pytest.raises(KeyError, match="no model 'nope'"):
        tuned_repository(repository, tmp_path / "bad", Tuning(instances={"nope": 1}), gpu=False)


def _result(mode: str, cameras: int, fps: float, repeat: int, cpu: float = 0.0) -> PointResult:
    return PointResult(
        label=f"{mode} {cameras}",
        mode=mode,
        cameras=cameras,
        fps=None,
        processes=0,
        shm="none",
        completed=1,
        failed=0,
        dropped=0,
        duration_s=1.0,
        throughput_fps=fps,
        latency={},
        client_cpu_ms_per_frame=1.0 if mode != "bare" else cpu,
        server_cpu_ms_per_frame=cpu - 1.0 if mode != "bare" else float("nan"),
        repeat=repeat,
    )


def test_ratios_are_taken_within_each_repeat_against_the_best_bare() -> None:
    results = [
        _result("ours", 4, 9.0, 0, cpu=100.0),
        _result("naive", 4, 3.0, 0, cpu=150.0),
        _result("bare", 1, 8.0, 0, cpu=95.0),
        _result("bare", 4, 10.0, 0, cpu=90.0),
        _result("ours", 4, 4.0, 1, cpu=120.0),
        _result("naive", 4, 4.0, 1, cpu=180.0),
        _result("bare", 1, 5.0, 1, cpu=96.0),
    ]
    rows = {r["name"]: r for r in side_by_side_ratios(results)}
    assert rows["ours/bare"]["min"] == pytest.approx(0.8)
    assert rows["ours/bare"]["max"] == pytest.approx(0.9)
    assert rows["ours/bare"]["median"] == pytest.approx(0.85)
    assert rows["ours/naive"]["median"] == pytest.approx(2.0)
    assert rows["ours/naive"]["repeats"] == 2
    # CPU time per frame: the other pipeline's over ours (lowest bare CPU per repeat).
    assert rows["ours/bare cpu"]["min"] == pytest.approx(0.8)
    assert rows["ours/bare cpu"]["max"] == pytest.approx(0.9)
    assert rows["ours/naive cpu"]["median"] == pytest.approx(1.5)


def test_command_line_fills_every_setting(tmp_path) -> None:
    import typer.main
    from camdet.perf.bench import config_from_options
    from camdet.perf.cli import bench_app

    argv = [
        "--url", "host:9001", "--out", str(tmp_path), "--input-data", "d.json",
        "--sizes", "640x480", "--modes", "ours,bare", "--cameras", "1,3",
        "--rate", "4x2.5", "--rate", "8x1", "--duration", "4", "--warmup", "1",
        "--processes", "2", "--shm", "none,system", "--bare-batch", "2",
        "--bare-preprocess", "opencv,dali", "--bare-dali-device", "0",
        "--runner-threads", "1", "--repeats", "3", "--ratio-cameras", "3",
        "--server-mode", "portable", "--instances", "detector=2",
        "--queue-delay-us", "detector=900", "--preferred-batch", "detector=2,4",
        "--param", "detector.intra_op_threads=1", "--param", "preprocess.num_threads=1",
        "--server-env", "OMP_NUM_THREADS=1", "--torch-threads", "1",
        "--detector-onnx", "x.onnx", "--no-plot", "--video-size", "1280x720",
        "--video-frames", "90", "--gop", "15", "--codec", "hevc", "--segment-batch", "4,16",
        "--no-warmup-run",
    ]  # fmt: skip
    # The real command line parses them (no bench runs): its options, by parameter name.
    context = typer.main.get_command(bench_app).make_context("camdet bench", argv)
    options = {**context.params, "server_mode": context.params["server_mode"].value}
    config = config_from_options(options)
    assert (config.url, config.out_dir, config.input_data) == (
        "host:9001",
        tmp_path,
        Path("d.json"),
    )
    assert config.sizes == ((640, 480),) and config.modes == ("ours", "bare")
    assert config.cameras == (1, 3) and config.rates == ((4, 2.5), (8, 1.0))
    assert config.window == Window(warmup_s=1.0, duration_s=4.0) and config.warmup_run is False
    assert (config.processes, config.shm, config.bare_batches) == (2, ("none", "system"), (2,))
    assert config.bare_preprocess == ("opencv", "dali") and config.bare_dali_device == 0
    assert (config.runner_threads, config.repeats, config.ratio_cameras) == (1, 3, 3)
    assert config.server_mode == "portable" and config.torch_threads == 1
    assert config.server_env == {"OMP_NUM_THREADS": "1"} and config.plot is False
    assert config.tuning == Tuning(
        instances={"detector": 2},
        queue_delay_us={"detector": 900},
        preferred_batch={"detector": [2, 4]},
        parameters={"detector": {"intra_op_threads": "1"}, "preprocess": {"num_threads": "1"}},
        detector_onnx=Path("x.onnx"),
    )
    assert config.video == VideoClip((1280, 720), 90, 15, "hevc", (4, 16))


def test_video_modes_refuse_input_data_and_partial_gops() -> None:
    from camdet.perf.bench import config_from_options

    with pytest.raises(ValueError, match="whole number of GOPs of 30"):
        VideoClip(frames=45)
    with pytest.raises(ValueError, match="codec must be h264 or hevc"):
        VideoClip(codec="vp9")
    options = {"modes": "video,ours", "input_data": Path("d.json")}
    with pytest.raises(ValueError, match="drop --input-data"):
        config_from_options(options)


def test_camdet_bench_is_a_typer_command_with_help_on_every_option() -> None:
    typer = pytest.importorskip("typer")
    from camdet.perf.cli import register
    from typer.testing import CliRunner

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    assert "Usage: root bench [OPTIONS]" in result.output
    command = typer.main.get_command(app).commands["bench"]
    options = [p for p in command.params if p.name != "help"]
    assert len(options) > 30
    assert [p.name for p in options if not p.help] == []
    server_mode = next(p for p in options if p.name == "server_mode")
    assert "portable" in server_mode.help
    result = CliRunner().invoke(app, ["bench", "--server-mode", "docker"])
    assert result.exit_code == 2
    assert "'auto', 'portable', 'container'" in result.output.replace("\n", "")
    result = CliRunner().invoke(app, ["bench", "--modes", "ours,fast"])
    assert result.exit_code == 2
    assert "unknown modes ['fast']" in result.output


def test_shared_memory_is_unregistered_once_the_server_releases_it() -> None:
    from camdet.perf.transport import unregister_when_released
    from tritonclient.utils import InferenceServerException

    calls = []

    def unregister(name: str) -> None:
        calls.append(name)
        if len(calls) < 3:
            raise InferenceServerException(f"Cannot unregister '{name}', it is currently in use.")

    unregister_when_released(unregister, "region")
    assert calls == ["region"] * 3

    def broken(name: str) -> None:
        raise InferenceServerException("Unable to find system shared memory region")

    with pytest.raises(InferenceServerException, match="Unable to find"):
        unregister_when_released(broken, "region")


# --------------------------------------------------------------------- against a server


@pytest.mark.server
def test_naive_and_bare_baselines_find_what_the_ensemble_finds(server, repository, onnx) -> None:
    frames = synthetic_frames(6, seed=5)
    encoded = [f.data for f in frames]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        ours = [EnsembleClient(client).detect(data) for data in encoded]
        naive = [NaiveClient(client).detect(data) for data in encoded]
    runner = make_runner("onnxruntime", onnx)
    bare = BareLoop(runner, batch_size=4).detect(encoded)
    dali = DaliPreprocess(repository / "preprocess" / "1" / "dali.py", batch_size=4)
    bare_dali = BareLoop(runner, 4, dali, "dali").detect(encoded)
    assert sum(len(d) for d in ours) >= 10
    for found in zip(ours, naive, bare, bare_dali, strict=True):
        for other in found[1:]:
            assert_same_detections(found[0], other, tolerance_px=2.0)


@pytest.mark.server
def test_bench_runs_every_mode_on_the_input_data_frames(server, repository, input_data, tmp_path):
    config = BenchConfig(
        url=server.grpc_url,
        repository=repository,
        out_dir=tmp_path,
        input_data=input_data["detect"],
        cameras=(1, 2),
        rates=((2, 2.0),),
        window=Window(warmup_s=0.5, duration_s=2.0),
        processes=0,
        bare_batches=(1, 2),
        bare_preprocess=("opencv", "dali"),
        torch_threads=1,
    )
    report = run_bench(config)
    assert report.config["input_data"] == str(input_data["detect"])
    assert report.config["frame_count"] == 4
    labels = [r.label for r in report.results]
    assert labels == [
        "ours 1 cam", "ours 2 cam", "ours 2 cam @ 2 fps",
        "naive 1 cam", "naive 2 cam", "naive 2 cam @ 2 fps",
        "bare opencv batch 1", "bare opencv batch 2", "bare dali batch 1", "bare dali batch 2",
    ]  # fmt: skip
    for result in report.results:
        assert result.completed > 0 and result.failed == 0, result
        assert result.latency["p50_ms"] <= result.latency["p99_ms"]
    ours = report.results[0]
    assert set(ours.model_stats) == set(STEP_MODELS)
    # Server statistics are sampled at the window edges, answers counted on arrival.
    assert ours.model_stats["detect"]["requests"] == pytest.approx(ours.completed, abs=2)
    assert set(report.results[3].model_stats) == {"detector"}
    assert {(r["name"], r["cameras"]) for r in report.ratios} == {
        ("ours/bare", 1), ("ours/bare", 2), ("ours/naive", 1), ("ours/naive", 2),
    }  # fmt: skip
    # Before repeat 0, every mode ran once unmeasured (issue 25): none of it in the results.
    assert [p["label"] for p in report.warmup["points"]] == [
        "ours 2 cam", "naive 2 cam",
        "bare opencv batch 1", "bare opencv batch 2", "bare dali batch 1", "bare dali batch 2",
    ]  # fmt: skip
    assert all(p["frames"] > 0 for p in report.warmup["points"])

    from camdet.perf.bench import write_report

    text = write_report(report, tmp_path)
    assert "ours/bare" in text and "compute_infer ms" in text
    assert text.startswith("warm-up run before repeat 0, not measured")
    with (tmp_path / "bench.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == labels
    assert "detect.queue_ms" in rows[0]
    assert json.loads((tmp_path / "bench.json").read_text())["ratios"] == report.ratios
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.server
def test_video_client_gets_each_access_units_frame_with_its_objects(server) -> None:
    from camdet.client.sequence import sequence_id
    from camdet.perf.pipelines import VideoClient

    from camdet.scenes.video import scene_clip

    images, units = scene_clip(5, 12, 640, 384, gop=6)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        video = VideoClient(client, sequence_id(f"test-video-client-{time.time_ns()}"))
        found = [video.detect(unit.data) for unit in units]
        video.close()
        # Ended: the same id starts a new sequence only with a keyframe again.
        again = VideoClient(client, video.correlation_id)
        assert again.detect(units[0].data) is not None
        again.close()
    assert all(f is not None for f in found)  # B-frame-free: every unit answers its frame
    from torchvision.ops import box_iou

    truths = matched = confident = 0
    for detections, image in zip(found, images, strict=True):
        boxes = torch.from_numpy(detections.boxes[detections.scores >= 0.5])
        iou = box_iou(torch.from_numpy(image.boxes), boxes)
        truths, confident = truths + len(image.boxes), confident + len(boxes)
        matched += int((iou.max(dim=1).values >= 0.5).sum()) if len(boxes) else 0
    assert matched >= 0.9 * truths and matched >= 0.9 * confident, (matched, truths, confident)


@pytest.fixture(scope="module")
def one_camera_server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """The production repository served with one video camera per ``preprocess_video``."""
    root = tmp_path_factory.mktemp("one_camera")
    repo = root / "repository"
    shutil.copytree(repository, repo)
    config = read_config(repo / "preprocess_video/config.pbtxt")
    config.parameters["max_cameras"].string_value = "1"
    write_config(config, repo / "preprocess_video/config.pbtxt")
    with serve(repo, Ports.free(), portable=True, workdir=root / "work") as running:
        yield running


@pytest.mark.server
def test_a_camera_refused_before_the_window_fails_alone_and_is_counted(one_camera_server) -> None:
    # As a card out of NVDEC decoders refuses the cameras beyond its limit (session 12):
    # the point still measures the cameras that were served, and counts the refused one's.
    _, units = clip(62, 12, 320, 240, gop=6)
    point = LoadPoint("video", cameras=2, processes=0)
    result = run_point(one_camera_server.grpc_url, [u.data for u in units], point, Window(0.5, 2.0))
    assert result.completed > 0  # the first camera's frames
    assert result.failed > 0  # every frame of the second, in the window
    assert any(
        e.startswith("before the window: ") and e.endswith("exceed max_cameras=1")
        for e in result.errors
    ), result.errors
    assert any(not e.startswith("before") and "max_cameras=1" in e for e in result.errors)


@pytest.mark.server
def test_bench_video_mode_runs_beside_the_clips_jpegs(server, repository, tmp_path) -> None:
    config = BenchConfig(
        url=server.grpc_url,
        repository=repository,
        out_dir=tmp_path,
        modes=("video", "ours", "segment"),
        cameras=(1, 2),
        rates=((2, 3.0),),
        window=Window(warmup_s=0.5, duration_s=2.0),
        processes=0,
        video=VideoClip(size=(640, 384), frames=12, gop=6),
    )
    report = run_bench(config)
    labels = [r.label for r in report.results]
    assert labels == [
        "video 1 cam", "video 2 cam", "video 2 cam @ 3 fps",
        "ours 1 cam", "ours 2 cam", "ours 2 cam @ 3 fps",
    ]  # fmt: skip
    for result in report.results:
        assert result.completed > 0 and result.failed == 0 and result.held == 0, result
    video = report.results[1]
    assert {"detect_video", "preprocess_video"} <= set(video.model_stats)
    assert video.model_stats["detect_video"]["requests"] == pytest.approx(video.completed, abs=2)
    # The JPEG path sent the clip's own frames, as perf_analyzer input data.
    assert report.config["frame_count"] == 12
    # No "video/ours cpu": the CPU time of a server the bench did not start is unknown.
    assert {(r["name"], r["cameras"]) for r in report.ratios} == {
        ("video/ours", 1),
        ("video/ours", 2),
    }
    # DALI's CPU video decoder cannot decode H.264: the segment mode says so and is skipped.
    assert "GPU" in report.skipped["segment"]
    from camdet.perf.bench import write_report

    assert "segment: skipped: " in write_report(report, tmp_path, plot=False)


def test_cameras_start_at_their_own_frame_and_wrap_when_they_outnumber_frames() -> None:
    assert [LoadPoint("ours", cameras=5).first_frame(c, 2) for c in range(5)] == [0, 1, 0, 1, 0]
    assert LoadPoint("video", cameras=5).first_frame(3, 2) == 0  # a stream starts at its keyframe


def test_video_cameras_keyframes_fall_evenly_over_the_gop_unless_in_step() -> None:
    # Camera c's loop starts after its lead-in, so its keyframes come (gop - lead-in) frame
    # slots after its clock starts: 8 cameras over a GOP of 4 give two in each slot.
    spread = LoadPoint("video", cameras=8, gop=4)
    slots = [(4 - spread.lead_in(c)) % 4 for c in range(8)]
    assert sorted(slots) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert spread.label == "video 8 cam"
    in_step = LoadPoint("video", cameras=8)
    assert {in_step.lead_in(c) for c in range(8)} == {0}
    assert in_step.label == "video 8 cam keyframes in step"
    assert LoadPoint("ours", cameras=8, gop=4).lead_in(7) == 0  # JPEG cameras have no GOP


@pytest.mark.server
@pytest.mark.parametrize("mode", ["ours", "naive"])
def test_cameras_in_several_processes_over_system_shared_memory(server, frames, mode) -> None:
    point = LoadPoint(mode, cameras=3, processes=2, shm="system", torch_threads=1)
    result = run_point(
        server.grpc_url,
        [f.data for f in frames[:2]],  # more cameras than frames, as at 256 cameras
        point,
        Window(warmup_s=0.5, duration_s=2.0),
        ServerProbe(server.grpc_url, server.process.pid),
    )
    assert result.completed > 0 and result.failed == 0, result.errors
    assert result.client_cpu_ms_per_frame > 0
    assert result.server_cpu_ms_per_frame > 0
    assert registered_regions(server.grpc_url, "system") == {}


def registered_regions(url: str, kind: str, within_s: float = 5.0) -> dict:
    """The server's registered shared-memory regions, once none is left (or after a while).

    The server may still hold a region for a moment after the client unregistered it,
    while the last request that read it is being released.
    """
    deadline = time.monotonic() + within_s
    with grpcclient.InferenceServerClient(url) as client:
        status = getattr(client, f"get_{kind}_shared_memory_status")
        while (regions := status(as_json=True)) and time.monotonic() < deadline:
            time.sleep(0.1)
    return regions


@pytest.mark.gpu
@pytest.mark.server
def test_cameras_over_cuda_shared_memory(server, frames) -> None:
    pytest.importorskip("cuda.bindings.runtime", reason="CUDA shared memory needs cuda-python")
    point = LoadPoint("ours", cameras=2, processes=1, shm="cuda")
    result = run_point(server.grpc_url, [f.data for f in frames], point, Window(0.5, 2.0))
    assert result.completed > 0 and result.failed == 0, result.errors
    assert registered_regions(server.grpc_url, "cuda") == {}


@pytest.mark.server
def test_locust_cameras_report_per_camera_without_failures(server, input_data, tmp_path) -> None:
    prefix, report = tmp_path / "locust", tmp_path / "cameras.json"
    command = [
        str(Path(sys.executable).parent / "locust"),
        "-f", str(PERF / "locustfile.py"),
        "--headless", "-u", "4", "-r", "4", "-t", "10s", "--stop-timeout", "10",
        "--host", f"grpc://{server.grpc_url}",
        "--camera-fps", "1,2",
        "--input-data", str(input_data["detect"]),
        "--csv", str(prefix),
        "--camera-report", str(report),
        "--only-summary",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with (tmp_path / "locust_stats.csv").open() as handle:
        stats = {row["Name"]: row for row in csv.DictReader(handle)}
    cameras = [f"camera-{i:03d}" for i in range(4)]
    assert set(cameras) < set(stats)
    for name in cameras:
        assert int(stats[name]["Failure Count"]) == 0
        assert int(stats[name]["Request Count"]) >= 5
        assert float(stats[name]["50%"]) > 0
    per_camera = json.loads(report.read_text())
    assert sorted(per_camera) == cameras
    assert [c["fps"] for c in per_camera.values()] == [1.0, 2.0, 1.0, 2.0]
    for camera in per_camera.values():
        assert camera["failed"] == 0 and camera["sent"] >= 5
        # Every frame slot of the camera's clock was either sent or dropped (late answers).
        slots = camera["sent"] + camera["dropped"]
        assert 0.7 * camera["fps"] * 10 <= slots <= 1.1 * camera["fps"] * 10 + 1


def test_decode_probe_times_the_production_pipeline_in_plain_processes() -> None:
    # The CPU pipeline here; on the GPU machine the same command compares with the served
    # decode (perf/gpu_session.sh diagnose).
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "camdet.perf.decode_probe",
            "--device",
            "-1",
            "--batches",
            "2",
            "--threads",
            "1",
            "--processes",
            "1,2",
            "--seconds",
            "0.5",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.splitlines()
    assert len(out) == 2, out
    for line, processes in zip(out, (1, 2), strict=True):
        fields = line.split()
        assert fields[:6] == ["batch", "2", "threads", "1", "processes", str(processes)]
        assert fields[6] == "auto"
        assert float(fields[7]) > 0 and fields[8] == "frames/s"
