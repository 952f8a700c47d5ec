"""Encoded test images, made with OpenCV (independent of the code under test)."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from camdet.scenes import render_frame


def encode(image_rgb: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    """Encode an RGB frame with OpenCV (independent of the code under test)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, np.ascontiguousarray(image_rgb[..., ::-1]), params)
    assert ok
    return data.tobytes()


def with_claimed_size(jpeg: bytes, height: int, width: int) -> bytes:
    """Rewrite the SOF0 dimensions of a baseline JPEG."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def bad_huffman_table(jpeg: bytes) -> bytes:
    """The JPEG with its first Huffman table's code counts overwritten: structurally
    complete, the right magic bytes, but the decoder (and validate) refuse it."""
    dht = jpeg.index(b"\xff\xc4")
    return jpeg[: dht + 5] + b"\xff" * 17 + jpeg[dht + 22 :]


def rst_jpeg(seed: int = 3) -> bytes:
    """A camera-style JPEG with restart markers every 4 MCUs (as RTP/MJPEG cameras send)."""
    image = render_frame(np.random.default_rng(seed), 640, 480).image
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 4])
    assert ok
    return data.tobytes()


def lose_interval(jpeg: bytes) -> bytes:
    """Drop the data between RST2 and RST5 (a lost packet): markers then go 1, 5, 6 ..."""
    start = jpeg.index(b"\xff\xd2", jpeg.index(b"\xff\xda"))
    return jpeg[:start] + jpeg[jpeg.index(b"\xff\xd5", start) :]
