"""The one-process ``*_pipeline`` models: same answers as the three step models chained.

On a GPU the portable server serves ``detect`` as ``detect_pipeline`` (``validate``'s
checks, preprocess, detector and postprocess in one process; ``CAMDET_PIPELINE_VALIDATE=0``:
``validate`` -> ``detect_pipeline``) and ``detect_video`` as ``detect_video_pipeline``
(camdet.serving.portable.add_pipelines).
Here the same arrangement runs on the CPU, in a real portable tritonserver, and every
answer is checked against the step models of the same server called one after another.
"""

from __future__ import annotations

import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from camdet.contract import ENSEMBLE, VIDEO_ENSEMBLE
from camdet.scenes import render_frame
from camdet.serving import portable
from camdet.serving.launch import driver_gpu_count, has_cuda_gpu, smallest_gpu_memory_gib
from camdet.serving.portable import (
    add_pipelines,
    generate_portable_repository,
    machine_pipeline_instances,
    pipeline_instances,
)
from camdet.serving.repository import (
    PRODUCTION_REPOSITORY,
    contract,
    ensemble_problems,
    read_repository,
)
from camdet.serving.server import Ports, serve
from tests.helpers.images import bad_huffman_table, encode, rst_jpeg
from tests.helpers.triton import BAD_PARAMETERS, send_concurrently
from tests.helpers.video import clip, send

DETECTIONS = ("boxes", "scores", "class_ids", "labels", "num_detections", "colors")


def steps(config) -> list[str]:
    return [s.model_name for s in config.ensemble_scheduling.step]


def test_pipelines_keep_the_ensembles_contracts(tmp_path: Path) -> None:
    production = read_repository(PRODUCTION_REPOSITORY)
    root = generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "r", pipelines=False)
    add_pipelines(root, {"detector"}, gpu=False, validate=True)
    configs = read_repository(root)
    assert steps(configs[ENSEMBLE]) == ["detect_pipeline"]
    assert steps(configs[VIDEO_ENSEMBLE]) == ["detect_video_pipeline"]  # no validate there
    for name in (ENSEMBLE, VIDEO_ENSEMBLE):
        assert ensemble_problems(configs, name) == []
        assert contract(configs[name]) == contract(production[name])
    # The step models stay, unchanged, for the benchmarks and tests that call them alone.
    plain = read_repository(generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "p"))
    for name in ("validate", "preprocess", "detector", "postprocess", "preprocess_video"):
        assert configs[name] == plain[name]
    pipeline = contract(configs["detect_pipeline"])
    assert pipeline["inputs"] == contract(configs["validate"])["inputs"]
    damaged = tuple(o for o in contract(configs["validate"])["outputs"] if o.name == "damaged")
    assert pipeline["outputs"] == contract(configs["postprocess"])["outputs"] + damaged
    assert configs["detect_pipeline"].parameters["validate_model"].string_value == "validate"


def test_validate_can_stay_its_own_step(tmp_path: Path) -> None:
    root = generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "r", pipelines=False)
    add_pipelines(root, {"detector"}, gpu=False, validate=False)
    configs = read_repository(root)
    assert steps(configs[ENSEMBLE]) == ["validate", "detect_pipeline"]
    assert ensemble_problems(configs, ENSEMBLE) == []
    assert contract(configs[ENSEMBLE]) == contract(read_repository(PRODUCTION_REPOSITORY)[ENSEMBLE])
    pipeline = contract(configs["detect_pipeline"])
    assert pipeline["inputs"] == contract(configs["preprocess"])["inputs"]
    assert pipeline["outputs"] == contract(configs["postprocess"])["outputs"]
    assert "validate_model" not in configs["detect_pipeline"].parameters


def test_pipelines_are_chosen_where_there_is_a_gpu(tmp_path: Path) -> None:
    gpu = read_repository(generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "g", True))
    cpu = read_repository(generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "c"))
    taken_in = portable.PIPELINE_VALIDATE  # True unless CAMDET_PIPELINE_VALIDATE=0
    assert steps(gpu[ENSEMBLE]) == ["validate"] * (not taken_in) + ["detect_pipeline"]
    assert [g.count for g in gpu["detect_pipeline"].instance_group] == [pipeline_instances(False)]
    video = [g.count for g in gpu["detect_video_pipeline"].instance_group]
    assert video == [pipeline_instances(True)]
    # The measured CUDA wait per pipeline unless CAMDET_CUDA_SCHEDULE says otherwise.
    chosen = portable.PIPELINE_CUDA_SCHEDULE
    for name, default in (("detect_pipeline", "blocking-sync"), ("detect_video_pipeline", "auto")):
        assert gpu[name].parameters["cuda_schedule"].string_value == (chosen or default)
    # The decode stage gathers what waits for it unless CAMDET_PIPELINE_GATHER=0.
    gather = "yes" if portable.PIPELINE_GATHER else "no"
    for name in ("detect_pipeline", "detect_video_pipeline"):
        assert gpu[name].parameters["gather"].string_value == gather
    assert steps(cpu[ENSEMBLE]) == ["validate", "preprocess", "detector", "postprocess"]
    assert "detect_pipeline" not in cpu


