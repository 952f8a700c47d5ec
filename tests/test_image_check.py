import struct

import numpy as np
import pytest
from conftest import encode

from camdet.image_check import ImageCheckError, check_encoded_image

LIMITS = {"max_pixels": 40_000_000, "max_side": 16384}


def frame(height: int = 72, width: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def with_claimed_size(jpeg: bytes, height: int, width: int) -> bytes:
    """Rewrite the SOF0 dimensions of a baseline JPEG."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def test_valid_jpeg_and_png() -> None:
    info = check_encoded_image(encode(frame(), ".jpg"), **LIMITS)
    assert (info.format, info.height, info.width) == ("jpeg", 72, 128)
    info = check_encoded_image(encode(frame(30, 40), ".png"), **LIMITS)
    assert (info.format, info.height, info.width) == ("png", 30, 40)


def test_trailing_padding_after_end_marker_is_accepted() -> None:
    assert check_encoded_image(encode(frame()) + b"\x00" * 16, **LIMITS).width == 128


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty image: the request carried 0 bytes"),
        (b"GIF89a" + b"\x00" * 100, "not a JPEG or PNG image (first bytes 47494638, 106 bytes)"),
        (encode(frame())[:600], "truncated JPEG: no end-of-image marker (600 bytes)"),
        (
            b"\xff\xd8" + b"\x12\x34" * 100 + b"\xff\xd9",
            "corrupt JPEG: expected a marker at byte 2",
        ),
        (encode(frame(), ".png")[:300], "truncated PNG: no IEND chunk (300 bytes)"),
    ],
)
def test_refusals_say_why(data: bytes, message: str) -> None:
    with pytest.raises(ImageCheckError) as info:
        check_encoded_image(data, **LIMITS)
    assert str(info.value) == message


def test_gigantic_header_refused_before_decoding() -> None:
    bomb = with_claimed_size(encode(frame()), 60000, 60000)
    with pytest.raises(ImageCheckError, match=r"image too large: header claims 60000x60000 pixels"):
        check_encoded_image(bomb, **LIMITS)
    # within the side limit but over the pixel budget
    with pytest.raises(ImageCheckError, match="image too large"):
        check_encoded_image(with_claimed_size(encode(frame()), 16000, 16000), **LIMITS)


def test_zero_size_header_refused() -> None:
    with pytest.raises(ImageCheckError, match="corrupt jpeg header: size 0x0"):
        check_encoded_image(with_claimed_size(encode(frame()), 0, 0), **LIMITS)
