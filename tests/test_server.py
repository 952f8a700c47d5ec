"""End to end against a real portable tritonserver over gRPC: boxes, errors, thresholds."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from camdet.cli.demo import match
from camdet.contract import ENSEMBLE, detect, parse_result, requested_outputs
from camdet.scenes import render_frame
from camdet.serving.launch import ServerError, has_cuda_gpu
from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.serving.server import Ports, serve
from tests.helpers.images import bad_huffman_table, encode, with_claimed_size
from tests.helpers.triton import send_concurrently

pytestmark = pytest.mark.server

STEPS = ["preprocess", "detector", "postprocess"]


@pytest.fixture(scope="module")
def client(server) -> grpcclient.InferenceServerClient:
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


def frames(count: int, width: int, height: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [render_frame(rng, width, height) for _ in range(count)]


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1920, 1080), (720, 1280)])
def test_detections_match_ground_truth(client, width: int, height: int) -> None:
    truths = found = matched = 0
    for frame in frames(6, width, height, seed=width + 7):
        detections = [d for d in detect(client, encode(frame.image)) if d.score >= 0.5]
        ious = match(detections, frame)
        truths += len(frame.boxes)
        found += len(detections)
        matched += sum(iou >= 0.8 for iou in ious)
        for d in detections:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert truths > 10
    assert matched / truths >= 0.9, (matched, truths)
    assert matched / found >= 0.9, (matched, found)


def test_bad_frames_fail_alone_and_server_keeps_serving(client, server) -> None:
    valid = [encode(f.image) for f in frames(6, 1280, 720, seed=5)]
    bad = {
        "empty": b"",
        "corrupt": b"\xff\xd8" + b"\x12\x34" * 500 + b"\xff\xd9",
        "truncated": valid[0][: len(valid[0]) // 2],
        "gigantic": with_claimed_size(valid[1], 60000, 60000),
        "bad_huffman": bad_huffman_table(valid[2]),
        "not_an_image": b"hello camera" * 10,
    }
    payloads = [
        valid[0],
        bad["empty"],
        valid[1],
        bad["corrupt"],
        valid[2],
        bad["truncated"],
        valid[3],
        bad["gigantic"],
        valid[4],
        bad["bad_huffman"],
        valid[5],
        bad["not_an_image"],
    ]
    results = send_concurrently(client, payloads)
    errors = {}
    for data, (result, error) in zip(payloads, results, strict=True):
        if data in valid:
            assert error is None, error
            assert len(parse_result(result)) > 0
        else:
            assert result is None and error is not None
            errors[next(k for k, v in bad.items() if v == data)] = error.message()
    assert set(errors) == set(bad)
    assert "empty image" in errors["empty"]
    assert "corrupt JPEG: expected a marker at byte 2" in errors["corrupt"]
    assert "truncated JPEG: no end-of-image marker" in errors["truncated"]
    assert "image too large: header claims 60000x60000 pixels" in errors["gigantic"]
    assert "invalid image: corrupt JPEG: Huffman table at byte" in errors["bad_huffman"]
    assert "not a JPEG or PNG image" in errors["not_an_image"]
    # still serving, same answers as before
    assert server.is_running()
    again = send_concurrently(client, valid[:3])
    assert all(e is None for _, e in again)


def test_png_frames_are_served(client) -> None:
    frame = frames(1, 1280, 720, seed=11)[0]
    jpeg = detect(client, encode(frame.image, ".jpg", 95))
    png = detect(client, encode(frame.image, ".png"))
    assert len(png) == len(jpeg) > 0


def test_thresholds_per_request(client) -> None:
    data = encode(frames(1, 1280, 720, seed=21)[0].image)
    default = detect(client, data)
    loose = detect(client, data, {"confidence_threshold": 0.01})
    assert len(loose) >= len(default) > 1
    assert len(detect(client, data, {"max_detections": 1})) == 1
    assert all(d.score > 0.9 for d in detect(client, data, {"confidence_threshold": 0.9}))
    with pytest.raises(
        InferenceServerException, match=r"iou_threshold must be in \(0, 1\], got 1.5"
    ):
        detect(client, data, {"iou_threshold": 1.5})
    assert len(detect(client, data)) == len(default)


def test_request_with_two_frames_gets_padded_rows(client) -> None:
    one = encode(frames(1, 1280, 720, seed=31)[0].image)
    data = np.stack([np.frombuffer(one, np.uint8)] * 2)
    tensor = grpcclient.InferInput("encoded_image", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    result = client.infer(
        ENSEMBLE, [tensor], outputs=requested_outputs(), parameters={"max_detections": 3}
    )
    counts = result.as_numpy("num_detections").reshape(-1).tolist()
    assert counts == [3, 3]
    boxes = result.as_numpy("boxes")
    assert boxes.shape == (2, 3, 4)
    scores = result.as_numpy("scores")
    np.testing.assert_array_equal(scores[0], scores[1])
    assert sorted(map(tuple, boxes[0])) == sorted(map(tuple, boxes[1]))
    assert result.as_numpy("labels").shape == (2, 3)
    colors = result.as_numpy("colors")
    assert colors.shape == (2, 3, 3)
    np.testing.assert_array_equal(colors[0], colors[1])


def central_color(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """``[3]`` mean RGB in [0, 1] of the central half of a box (the server's definition)."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) / 4, (y2 - y1) / 4
    crop = image[round(y1 + dy) : round(y2 - dy), round(x1 + dx) : round(x2 - dx)]
    return crop.reshape(-1, 3).mean(axis=0) / 255


def test_each_detection_carries_its_objects_colour(client) -> None:
    """The tracker's appearance cue, read on the server from the letterboxed frame."""
    errors, colors = [], []
    for frame in frames(4, 1280, 720, seed=41):
        for d in detect(client, encode(frame.image)):
            if d.score >= 0.5:
                colors.append(d.color)
                errors.append(np.abs(np.array(d.color) - central_color(frame.image, d.box)).max())
    assert len(errors) > 10
    # JPEG, the letterbox's resize and 8 x 8 bilinear samples: within 0.05 (0.02 seen).
    assert np.median(errors) < 0.01 and max(errors) < 0.05, sorted(errors)
    # Objects of different colours: the cue tells them apart.
    assert np.ptp(np.array(colors), axis=0).min() > 0.3


def test_every_step_reports_its_devices_per_batch(client, server) -> None:
    before = server.step_batches()
    rng = np.random.default_rng(11)
    results = send_concurrently(client, [encode(render_frame(rng, 640, 480).image)] * 6)
    assert all(error is None for _, error in results)
    after = server.step_batches()
    grew = {key: n - before.get(key, 0) for key, n in after.items() if n > before.get(key, 0)}
    # The models besides validate: preprocess, detector and postprocess, or on a GPU the
    # one process that runs the three (detect_pipeline, validate's checks included).
    ensemble = client.get_model_config(ENSEMBLE).config.ensemble_scheduling
    served = [step.model_name for step in ensemble.step if step.model_name != "validate"]
    assert served == (["detect_pipeline"] if has_cuda_gpu() else STEPS), served
    # Frames are batched, so each step ran between 1 and 6 batches for the 6 frames.
    for model in served:
        batches = [n for (m, _, _), n in grew.items() if m == model]
        assert 1 <= sum(batches) <= 6, (model, grew)
    devices = {pair.split(":", 1)[1] for _, *sides in grew for s in sides for pair in s.split(",")}
    # On a CPU machine every step computes on the host; on a GPU machine the encoded frames
    # arrive on the host and preprocess hands GPU tensors on.
    assert devices == ({"cpu", "cuda:0"} if has_cuda_gpu() else {"cpu"}), grew
    # ... and how long each phase of execute() took (reading inputs, computing, answering).
    metrics = urllib.request.urlopen(f"http://localhost:{server.ports.metrics}/metrics").read()
    seconds = {
        (s.labels["model"], s.labels["phase"]): s.value
        for family in text_string_to_metric_families(metrics.decode())
        for s in family.samples
        if s.name == "camdet_step_seconds_total"
    }
    phases = (
        [("detect_pipeline", step) for step in STEPS]
        if served == ["detect_pipeline"]
        else [("preprocess", "pipeline"), ("detector", "inputs"), ("postprocess", "compute")]
    )
    for key in phases:
        assert seconds.get(key, 0) > 0, (key, seconds)


def test_portable_server_refuses_numpy_2(tmp_path, monkeypatch) -> None:
    # A numpy 2 first on the path, as a user who upgraded numpy would have it: the
    # server must refuse to start and name the cause, not serve 0xFF bytes.
    site = tmp_path / "site"
    (site / "numpy").mkdir(parents=True)
    (site / "numpy" / "__init__.py").write_text('__version__ = "2.1.3"\n')
    monkeypatch.syspath_prepend(str(site))
    expected = r"numpy 2\.1\.3 is installed, but the portable server needs numpy 1\.x"
    with (
        pytest.raises(ServerError, match=expected),
        serve(PRODUCTION_REPOSITORY, Ports.free(), portable=True, workdir=tmp_path / "w"),
    ):
        pytest.fail("the server started under numpy 2")


def test_cuda_pool_holds_256_cameras_of_frames_on_every_gpu() -> None:
    from camdet.serving.launch import cuda_pool_args

    args = cuda_pool_args(PRODUCTION_REPOSITORY, gpus=2)
    assert [a.split("=")[1].split(":")[0] for a in args] == ["0", "1"]
    frame = 3 * 640 * 640 * 2  # one preprocessed FP16 frame, bytes
    assert all(int(a.rsplit(":", 1)[1]) >= 256 * frame for a in args)
    assert cuda_pool_args(PRODUCTION_REPOSITORY, gpus=0) == []
