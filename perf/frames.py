"""Encoded camera frames for the benchmarks: synthetic 720p/1080p scenes as JPEG bytes.

Every load generator of :mod:`camdet.perf` (our bench, perf_analyzer through its
input-data JSON, locust) sends the same kind of frames: textured, noisy scenes from
:mod:`camdet.scenes` encoded the way a camera would (baseline JPEG, quality 90).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080))
"""(width, height) of the synthetic cameras, in pixels: 720p and 1080p."""

DEFAULT_QUALITY: int = 90
"""JPEG quality of the synthetic frames."""


@dataclass(frozen=True)
class EncodedFrame:
    """One encoded camera frame.

    Attributes:
        name: A stable identifier (``"<width>x<height>-<index>"``).
        data: The JPEG (or PNG) file bytes.
        width: Frame width in pixels.
        height: Frame height in pixels.
    """

    name: str
    data: bytes
    width: int
    height: int


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"1280x720"`` into ``(1280, 720)`` (width, height in pixels).

    Raises:
        ValueError: If the text is not two positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"frame size must look like 1280x720, got {text!r}")
    return int(parts[0]), int(parts[1])


def synthetic_frames(
    count: int,
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
    seed: int = 0,
    quality: int = DEFAULT_QUALITY,
) -> list[EncodedFrame]:
    """Render ``count`` random scenes, cycling through ``sizes``, and JPEG-encode them.

    Args:
        count: Number of frames (>= 1).
        sizes: (width, height) in pixels of the cameras; frame ``i`` has ``sizes[i % n]``.
        seed: Random seed; the same seed gives byte-identical frames.
        quality: JPEG quality, 1-100.

    Returns:
        The encoded frames, in order.

    Raises:
        ValueError: If ``count`` or ``sizes`` is empty.
    """
    from camdet.scenes import encode_jpeg, render_frame

    if count < 1 or not sizes:
        raise ValueError(f"need at least one frame and one size, got {count} and {sizes}")
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        image = render_frame(rng, width, height).image
        frames.append(
            EncodedFrame(f"{width}x{height}-{index}", encode_jpeg(image, quality), width, height)
        )
    return frames
