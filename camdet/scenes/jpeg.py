"""JPEG encode/decode of RGB images (OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB image as JPEG.

    Args:
        image_rgb: ``[H, W, 3]`` uint8 RGB image.
        quality: JPEG quality, 1-100.

    Returns:
        The JPEG file bytes.

    Raises:
        ValueError: If the quality is out of range or encoding fails.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes to an RGB image.

    Args:
        data: JPEG file bytes.

    Returns:
        ``[H, W, 3]`` uint8 RGB image.

    Raises:
        ValueError: If the bytes are not a decodable image.
    """
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
