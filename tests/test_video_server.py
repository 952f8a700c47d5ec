"""``detect_video`` end to end against a real portable tritonserver over gRPC."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from camdet.cli.demo import match
from camdet.contract import VIDEO_ENSEMBLE, Detection
from camdet.scenes.video import EncodedUnit
from camdet.serving.launch import has_cuda_gpu
from camdet.serving.repository import read_config, write_config
from camdet.serving.server import Ports, serve
from tests.helpers.video import clip, huge_keyframe, reference_rgb, send, send_interleaved

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(server) -> grpcclient.InferenceServerClient:
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


def detections(result: grpcclient.InferResult) -> list[Detection]:
    count = int(result.as_numpy("num_detections").reshape(-1)[0])
    boxes, scores = result.as_numpy("boxes")[0], result.as_numpy("scores")[0]
    ids, labels = result.as_numpy("class_ids")[0], result.as_numpy("labels")[0]
    return [
        Detection(tuple(map(float, boxes[i])), float(scores[i]), int(ids[i]), labels[i].decode())
        for i in range(count)
    ]


def stream(client, camera: int, units: list[EncodedUnit], codec: str = "h264") -> list:
    last = len(units) - 1
    return [
        send(client, camera, u.data, u.pts, start=i == 0, end=i == last, codec=codec)
        for i, u in enumerate(units)
    ]


def recall(frames, results) -> tuple[int, int]:
    truths = matched = 0
    for result in results:
        frame = frames[int(result.as_numpy("frame_pts")[0, 0])]
        truths += len(frame.boxes)
        matched += len(match(detections(result), frame))
    return matched, truths


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_detections_per_frame_match_ground_truth(client, codec: str) -> None:
    frames, units = clip(21, 8, 640, 360, codec, gop=4)
    results = stream(client, 101, units, codec)
    assert [int(r.as_numpy("frame_pts")[0, 0]) for r in results] == list(range(8))
    matched, truths = recall(frames, results)
    assert truths >= 16 and matched / truths >= 0.95, (matched, truths)


def test_cameras_interleaved_are_batched_and_kept_apart(client) -> None:
    # The model that decodes: preprocess_video, or on a GPU the one-process pipeline.
    steps = client.get_model_config(VIDEO_ENSEMBLE).config.ensemble_scheduling.step
    decoder = steps[0].model_name
    before = client.get_inference_statistics(decoder).model_stats[0]
    # Twice as many cameras as instances: each camera keeps to one instance, so with as
    # many instances as cameras nothing would be batched (4 pipeline instances on a GPU).
    instances = sum(g.count for g in client.get_model_config(decoder).config.instance_group)
    cameras = max(4, 2 * instances)
    clips = {200 + c: clip(30 + c, 6, 320, 240, gop=3) for c in range(cameras)}
    results = send_interleaved(client, {c: units for c, (_, units) in clips.items()})
    matched = truths = 0
    for camera, answers in results.items():
        assert all(e is None for _, e in answers), answers
        got = [r for r, _ in answers]
        assert [int(r.as_numpy("frame_pts")[0, 0]) for r in got] == list(range(6))
        m, t = recall(clips[camera][0], got)
        matched, truths = matched + m, truths + t
    assert matched / truths >= 0.95, (matched, truths)
    after = client.get_inference_statistics(decoder).model_stats[0]
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == 6 * cameras and executions < inferences  # batched across cameras


def test_video_and_image_paths_agree_on_the_same_frame(client) -> None:
    _, units = clip(41, 3, 640, 360, gop=3)

    (decoded,) = av.CodecContext.create("h264", "r").decode(av.Packet(units[0].data))
    reference = [reference_rgb(decoded)]
    video = send(
        client,
        301,
        units[0].data,
        0,
        start=True,
        end=True,
        model="preprocess_video",
        outputs=("preprocessed_image", "original_size", "frame_pts"),
    )
    png = cv2.imencode(".png", np.ascontiguousarray(reference[0][..., ::-1]))[1].ravel()
    image_input = grpcclient.InferInput("encoded_image", [1, png.size], "UINT8")
    image_input.set_data_from_numpy(png.reshape(1, -1))
    image = client.infer("preprocess", [image_input])
    diff = np.abs(
        video.as_numpy("preprocessed_image").astype(np.float32)
        - image.as_numpy("preprocessed_image").astype(np.float32)
    )
    assert diff.mean() <= 1 / 255, diff.mean() * 255
    np.testing.assert_array_equal(video.as_numpy("original_size"), image.as_numpy("original_size"))
    jpeg = cv2.imencode(
        ".jpg", np.ascontiguousarray(reference[0][..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )[1].ravel()
    jpeg_input = grpcclient.InferInput("encoded_image", [1, jpeg.size], "UINT8")
    jpeg_input.set_data_from_numpy(jpeg.reshape(1, -1))
    from_jpeg = detections(client.infer("detect", [jpeg_input]))
    from_video = detections(send(client, 302, units[0].data, 0, start=True, end=True))
    assert len(from_video) == len(from_jpeg) > 0
    for a, b in zip(
        sorted(from_video, key=lambda d: d.box), sorted(from_jpeg, key=lambda d: d.box), strict=True
    ):
        assert a.class_id == b.class_id and np.abs(np.subtract(a.box, b.box)).max() < 3.0


def test_b_frames_lag_with_pad_responses_then_flush(client) -> None:
    frames, units = clip(51, 6, 320, 240, gop=6, bframes=2)
    results = [send(client, 401, u.data, u.pts, start=i == 0) for i, u in enumerate(units)]
    results += [send(client, 401, b"", -1, end=i == 3) for i in range(4)]
    pts = [int(r.as_numpy("frame_pts")[0, 0]) for r in results]
    assert pts[:2] == [-1, -1] and [p for p in pts if p >= 0] == list(range(6))
    for result in results[:2]:
        assert int(result.as_numpy("num_detections")[0, 0]) == 0
        assert np.isfinite(result.as_numpy("boxes")).all()
    matched, truths = recall(frames, [r for r, p in zip(results, pts, strict=True) if p >= 0])
    assert matched / truths >= 0.95


def error_text(call) -> str:
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value.message()


def test_bad_video_fails_its_own_frames_and_resyncs(client) -> None:
    _, good = clip(61, 8, 320, 240, gop=4)
    _, other = clip(62, 8, 320, 240, gop=4)
    broken = list(other)
    broken[2] = EncodedUnit(other[2].data[: len(other[2].data) // 2], 2, False)
    broken[3] = EncodedUnit(b"\x00\x00\x00\x01" + b"\xff" * 64, 3, False)
    late = other[1:]  # starts on a P-frame
    results = send_interleaved(client, {501: good, 502: broken, 503: late})
    assert all(e is None for _, e in results[501])
    assert [int(r.as_numpy("frame_pts")[0, 0]) for r, _ in results[501]] == list(range(8))
    errors = [e.message() if e else None for _, e in results[502]]
    assert errors[:2] == [None, None] and errors[4:] == [None] * 4
    if errors[2] is None:
        # NVDEC decodes a slice cut short and does not report it (README); PyAV refuses.
        assert has_cuda_gpu(), "a CPU decoder answered a truncated access unit"
    else:
        assert "invalid video: corrupt access unit (" in errors[2]
        assert errors[2].endswith("; waiting for the next keyframe")
    assert "invalid video: waiting for the next keyframe after a corrupt access unit" in errors[
        3
    ] or ("invalid video: corrupt access unit (NAL unit 0 has no valid header)" in errors[3])
    late_errors = [e.message() if e else None for _, e in results[503]]
    assert late_errors[0].endswith(
        "invalid video: stream must start with a keyframe (h264 IDR with SPS/PPS)"
    )
    assert late_errors[3:] == [None] * 4  # other[4] is the next keyframe


def test_bad_parameters_fail_their_own_video_frame_only(client) -> None:
    """Checked before decoding, next to other cameras' frames batched with them."""
    streams = {700 + c: clip(70 + c, 4, 320, 240, gop=2)[1] for c in range(3)}
    bad = {
        701: {1: {"max_detections": 1e30}},  # a P-frame: the next unit is a keyframe
        702: {0: {"codec": 5}, 2: {"confidence_treshold": 0.5}},
    }
    results = send_interleaved(client, streams, bad)
    errors = {c: [e.message() if e else None for _, e in answers] for c, answers in results.items()}
    assert errors[700] == [None] * 4
    assert errors[701][0] is None and errors[701][2:] == [None, None]
    assert errors[701][1].endswith(
        "bad request parameters: max_detections must be in [0, 30000], got 1e+30"
    )
    assert errors[702][0].endswith("bad request parameters: codec must be a string, got int 5")
    assert errors[702][2].endswith(
        "bad request parameters: unknown request parameter 'confidence_treshold' "
        "(known: codec, confidence_threshold, iou_threshold, max_detections)"
    )
    for camera, answers in results.items():
        for (_, error), message in zip(answers, errors[camera], strict=True):
            if message is not None:
                assert error.status() == "StatusCode.INVALID_ARGUMENT" and "\n" not in message