def test_gpu_pipelines_warm_up_with_a_whole_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hardware JPEG decoder's share of every later batch is set by the first one.
    monkeypatch.setattr(portable, "WARMUP_BATCH", "")
    gpu = read_repository(generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "g", True))
    cpu = read_repository(generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "c"))
    for name in ("preprocess", "detect_pipeline"):
        (warmup,) = gpu[name].model_warmup
        assert warmup.batch_size == gpu[name].max_batch_size == 64
    assert [w.batch_size for w in cpu["preprocess"].model_warmup] == [1]
    # The measurement variable puts the warm-up of before back.
    monkeypatch.setattr(portable, "WARMUP_BATCH", "1")
    before = read_repository(
        generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "b", True)
    )
    assert [w.batch_size for w in before["detect_pipeline"].model_warmup] == [1]


def test_video_measurement_variables_rewrite_preprocess_video_on_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The settings before session 16, for a side-by-side run; the video pipeline reads
    # preprocess_video's config, so they reach it too.
    monkeypatch.setattr(
        portable, "VIDEO_PARAMETERS", {"decode_threads": "4", "gil_switch_interval_ms": "5"}
    )
    gpu = read_repository(generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "g", True))
    monkeypatch.setattr(
        portable, "VIDEO_PARAMETERS", {"decode_threads": "", "gil_switch_interval_ms": ""}
    )
    plain = read_repository(
        generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "p", True)
    )
    keys = ("decode_threads", "gil_switch_interval_ms")
    assert [gpu["preprocess_video"].parameters[k].string_value for k in keys] == ["4", "5"]
    assert plain["preprocess_video"].parameters["decode_threads"].string_value == "16"
    assert "gil_switch_interval_ms" not in plain["preprocess_video"].parameters
    assert "decode_threads" not in gpu["preprocess"].parameters


def test_video_pipeline_instances_are_counted_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set apart: more video processes cost the card NVDEC sessions (perf/RESULTS.md, session 16).
    monkeypatch.setenv("CAMDET_PIPELINE_INSTANCES", "3")
    monkeypatch.setenv("CAMDET_VIDEO_PIPELINE_INSTANCES", "5")
    gpu = read_repository(generate_portable_repository(PRODUCTION_REPOSITORY, tmp_path / "g", True))
    counts = [
        [g.count for g in gpu[f"{n}_pipeline"].instance_group] for n in (ENSEMBLE, VIDEO_ENSEMBLE)
    ]
    assert counts == [[3], [5]]


def test_pipeline_instances_fit_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # An H100 host (16 cores, 80 GB): 6 JPEG pipelines, which served more than 4 there
    # (session 21), and 5 video ones, whose p99 at 70 % of the peak stayed under 100 ms
    # where 6's did not (session 22).
    assert machine_pipeline_instances(16, 79.6) == 6
    assert machine_pipeline_instances(16, 79.6, video=True) == 5
    assert machine_pipeline_instances(128, 139.8) == 6  # no more than measured to help
    assert machine_pipeline_instances(8, 79.6, video=True) == 4  # two cores an instance
    assert machine_pipeline_instances(8, 79.6) == 4  # two cores an instance
    assert machine_pipeline_instances(32, 44.4) == 3  # an L40S's 48 GB
    assert machine_pipeline_instances(16, 23.6) == 1  # a 24 GB card: one of each
    assert machine_pipeline_instances(2, None) == 1
    # The card's memory comes from the driver, wherever there is one.
    assert (smallest_gpu_memory_gib() is None) == (driver_gpu_count() == 0)
    # Without the variables, the server's machine decides.
    monkeypatch.delenv("CAMDET_PIPELINE_INSTANCES", raising=False)
    monkeypatch.delenv("CAMDET_VIDEO_PIPELINE_INSTANCES", raising=False)
    monkeypatch.setattr(portable, "smallest_gpu_memory_gib", lambda: 79.6)
    monkeypatch.setattr(portable.os, "cpu_count", lambda: 16)
    assert (pipeline_instances(False), pipeline_instances(True)) == (6, 5)
    monkeypatch.setenv("CAMDET_VIDEO_PIPELINE_INSTANCES", "4")
    assert (pipeline_instances(False), pipeline_instances(True)) == (6, 4)


