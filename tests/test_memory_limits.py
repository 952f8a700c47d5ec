"""Frames whose header claims a huge but plausible size never reach the decoder.

The fuzz of issue #12: a 176 KB JPEG with its SOF set to 16384x2441 (40 Mpixel, allowed
by the old limit) grew the preprocess process by GBs for good. validate's ``max_pixels``
/ ``max_side`` now refuse it before DALI allocates anything, on a real server.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from camdet.contract import detect
from camdet.serving.repository import read_repository
from camdet.serving.server import TritonServer
from tests.helpers.images import encode

pytestmark = [pytest.mark.server]


def claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 header claiming ``width`` x ``height`` pixels."""
    sof = jpeg.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2).
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def test_default_limits_fit_4k_cameras_and_no_more(repository) -> None:
    parameters = read_repository(repository)["validate"].parameters
    max_pixels = int(parameters["max_pixels"].string_value)
    max_side = int(parameters["max_side"].string_value)
    assert 3840 * 2160 <= max_pixels <= 4096 * 4096
    assert 3840 <= max_side <= 8192


def test_huge_claimed_size_fails_its_request_before_decoding(server: TritonServer) -> None:
    rng = np.random.default_rng(3)
    jpeg = encode(rng.integers(0, 255, (240, 320, 3), np.uint8))
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException, match=r"16384x2441|2441x16384") as error:
            detect(client, claim_size(jpeg, 16384, 2441))
        assert "invalid image" in error.value.message()
        # The server goes on: a normal frame right after is answered.
        assert isinstance(detect(client, jpeg), list)