def test_refused_streams_have_clear_errors(client) -> None:
    _, units = clip(61, 1, 320, 240)
    text = error_text(lambda: send(client, 601, units[0].data, 0, start=True, codec="vp9"))
    assert text.endswith("unsupported codec 'vp9' (use h264 or hevc)")
    text = error_text(lambda: send(client, 602, huge_keyframe(16384, 16384), 0, start=True))
    assert "video too large: 16384x16384 exceeds max_pixels=16777216" in text
    assert (
        send(client, 602, units[0].data, 0, start=True, end=True).as_numpy("frame_pts")[0, 0] == 0
    )


@pytest.fixture(scope="module")
def small_server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server of preprocess_video alone with 2 cameras and a 2 s idle timeout."""
    root = tmp_path_factory.mktemp("video_limits")
    repo = root / "repository"
    shutil.copytree(repository / "preprocess_video", repo / "preprocess_video")
    config = read_config(repo / "preprocess_video/config.pbtxt")
    config.parameters["max_cameras"].string_value = "2"
    config.sequence_batching.max_sequence_idle_microseconds = 2_000_000
    write_config(config, repo / "preprocess_video/config.pbtxt")
    with serve(repo, Ports.free(), portable=True, workdir=root / "work") as running:
        yield running


def test_camera_limit_idle_expiry_and_restart(small_server) -> None:
    _, units = clip(61, 2, 320, 240)
    outputs = ("frame_pts",)

    def call(camera: int, index: int, start: bool = False):
        u = units[index]
        return send(client, camera, u.data, u.pts, start, model="preprocess_video", outputs=outputs)

    with grpcclient.InferenceServerClient(small_server.grpc_url) as client:
        call(1, 0, start=True)
        call(2, 0, start=True)
        text = error_text(lambda: call(3, 0, start=True))
        assert text.endswith("too many cameras: 3 open decoders exceed max_cameras=2")
        time.sleep(3.5)  # > 2 s idle: Triton ends the sequences, the model frees decoders
        assert error_text(lambda: call(1, 1))
        assert call(3, 0, start=True).as_numpy("frame_pts")[0, 0] == 0
        assert call(4, 0, start=True).as_numpy("frame_pts")[0, 0] == 0
        small_server.kill()
        small_server.start()
        text = error_text(lambda: call(3, 1))
        assert "START" in text or "start" in text
        assert call(3, 0, start=True).as_numpy("frame_pts")[0, 0] == 0