@contextmanager
def pipelines_server(workdir: Path, validate_in_pipeline: bool):
    """A portable server with the one-process pipelines, ``validate`` taken in or not."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(portable, "PIPELINE_VALIDATE", validate_in_pipeline)
        with (
            serve(PRODUCTION_REPOSITORY, Ports.free(), True, workdir=workdir, pipelines=True) as s,
            grpcclient.InferenceServerClient(s.grpc_url) as c,
        ):
            yield s, c


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory):
    """This module's pipelines server, ``validate`` taken in or not, one at a time.

    Asking for the other arrangement stops the running one first: on a GPU a server that
    has served holds ~30 GB (4 + 4 pipeline instances, the steps, the MPS daemon), and two
    of them beside the session's GPU server did not fit an 80 GB H100 (perf/RESULTS.md,
    session 17).
    """
    running: dict[bool, tuple] = {}
    stack = ExitStack()

    def get(validate_in_pipeline: bool) -> tuple:
        nonlocal stack
        if validate_in_pipeline not in running:
            stack.close()
            running.clear()
            stack = ExitStack()
            workdir = tmp_path_factory.mktemp("validating" if validate_in_pipeline else "pipelines")
            running[validate_in_pipeline] = stack.enter_context(
                pipelines_server(workdir, validate_in_pipeline)
            )
        return running[validate_in_pipeline]

    try:
        yield get
    finally:
        stack.close()


@pytest.fixture
def client(pipelines):
    """A server whose ``detect`` calls ``validate``, then ``detect_pipeline``: frames the
    decoder refuses reach the pipeline, which must fail them alone."""
    return pipelines(False)[1]


def infer(client, model: str, tensors: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict:
    inputs = []
    for name, array in tensors.items():
        dtype = {np.uint8: "UINT8", np.float16: "FP16", np.int32: "INT32"}[array.dtype.type]
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(
        model, inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in outputs]
    )
    return {name: result.as_numpy(name) for name in outputs}


def chained(client, encoded: bytes) -> dict:
    """One frame through preprocess, detector and postprocess, called one by one."""
    frame = np.frombuffer(encoded, np.uint8)[None]
    pre = infer(
        client, "preprocess", {"encoded_image": frame}, ("preprocessed_image", "original_size")
    )
    return after_preprocess(client, pre["preprocessed_image"], pre["original_size"])


def after_preprocess(client, image: np.ndarray, size: np.ndarray) -> dict:
    raw = infer(client, "detector", {"images": image}, ("output0",))["output0"]
    post_inputs = {"raw_detections": raw, "original_size": size, "preprocessed_image": image}
    return infer(client, "postprocess", post_inputs, DETECTIONS)


# On the CPU both ways run the same kernels: equal up to float printing. On a GPU the
# detector's CUDA graph for the pipeline's batch size may pick other FP16 kernels than
# the step's batch of one: boxes within 1 px, scores and colours within 0.02.
TOLERANCE = {"boxes": 1.0, "scores": 0.02, "colors": 0.02} if has_cuda_gpu() else {}


def assert_same(got: dict, expected: dict) -> None:
    for name in DETECTIONS:
        if name in ("labels", "class_ids", "num_detections"):
            assert got[name].tolist() == expected[name].tolist(), name
        else:
            atol = TOLERANCE.get(name, 1e-4)
            np.testing.assert_allclose(got[name], expected[name], atol=atol, err_msg=name)


def frames(sizes: list[tuple[int, int]], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode(render_frame(rng, w, h).image) for w, h in sizes]


@pytest.mark.server
def test_detect_answers_as_the_steps_chained(client) -> None:
    payloads = frames([(1280, 720), (1920, 1080), (720, 1280), (640, 480)] * 2, seed=21)
    answers = send_concurrently(client, payloads, outputs=DETECTIONS)
    detected = 0
    for data, (result, error) in zip(payloads, answers, strict=True):
        assert error is None
        got = {name: result.as_numpy(name) for name in DETECTIONS}
        assert_same(got, chained(client, data))
        detected += int(got["num_detections"][0, 0])
    assert detected > 20  # frames with objects, found


@pytest.mark.server
def test_a_refused_frame_or_bad_threshold_fails_alone_in_a_pipeline_batch(client) -> None:
    good = frames([(1280, 720)] * 5, seed=22)
    refused = bad_huffman_table(good[0])  # the decoder refuses it (validate would too)
    frame = np.frombuffer(refused, np.uint8)[None]
    with pytest.raises(Exception) as step_error:
        infer(client, "preprocess", {"encoded_image": frame}, ("original_size",))
    payloads = [good[0], refused, good[1], good[2], good[3], good[4]]
    parameters = [None, None, None, {"iou_threshold": 0}, None, {"max_detections": 2}]
    answers = send_concurrently(
        client, payloads, parameters, model="detect_pipeline", outputs=DETECTIONS
    )
    assert answers[1][1] is not None
    assert answers[1][1].message() == step_error.value.message()
    assert (
        answers[3][1].message() == "bad request parameters: iou_threshold must be in (0, 1], got 0"
    )
    for index in (0, 2, 4):
        result, error = answers[index]
        assert error is None
        assert_same({n: result.as_numpy(n) for n in DETECTIONS}, chained(client, payloads[index]))
    assert int(answers[5][0].as_numpy("num_detections")[0, 0]) <= 2

    # A batch of nothing but refused frames: each answered with its error, and the next
    # batch is served (the stages hand nothing on, and nothing is left unanswered).
    answers = send_concurrently(client, [refused] * 3, model="detect_pipeline", outputs=DETECTIONS)
    assert [error.message() for _, error in answers] == [step_error.value.message()] * 3
    (result, error), *_ = send_concurrently(client, good[:1], outputs=DETECTIONS)
    assert error is None
    assert_same({n: result.as_numpy(n) for n in DETECTIONS}, chained(client, good[0]))


@pytest.mark.server
def test_detect_video_answers_as_the_steps_chained(client) -> None:
    _, units = clip(31, 12, 320, 240)
    seen = 0
    for i, unit in enumerate(units):
        first, last = i == 0, i == len(units) - 1
        result = send(
            client, 71, unit.data, unit.pts, first, last, outputs=(*DETECTIONS, "frame_pts")
        )
        pre = send(
            client, 72, unit.data, unit.pts, first, last, model="preprocess_video",
            outputs=("preprocessed_image", "original_size", "frame_pts"),
        )  # fmt: skip
        assert result.as_numpy("frame_pts").tolist() == pre.as_numpy("frame_pts").tolist()
        if int(pre.as_numpy("frame_pts")[0, 0]) < 0:
            assert int(result.as_numpy("num_detections")[0, 0]) == 0
            continue
        expected = after_preprocess(
            client, pre.as_numpy("preprocessed_image"), pre.as_numpy("original_size")
        )
        assert_same({n: result.as_numpy(n) for n in DETECTIONS}, expected)
        seen += int(expected["num_detections"][0, 0])
    assert seen > 10


@pytest.fixture
def validating(pipelines):
    """A server whose ``detect_pipeline`` runs ``validate``'s checks itself (the default)."""
    return pipelines(True)


