"""Access-unit checks, the per-camera decoder pool and colours, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from camdet.scenes.video import encode_access_units
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch
from camdet.steps.video.annexb import (
    AccessUnitError,
    inspect_access_unit,
    nal_unit_spans,
    split_nal_units,
)
from camdet.steps.video.decoders import (
    DecoderUnavailableError,
    PyAVDecoder,
    VideoDecodeError,
    nvdec_error,
)
from camdet.steps.video.letterbox import VideoLetterbox
from camdet.steps.video.pool import (
    SEQUENCE_END,
    SEQUENCE_START,
    DecoderPool,
    PoolLimits,
    VideoRequestError,
)
from tests.helpers.video import as_array, clip, huge_keyframe, reference_rgb

LIMITS = PoolLimits(
    max_cameras=2, max_pixels=1920 * 1088, max_side=4096, max_queued_frames=8, idle_timeout_s=30
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pool(clock: FakeClock) -> DecoderPool:
    return DecoderPool(PyAVDecoder, LIMITS, clock)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_access_units_report_keyframes_and_coded_size(codec: str) -> None:
    _, units = clip(1, 12, codec=codec, gop=10)
    infos = [inspect_access_unit(u.data, codec) for u in units]
    assert (
        [i.keyframe for i in infos]
        == [u.keyframe for u in units]
        == [i % 10 == 0 for i in range(12)]
    )
    assert {i.size for i in infos if i.keyframe} == {(240, 320)}


def test_sps_size_of_1080p_is_the_coded_size() -> None:
    units = encode_access_units([np.zeros((1080, 1920, 3), np.uint8)])
    assert inspect_access_unit(units[0].data, "h264").size == (1088, 1920)
    assert inspect_access_unit(huge_keyframe(16384, 16384), "h264").size == (16384, 16384)


def test_nal_units_split_at_either_start_code_and_keep_their_own_zeros() -> None:
    # An AUD, a unit before a 3-byte start code, one before a 4-byte start code (whose
    # first zero is the start code's, not the unit's), and a last unit kept whole.
    data = b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x01\x67\x42\x00\x00\x01\x41\x9a\x00"
    data += b"\x00\x00\x01\x65\x88\x00"
    units = [b"\x09\xf0", b"\x67\x42", b"\x41\x9a", b"\x65\x88\x00"]
    assert split_nal_units(data) == units
    assert [data[start:stop] for start, stop in nal_unit_spans(data)] == units
    assert split_nal_units(b"\x00\x00\x01\x00\x00\x01\x65") == [b"\x65"]  # no empty unit


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x12\x34\x56" * 20, "no Annex-B start code at byte 0"),
        (b"\x00\x00\x00\x01\xe5\x00\x00", "NAL unit 0 has no valid header"),
        (b"\x00\x00\x00\x01\x67\x42", "SPS ends early"),
        (b"\x00\x00\x00\x01\x06\x05\x01", r"no coded slice among NAL unit types \[6\]"),
    ],
)
def test_malformed_access_units_are_named(data: bytes, message: str) -> None:
    with pytest.raises(AccessUnitError, match=message):
        inspect_access_unit(data, "h264")


def test_each_access_unit_gets_its_own_frame_back(pool: DecoderPool) -> None:
    _, units = clip(1, 12, gop=10)
    got = [
        pool.submit(
            5, SEQUENCE_START * (i == 0), "h264" if i == 0 else None, as_array(u.data), 100 + i
        )
        for i, u in enumerate(units)
    ]
    assert [f.pts for f in got] == [100 + i for i in range(12)]
    assert got[0].image.shape == (240, 320, 3) and got[0].image.dtype == np.uint8


def test_b_frames_lag_then_arrive_in_display_order_and_flush_drains(pool: DecoderPool) -> None:
    _, units = clip(2, 8, gop=8, bframes=2)
    assert [u.pts for u in units] != sorted(u.pts for u in units)
    answers = [
        pool.submit(1, SEQUENCE_START * (i == 0), "h264", as_array(u.data), u.pts)
        for i, u in enumerate(units)
    ]
    answers += [pool.submit(1, 0, None, as_array(b""), -1) for _ in range(4)]
    pts = [a.pts if a is not None else None for a in answers]
    assert pts[:2] == [None, None]
    assert [p for p in pts if p is not None] == list(range(8))


def test_stream_must_start_with_a_keyframe_then_decodes_from_it(pool: DecoderPool) -> None:
    _, units = clip(1, 12, gop=10)
    with pytest.raises(VideoRequestError) as error:
        pool.submit(1, SEQUENCE_START, "h264", as_array(units[1].data), 1)
    assert str(error.value) == (
        "invalid video: stream must start with a keyframe (h264 IDR with SPS/PPS)"
    )
    assert pool.submit(1, 0, None, as_array(units[10].data), 10).pts == 10


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_unit_fails_alone_and_decoding_resumes_at_next_keyframe(
    pool: DecoderPool, damage: str
) -> None:
    _, units = clip(1, 12, gop=10)
    for i in range(3):
        pool.submit(1, SEQUENCE_START * (i == 0), "h264", as_array(units[i].data), i)
    data = units[3].data
    bad = data[: len(data) // 2] if damage == "truncated" else b"\x17" * 300
    with pytest.raises(
        VideoRequestError,
        match=r"^invalid video: corrupt access unit \(.+\); "
        r"waiting for the next keyframe$",
    ):
        pool.submit(1, 0, None, as_array(bad), 3)
    with pytest.raises(VideoRequestError, match="waiting for the next keyframe after a corrupt"):
        pool.submit(1, 0, None, as_array(units[4].data), 4)
    assert pool.submit(1, 0, None, as_array(units[10].data), 10).pts == 10
    assert pool.submit(1, 0, None, as_array(units[11].data), 11).pts == 11


# PyNvVideoCodec 2.2.4's exception text on an H100 whose memory other servers held
# (perf/results/h100/session10/video-errors.txt): NVDEC creates the decoder at the first
# sequence header, inside Decode.
NVDEC_OUT_OF_MEMORY = (
    "HandleVideoSequence : \nError code : 2\nError Type : m_api.cuvidCreateDecoder(&m_hDecoder, "
    "&videoDecodeCreateInfo) returned error 2\nat /project/src/VideoCodecSDKUtils/helper_classes/"
    "NvCodec/NvDecoder/NvDecoder.cpp:430\n\n"
)


def test_nvdec_errors_become_one_line_and_out_of_memory_is_named() -> None:
    error = nvdec_error(Exception(NVDEC_OUT_OF_MEMORY))
    assert isinstance(error, DecoderUnavailableError)
    assert str(error) == (
        "NVDEC opened no decoder (cuvidCreateDecoder returned CUDA_ERROR_OUT_OF_MEMORY): "
        "too many decoders open on this GPU, or too little memory"
    )
    other = nvdec_error(Exception(NVDEC_OUT_OF_MEMORY.replace("2", "1")))
    assert type(other) is VideoDecodeError
    assert str(other) == (
        "HandleVideoSequence : Error code : 1 Error Type : m_api.cuvidCreateDecoder(&m_hDecoder, "
        "&videoDecodeCreateInfo) returned error 1"
    )


class OutOfMemoryFirst:
    """Opens PyAV decoders; the first ``times`` fail as NVDEC did on the card (a CPU cannot
    run out of NVDEC's memory), at their creation or at their first decode."""

    def __init__(self, at: str, times: int = 1) -> None:
        self.at, self.left = at, times

    def __call__(self, codec: str) -> PyAVDecoder:
        decoder = PyAVDecoder(codec)
        if self.left == 0:
            return decoder
        self.left -= 1
        if self.at == "open":
            raise nvdec_error(Exception(NVDEC_OUT_OF_MEMORY))

        def first_decode(access_unit: np.ndarray, pts: int) -> list:
            raise nvdec_error(Exception(NVDEC_OUT_OF_MEMORY))

        decoder.decode = first_decode
        return decoder


@pytest.mark.parametrize("at", ["open", "decode"])
def test_a_camera_without_a_decoder_fails_alone_and_retries_at_its_keyframe(
    clock: FakeClock, at: str
) -> None:
    pool = DecoderPool(OutOfMemoryFirst(at), LIMITS, clock)
    _, units = clip(1, 12, gop=10)
    with pytest.raises(
        VideoRequestError,
        match=r"^decoder unavailable: NVDEC opened no decoder \(cuvidCreateDecoder returned "
        r"CUDA_ERROR_OUT_OF_MEMORY\): .+; waiting for the next keyframe$",
    ):
        pool.submit(1, SEQUENCE_START, "h264", as_array(units[0].data), 0)
    with pytest.raises(VideoRequestError) as error:
        pool.submit(1, 0, None, as_array(units[1].data), 1)
    assert str(error.value) == (
        "decoder unavailable: the GPU had none for this camera; retried at the next keyframe "
        "(h264 IDR with SPS/PPS)"
    )
    assert pool.submit(2, SEQUENCE_START, "h264", as_array(units[0].data), 0).pts == 0
    assert pool.submit(1, 0, None, as_array(units[10].data), 10).pts == 10
    assert pool.submit(1, 0, None, as_array(units[11].data), 11).pts == 11


def test_a_camera_without_a_decoder_is_logged_once_until_it_decodes_again(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    pool = DecoderPool(OutOfMemoryFirst("open", times=2), LIMITS, clock)
    _, units = clip(1, 12, gop=5)
    with caplog.at_level("INFO", logger="camdet.steps.video.pool"):
        for i in (0, 5):  # two keyframes, each retries and fails
            with pytest.raises(
                VideoRequestError, match=r"^decoder unavailable: NVDEC opened no decoder"
            ):
                pool.submit(1, SEQUENCE_START * (i == 0), "h264", as_array(units[i].data), i)
        assert pool.submit(1, 0, None, as_array(units[10].data), 10).pts == 10
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("WARNING", "no decoder for a camera"),
        ("INFO", "a camera has its decoder again"),
    ]


def test_codec_limits_and_lifecycle(pool: DecoderPool, clock: FakeClock) -> None:
    _, units = clip(1, 2)
    key = as_array(units[0].data)
    with pytest.raises(VideoRequestError, match=r"^unsupported codec 'vp9' \(use h264 or hevc\)$"):
        pool.submit(1, SEQUENCE_START, "vp9", key, 0)
    with pytest.raises(VideoRequestError, match="needs the 'codec' parameter"):
        pool.submit(1, SEQUENCE_START, None, key, 0)
    with pytest.raises(
        VideoRequestError, match=r"^video too large: 16384x16384 exceeds max_pixels"
    ):
        pool.submit(1, SEQUENCE_START, "h264", as_array(huge_keyframe(16384, 16384)), 0)
    pool.submit(2, SEQUENCE_START, "h264", key, 0)
    with pytest.raises(
        VideoRequestError, match=r"^too many cameras: 3 open decoders exceed max_cameras=2$"
    ):
        pool.submit(3, SEQUENCE_START, "h264", key, 0)
    assert pool.submit(2, SEQUENCE_START, "h264", key, 0).pts == 0  # a restart is no new camera
    assert pool.submit(1, SEQUENCE_END, None, key, 1).pts == 1
    assert sorted(pool.cameras) == [2]
    clock.now = 31.0
    assert pool.expire() == [2] and len(pool) == 0
    with pytest.raises(VideoRequestError, match="camera 2 has no decoder"):
        pool.submit(2, 0, None, key, 0)


def test_pyav_colours_equal_the_bt601_reference() -> None:
    import av

    frames, units = clip(3, 2)
    context = av.CodecContext.create("h264", "r")
    decoder = PyAVDecoder("h264")
    packet = av.Packet(units[0].data)
    (yuv,) = context.decode(packet)
    (rgb,) = decoder.decode(as_array(units[0].data), 0)
    diff = np.abs(rgb.image.astype(np.float32) - reference_rgb(yuv))
    assert diff.mean() <= 1.0, diff.mean()  # within 1/255 on average
    assert abs((rgb.image - reference_rgb(yuv).astype(np.float32)).mean()) < 0.2  # no bias
    # ...and the decoded frame is the rendered one, up to compression.
    assert np.abs(rgb.image.astype(np.float32) - frames[0].image).mean() < 4.0


def test_video_letterbox_equals_the_jpeg_pipeline_on_the_same_pixels(repository: Path) -> None:
    frames, units = clip(3, 1)
    (decoded,) = PyAVDecoder("h264").decode(as_array(units[0].data), 0)
    video = VideoLetterbox(4, 1, None)
    images, sizes = video.run([decoded.image, frames[0].image[:200]])
    module = load_pipeline_module(repository / "preprocess/1/dali.py")
    pipe = build_pipeline(module, batch_size=4, num_threads=1, device_id=None)
    pngs = [
        cv2.imencode(".png", np.ascontiguousarray(i[..., ::-1]))[1].ravel()
        for i in (decoded.image, frames[0].image[:200])
    ]
    image, size = run_batch(pipe, pngs)
    np.testing.assert_array_equal(images, np.array(image.as_tensor()))
    np.testing.assert_array_equal(sizes, np.array(size.as_tensor()))
    assert sizes.tolist() == [[240, 320], [200, 320]]


def test_nvdec_limit_counts_decoders_held_at_once_across_processes() -> None:
    # The measurement behind session 12's 256-camera refusal, run with PyAV decoders: every
    # process decodes a keyframe per decoder and reports while it still holds them all.
    from camdet.perf.nvdec_limit import measure

    _, units = clip(3, 1)
    report = measure(units[0].data, processes=2, most=6, device_id=None, timeout_s=120)
    assert report["opened"] == report["asked"] == 6 and report["per_process"] == [3, 3]
    assert report["refused"] is None
    # A keyframe without its parameter sets opens no decoder: the first one reports why.
    broken = measure(units[0].data[:40], processes=1, most=2, device_id=None, timeout_s=120)
    assert broken["opened"] == 0 and broken["refused"]


def test_nvdec_limit_measures_beside_held_production_jpeg_pipelines(tmp_path) -> None:
    # One line per held pipeline count; each measurement runs while they are open.
    from camdet.perf.nvdec_limit import app
    from typer.testing import CliRunner

    out = tmp_path / "limit.json"
    options = "--cpu --processes 1 --most 2 --jpeg-pipelines 0,2 --jpeg-batch 3 --timeout-s 60"
    result = CliRunner().invoke(app, [*options.split(), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(r["jpeg_pipelines"], r["jpeg_batch"], r["opened"]) for r in lines] == [
        (0, 3, 2),
        (2, 3, 2),
    ]
    assert [r["jpeg_pipelines"] for r in json.loads(out.read_text())["results"]] == [0, 2]
