import cv2
import numpy as np
import pytest

from camdet.steps.preprocess.pipeline import run_batch
from camdet.steps.validate.image_check import ImageCheckError, check_encoded_image
from tests.helpers.images import encode, with_claimed_size
from tests.helpers.preprocess import dali_pipeline

LIMITS = {"max_pixels": 40_000_000, "max_side": 16384}


def frame(height: int = 72, width: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


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


def _segment(jpeg: bytes, marker: int) -> int:
    """Byte offset of the first segment with ``marker``."""
    return jpeg.index(bytes([0xFF, marker]))


def _patched(jpeg: bytes, offset: int, data: bytes) -> bytes:
    return jpeg[:offset] + data + jpeg[offset + len(data) :]


def _overfull(counts: bytes) -> bytes:
    """The same number of codes, three of them 1 bit long (only two fit)."""
    new = list(counts)
    new[0] += 3
    new[max(range(1, 16), key=lambda i: new[i])] -= 3
    return bytes(new)


def _header_damage() -> list[tuple[str, bytes, str]]:
    """Frames a decoder refuses by their headers alone (each found by the fuzz)."""
    jpeg = encode(frame())
    sof, dht, sos = (_segment(jpeg, m) for m in (0xC0, 0xC4, 0xDA))
    return [
        ("Huffman counts", _patched(jpeg, dht + 5, b"\xff" * 16), "claims 4080 codes"),
        ("overfull code", _patched(jpeg, dht + 5, _overfull(jpeg[dht + 5 : dht + 21])), "prefix"),
        ("lossless arithmetic", _patched(jpeg, sof + 1, b"\xcf"), "unsupported JPEG process"),
        ("undefined quant table", _patched(jpeg, sof + 12, b"\x03"), "quantization table 3"),
        ("undefined Huffman table", _patched(jpeg, sos + 6, b"\x33"), "DC Huffman table 3"),
        ("arithmetic conditioning", _patched(jpeg, dht + 1, b"\xcc"), "(DAC)"),
        ("bogus length", _patched(jpeg, dht + 2, b"\x00\x01"), "has length 1"),
        ("zero sampling", _patched(jpeg, sof + 11, b"\x00"), "sampling 0x0"),
    ]


@pytest.mark.parametrize(("name", "data", "message"), _header_damage(), ids=lambda v: str(v)[:24])
def test_headers_a_decoder_refuses_are_refused_here(name: str, data: bytes, message: str) -> None:
    """The production DALI backend would fail a whole batch on these; validate stops them."""
    with pytest.raises(ImageCheckError, match=r"^corrupt JPEG: ") as info:
        check_encoded_image(data, **LIMITS)
    assert message in str(info.value), name
    with pytest.raises(RuntimeError):  # and the production pipeline's decoder refuses it
        run_batch(dali_pipeline(), [np.frombuffer(data, np.uint8)])


def test_png_chunk_type_that_is_not_letters_is_refused() -> None:
    png = encode(frame(30, 40), ".png")
    idat = png.index(b"IDAT")
    damaged = png[:idat] + b"\xb6" + png[idat + 1 :]  # a bit flip the fuzz found
    with pytest.raises(ImageCheckError, match=r"invalid chunk type b'\\xb6DAT' at byte \d+"):
        check_encoded_image(damaged, **LIMITS)
    with pytest.raises(RuntimeError):
        run_batch(dali_pipeline(), [np.frombuffer(damaged, np.uint8)])


def test_progressive_grey_and_motion_jpeg_headers_are_accepted() -> None:
    image = frame()
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    grey = cv2.imencode(".jpg", image[..., 0])[1].tobytes()
    jpeg = encode(image)
    dht, sos = _segment(jpeg, 0xC4), _segment(jpeg, 0xDA)
    motion_jpeg = jpeg[:dht] + jpeg[sos:]  # no DHT: decoders use the standard tables
    for data in (progressive, grey, motion_jpeg):
        assert check_encoded_image(data, **LIMITS).width == 128
        (images, _) = run_batch(dali_pipeline(), [np.frombuffer(data, np.uint8)])
        assert np.array(images.as_tensor()).shape[0] == 1


def test_no_fuzz_frame_that_validate_passes_is_refused_by_the_decoder() -> None:
    """The short CI version of ``python -m camdet.perf.decoder_refusals``."""
    from camdet.perf.decoder_refusals import REFUSED_BY_DECODER, REFUSED_BY_VALIDATE, classify
    from camdet.perf.fuzz_inputs import fuzz_inputs

    outcomes = classify(fuzz_inputs(400, seed=7))
    assert not {kind for kind, outcome in outcomes if outcome == REFUSED_BY_DECODER}, outcomes
    assert outcomes["huffman", REFUSED_BY_VALIDATE] > 0, outcomes