def damaged_count(server) -> float:
    url = f"http://localhost:{server.ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=5.0) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("camdet_damaged"))


@pytest.mark.server
def test_a_pipeline_with_validate_taken_in_answers_as_validate_and_the_steps(validating) -> None:
    server, client = validating
    assert [
        s.model_name for s in client.get_model_config(ENSEMBLE).config.ensemble_scheduling.step
    ] == ["detect_pipeline"]
    good = frames([(1280, 720), (1920, 1080), (640, 480)], seed=23)
    cut = rst_jpeg()[: len(rst_jpeg()) // 2] + b"\xff\xd9"  # damaged, answered, flagged
    truncated = good[0][:200]  # refused by validate's checks
    (bad_params, reason), *_ = BAD_PARAMETERS
    payloads = [good[0], truncated, good[1], good[2], cut, good[0]]
    parameters = [None, None, None, None, None, bad_params]
    # What the step model `validate` says of the refused frame, on the same server.
    (_, refused), *_ = send_concurrently(
        client, [truncated], model="validate", outputs=("damaged",)
    )
    before = damaged_count(server)
    answers = send_concurrently(client, payloads, parameters, outputs=(*DETECTIONS, "damaged"))

    assert answers[1][1].message() == f"in ensemble '{ENSEMBLE}', {refused.message()}"
    assert refused.message().startswith("invalid image: ")
    assert answers[5][1].message() == f"in ensemble '{ENSEMBLE}', bad request parameters: {reason}"
    for index in (0, 2, 3):
        result, error = answers[index]
        assert error is None
        assert not result.as_numpy("damaged")[0, 0]
        assert_same({n: result.as_numpy(n) for n in DETECTIONS}, chained(client, payloads[index]))
    result, error = answers[4]
    assert error is None
    assert result.as_numpy("damaged")[0, 0]
    assert damaged_count(server) - before == 1
