"""Request parameters and JPEG damage, checked without a server."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from camdet.steps.parameters import (
    IMAGE_PARAMETERS,
    RequestParameterError,
    check_request_parameters,
)
from camdet.steps.validate.jpeg_damage import find_damage
from tests.helpers.images import lose_interval, rst_jpeg
from tests.helpers.triton import BAD_PARAMETERS


@pytest.mark.parametrize(("params", "reason"), BAD_PARAMETERS, ids=lambda v: str(v)[:40])
def test_each_bad_parameter_is_refused_with_its_reason(params: dict, reason: str) -> None:
    with pytest.raises(RequestParameterError) as info:
        check_request_parameters(params, IMAGE_PARAMETERS)
    assert str(info.value) == reason


def test_detect_video_also_takes_a_codec_string() -> None:
    assert check_request_parameters({"codec": "hevc"}) == {"codec": "hevc"}
    with pytest.raises(RequestParameterError, match=r"^codec must be a string, got int 5$"):
        check_request_parameters({"codec": 5})
    with pytest.raises(RequestParameterError) as info:
        check_request_parameters({"kodec": "h264"})
    assert str(info.value) == (
        "unknown request parameter 'kodec' "
        "(known: codec, confidence_threshold, iou_threshold, max_detections)"
    )


def test_valid_parameters_come_back_typed() -> None:
    checked = check_request_parameters(
        {"confidence_threshold": 0, "iou_threshold": 1.0, "max_detections": 300.0, "codec": "h264"}
    )
    assert checked == {
        "confidence_threshold": 0,
        "iou_threshold": 1.0,
        "max_detections": 300,
        "codec": "h264",
    }
    assert isinstance(checked["max_detections"], int)
    assert check_request_parameters({}) == {}


def test_a_huge_value_is_not_repeated_whole() -> None:
    with pytest.raises(RequestParameterError) as info:
        check_request_parameters({"codec": ["x"] * 10_000})
    assert str(info.value).startswith("codec must be a string, got list ['x', 'x'")
    assert str(info.value).endswith("... (50000 chars)")


def test_intact_jpegs_show_no_damage() -> None:
    plain = cv2.imencode(".jpg", np.full((64, 96, 3), 90, np.uint8))[1].tobytes()
    assert find_damage(plain) is None
    assert find_damage(rst_jpeg()) is None
    gray = np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)
    gray_rst = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_RST_INTERVAL, 1])[1].tobytes()
    assert find_damage(gray_rst) is None


def test_damage_is_named() -> None:
    whole = rst_jpeg()
    intervals = math.ceil((640 // 16) * (480 // 16) / 4)  # 4:2:0 MCUs of 16x16, 4 per interval
    cut = whole[: len(whole) // 2] + b"\xff\xd9"
    found = find_damage(cut)
    assert found is not None and found.startswith("image data ends after ")
    assert found.endswith(f" of {intervals} restart intervals (frame cut short)")
    lost = lose_interval(whole)
    at = lost.index(b"\xff\xd5", lost.index(b"\xff\xda"))
    assert find_damage(lost) == (
        f"restart marker RST5 where RST2 was expected at byte {at} (image data lost)"
    )
    bad = bytearray(whole)
    bad[len(bad) // 2 : len(bad) // 2 + 2] = b"\xff\x12"
    assert find_damage(bytes(bad)) == (
        f"invalid marker 0xFF12 inside the image data at byte {len(bad) // 2}"
    )


def test_zero_sampling_factors_are_no_layout_not_a_crash() -> None:
    # Found by the memory fuzz (issue #12): one flipped bit made a component's sampling
    # factors 0 and the division by them failed validate's whole batch, valid frames too.
    jpeg = bytearray(rst_jpeg())
    sof = jpeg.index(b"\xff\xc0")
    components = jpeg[sof + 9]
    for i in range(components):
        jpeg[sof + 11 + 3 * i] = 0x00  # horizontal and vertical factors of 0
    assert find_damage(bytes(jpeg)) is None
