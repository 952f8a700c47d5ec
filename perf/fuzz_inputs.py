"""Malformed and edge-case requests for the memory fuzz (issue #12), from a seed.

The same damage the request-error tests send one at a time (tests/test_image_check.py,
tests/test_request_errors.py, tests/test_memory_limits.py), drawn at random: bit flips,
truncations, headers claiming large sizes within and beyond validate's limits, PNGs,
empty and random payloads, bad request parameters, all interleaved with valid frames.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from camdet.scenes import render_frame

CLAIMED_WITHIN_LIMITS = ((4096, 4096), (8192, 2048), (3840, 2160), (2048, 8192))
"""(width, height) headers validate lets through (16.8 Mpixel, 8192 a side): the decoder
allocates their full size although the data is a small frame's."""

CLAIMED_BEYOND_LIMITS = ((16384, 2441), (8193, 100), (60000, 60000))
"""Headers validate refuses before decoding (16384x2441: the issue's 40 Mpixel frame)."""

BAD_PARAMETERS: tuple[dict[str, Any], ...] = (
    {"max_detections": "1" + "0" * 30},
    {"max_detections": -1},
    {"confidence_threshold": math.nan},
    {"iou_threshold": 0},
    {"codec": 5},
    {"confidence_treshold": 0.5},
)

KINDS: dict[str, float] = {
    "valid": 0.25,
    "bit_flip": 0.12,
    "truncated": 0.1,
    "claimed_within": 0.08,
    "claimed_beyond": 0.08,
    "png": 0.05,
    "png_damaged": 0.05,
    "empty": 0.05,
    "random": 0.07,
    "bad_parameters": 0.1,
    "huffman": 0.05,
}
"""Share of each kind of input (the weights sum to 1)."""


@dataclass(frozen=True)
class FuzzInput:
    """One request: the payload, its request parameters and what kind of damage it has."""

    kind: str
    data: bytes
    parameters: dict[str, Any] | None = None


def encode(image_rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    """RGB image -> JPEG (quality 90) or PNG bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, image_rgb[..., ::-1], params)
    if not ok:
        raise ValueError(f"cannot encode {ext}")
    return data.tobytes()


def claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The baseline JPEG with its SOF0 header claiming ``width`` x ``height`` pixels."""
    sof = jpeg.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2).
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def valid_frames(count: int = 8, seed: int = 0) -> list[bytes]:
    """Camera-like 640x480 scenes as JPEG, plus one 1280x720."""
    rng = np.random.default_rng(seed)
    sizes = [(640, 480)] * (count - 1) + [(1280, 720)]
    return [encode(render_frame(rng, w, h).image) for w, h in sizes]


def largest_frames() -> list[bytes]:
    """Real JPEGs at each size of :data:`CLAIMED_WITHIN_LIMITS` (the largest validate passes).

    A server that has met such frames keeps the decoder buffers they need, bounded by the
    decode budget (``max_batch_pixels``); warming up with them puts those buffers in the
    baseline, so what grows under fuzz is what a leak would grow.
    """
    frames = []
    for width, height in CLAIMED_WITHIN_LIMITS:
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        image = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
        frames.append(encode(np.ascontiguousarray(image)))
    return frames


def fuzz_inputs(count: int, seed: int = 0) -> Iterator[FuzzInput]:
    """``count`` inputs drawn with the :data:`KINDS` shares, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    frames = valid_frames(seed=seed)
    pngs = [encode(render_frame(rng, 320, 240).image, ".png") for _ in range(2)]
    kinds, weights = zip(*KINDS.items(), strict=True)
    for kind in rng.choice(kinds, size=count, p=np.asarray(weights) / sum(weights)):
        yield make_input(str(kind), rng, frames, pngs)


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _bit_flip(rng: np.random.Generator, jpeg: bytes) -> bytes:
    data = bytearray(jpeg)
    for at in rng.integers(2, len(data) - 2, size=int(rng.integers(1, 16))):
        data[at] ^= 1 << int(rng.integers(8))
    return bytes(data)


def _truncated(rng: np.random.Generator, jpeg: bytes) -> bytes:
    # Half keep an end marker, as a camera that flushes a short frame would send.
    return jpeg[: int(rng.integers(0, len(jpeg)))] + (b"\xff\xd9" if rng.random() < 0.5 else b"")


def _png_damaged(rng: np.random.Generator, png: bytes) -> bytes:
    if rng.random() < 0.5:
        return png[: int(rng.integers(8, len(png)))]
    data = bytearray(png)
    data[int(rng.integers(8, len(data)))] ^= 0xFF
    return bytes(data)


def _random(rng: np.random.Generator) -> bytes:
    head = b"\xff\xd8" if rng.random() < 0.5 else b""  # half look like a JPEG at first
    return head + rng.bytes(int(rng.integers(1, 300_000)))


def _bad_huffman(jpeg: bytes) -> bytes:
    dht = jpeg.index(b"\xff\xc4")  # an undecodable Huffman table: fails inside DALI
    return jpeg[: dht + 5] + b"\xff" * 17 + jpeg[dht + 22 :]


def make_input(
    kind: str, rng: np.random.Generator, frames: list[bytes], pngs: list[bytes]
) -> FuzzInput:
    """One input of ``kind`` made from the valid ``frames`` / ``pngs``."""
    jpeg: bytes = _pick(rng, frames)
    makers: dict[str, Callable[[], bytes]] = {
        "valid": lambda: jpeg,
        "bit_flip": lambda: _bit_flip(rng, jpeg),
        "truncated": lambda: _truncated(rng, jpeg),
        "claimed_within": lambda: claim_size(jpeg, *_pick(rng, CLAIMED_WITHIN_LIMITS)),
        "claimed_beyond": lambda: claim_size(jpeg, *_pick(rng, CLAIMED_BEYOND_LIMITS)),
        "png": lambda: _pick(rng, pngs),
        "png_damaged": lambda: _png_damaged(rng, _pick(rng, pngs)),
        "empty": lambda: b"",
        "random": lambda: _random(rng),
        "bad_parameters": lambda: jpeg,
        "huffman": lambda: _bad_huffman(jpeg),
    }
    if kind not in makers:
        raise ValueError(f"unknown fuzz kind {kind!r}")
    parameters = _pick(rng, BAD_PARAMETERS) if kind == "bad_parameters" else None
    return FuzzInput(kind, makers[kind](), parameters)
