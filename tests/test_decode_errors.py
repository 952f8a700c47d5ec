"""A decoder's refusal reaches the client as one line in words (camdet.steps.preprocess.errors)."""

from __future__ import annotations

import numpy as np
import pytest

from camdet.steps.preprocess.errors import dali_error_summary, decode_failure
from camdet.steps.preprocess.pipeline import run_batch
from tests.helpers.images import bad_huffman_table, encode
from tests.helpers.preprocess import dali_pipeline


def dali_refusal(data: bytes) -> RuntimeError:
    """DALI's own exception for ``data`` through the production pipeline on the CPU."""
    with pytest.raises(RuntimeError) as info:
        run_batch(dali_pipeline(), [np.frombuffer(data, np.uint8)])
    return info.value


def test_a_real_dali_refusal_becomes_one_line_without_its_source() -> None:
    jpeg = encode(np.full((48, 64, 3), 128, np.uint8))
    error = dali_refusal(bad_huffman_table(jpeg))
    assert "fn.decoders" in str(error) or "\n" in str(error)  # what DALI says
    message = decode_failure(jpeg[:4], error)
    assert message.startswith("cannot decode image: the JPEG image data is corrupt or uses")
    assert "\n" not in message and "fn.decoders" not in message and "#" not in message


@pytest.mark.parametrize(
    ("text", "summary"),
    [
        (
            "Error in thread 0: nvImageCodec failure: '#17'",
            "nvImageCodec: internal error in a codec extension (status 17)",
        ),
        ("[x.cc:12] nvImageCodec failure: '#3'", "nvImageCodec: bad code stream (status 3)"),
        ("nvImageCodec failure: '#99'", "nvImageCodec: unknown status (status 99)"),
        ("Critical error in pipeline:\nFailed to decode sample #0 :", "the decoder gave no reason"),
    ],
)
def test_nvimagecodec_status_numbers_are_named(text: str, summary: str) -> None:
    assert dali_error_summary(RuntimeError(text)) == summary
    assert decode_failure(b"\x89PNG", RuntimeError(text)).startswith("cannot decode image: the PNG")
