"""Backgrounds: textured, cluttered, and free of anything shaped like a class."""

from __future__ import annotations

import math

import cv2
import numpy as np

from camdet.scenes.camera import Exposure, _as_color
from camdet.scenes.shapes import _log_uniform

_BG_DOWNSCALE = 4  # background texture resolution divisor (texture grain of ~4 px)


# Background layers are planar ``[3, h, w]`` float32: numpy broadcasts over a leading
# channel axis at full speed, but crawls over a trailing axis of length 3.


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Linear gradient between two random colours at a random angle, ``[3, h, w]`` f32."""
    start, end = rng.uniform(0, 255, size=(2, 3, 1, 1)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    x = np.linspace(0.0, math.cos(angle), width, dtype=np.float32)
    y = np.linspace(0.0, math.sin(angle), height, dtype=np.float32)
    ramp = x[None, :] + y[:, None]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    layer = (end - start) * ramp[None]
    layer += start
    return layer


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Unit-variance colour noise smooth over ``width / cells`` pixels, ``[3, h, w]`` f32."""
    grid_h = max(round(cells * height / width), 2)
    grid = rng.standard_normal((grid_h, max(cells, 2), 3), dtype=np.float32)
    # Cubic up to a quarter of the size, then linear: as smooth to the eye, 10x cheaper.
    quarter = cv2.resize(grid, (-(-width // 4), -(-height // 4)), interpolation=cv2.INTER_CUBIC)
    smooth = cv2.resize(quarter, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(smooth.transpose(2, 0, 1))


def _add_blobs(rng: np.random.Generator, layer: np.ndarray, short_side: float) -> None:
    """Blend soft, blurry ellipses (stains, shadows) into a low-res planar layer, in place.

    Their edges are blurred over >= 8 frame pixels so they never pass for a sharp disc.
    """
    height, width = layer.shape[1:]
    for _ in range(int(rng.integers(0, 7))):
        axes = np.array([_log_uniform(rng, short_side / 40, short_side / 6) for _ in "xy"])
        axes = np.maximum(axes / _BG_DOWNSCALE, 1.0)
        sigma = max(2.0, 0.5 * float(axes.min()))
        reach = int(np.ceil(axes.max() + 3 * sigma))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        x0, y0 = max(cx - reach, 0), max(cy - reach, 0)
        x1, y1 = min(cx + reach + 1, width), min(cy + reach + 1, height)
        alpha = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        size = (round(axes[0]), round(axes[1]))
        cv2.ellipse(alpha, (cx - x0, cy - y0), size, rng.uniform(0, 180), 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma) * rng.uniform(0.25, 0.7)
        color = rng.uniform(0, 255, size=(3, 1, 1)).astype(np.float32)
        patch = layer[:, y0:y1, x0:x1]
        patch += (color - patch) * alpha[None]


def _clutter_points(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Vertices of one open stroke: a straight segment or a gently turning polyline.

    Turns are capped at 60 degrees so that a polyline never closes into a triangle-like
    outline.
    """
    short_side = min(width, height)
    start = rng.uniform([-0.1 * width, -0.1 * height], [1.1 * width, 1.1 * height])
    count = 1 if rng.random() < 0.5 else int(rng.integers(2, 6))
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(
        rng.uniform(-math.pi / 3, math.pi / 3, size=count)
    )
    lengths = rng.uniform(short_side / (10 if count == 1 else 20), short_side / 4, size=count)
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * lengths[:, None]
    return np.concatenate([start[None], start + np.cumsum(steps, axis=0)])


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, exposure: Exposure) -> None:
    """Draw thin open strokes (wires, cracks, edges), in place.

    Strokes are at least 10x longer than thick, while a box is at most 2.5x, so no
    stroke passes for a box; and open strokes never enclose an area like the other shapes.
    """
    height, width = image.shape[:2]
    max_thickness = max(2, min(width, height) // 360)
    for _ in range(int(rng.integers(0, 13))):
        scene_color = rng.integers(0, 256, size=(1, 3))
        thickness = int(rng.integers(1, max_thickness + 1))
        points = _clutter_points(rng, width, height)
        color = exposure.develop_colors(scene_color, *points.mean(axis=0))[0]
        vertices = np.round(points).astype(np.int32)
        cv2.polylines(image, [vertices], False, _as_color(color), thickness, cv2.LINE_AA)


def render_background(rng: np.random.Generator, exposure: Exposure) -> np.ndarray:
    """Render a textured, cluttered background that contains none of the classes.

    Gradient, smooth colour noise, fine grey texture and blurry blobs are built at
    1/``_BG_DOWNSCALE`` resolution, lit, tone-mapped and upscaled (cheap); thin clutter
    strokes are drawn at full resolution.

    Args:
        rng: Random source.
        exposure: Camera look over the frame; gives the frame size.

    Returns:
        ``[height, width, 3]`` uint8 RGB output image.
    """
    width, height = exposure.width, exposure.height
    low_w, low_h = -(-width // _BG_DOWNSCALE), -(-height // _BG_DOWNSCALE)
    layer = _gradient(rng, low_w, low_h)
    layer += _smooth_noise(rng, low_w, low_h, int(rng.integers(3, 12))) * rng.uniform(0, 30)
    texture = rng.standard_normal((low_h, low_w), dtype=np.float32)
    layer += texture * np.float32(rng.uniform(0, 12))
    _add_blobs(rng, layer, min(width, height))
    small = exposure.develop_layer(layer)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    _draw_clutter(rng, image, exposure)
    return image
