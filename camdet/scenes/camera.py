"""The camera model: light falloff, tone curve, colour cast, blur and sensor noise.

Also where object colours are picked, since contrast is judged on output colours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from camdet.scenes.frame import MIN_COLOR_DISTANCE
from camdet.scenes.raster import Raster, blend
from camdet.scenes.shapes import _log_uniform

_COLOR_CANDIDATES = 256


# Quantiles of the standard normal at the centres of 256 equal-probability bins: a uniform
# random byte looked up here is a Gaussian sample, which is ~10x cheaper than drawing one.
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])


@dataclass(frozen=True)
class CameraLook:
    """How a camera renders the scene: lighting, optics, sensor and image processing.

    Attributes:
        light: ``[9, 16]`` float32 light falloff (vignetting, uneven lighting) in
            ``[0.6, 1]``, stretched over the frame.
        blur_sigma: Gaussian blur of the optics in pixels (0 = sharp).
        noise_sigma: Standard deviation of the sensor noise in grey levels.
        gamma: Exponent of the tone curve.
        black: ``[3]`` output level of black per channel, in ``[0, 1]`` (colour cast).
        white: ``[3]`` output level of white per channel, in ``[0, 1]`` (colour cast).
    """

    light: np.ndarray
    blur_sigma: float
    noise_sigma: float
    gamma: float
    black: np.ndarray
    white: np.ndarray

    def tone_lut(self) -> np.ndarray:
        """Lookup table of the tone curve (levels, gamma, colour cast).

        The curve only compresses the range (black >= 0, white <= 1), so it never clips
        and never merges an object into its background.

        Returns:
            ``[256, 1, 3]`` uint8 table for ``cv2.LUT``.
        """
        x = (np.arange(256, dtype=np.float64) / 255.0) ** self.gamma
        curve = self.black[None, :] + (self.white - self.black)[None, :] * x[:, None]
        return np.round(curve * 255.0).astype(np.uint8).reshape(256, 1, 3)


def sample_camera_look(rng: np.random.Generator) -> CameraLook:
    """Draw random camera settings.

    Args:
        rng: Random source.

    Returns:
        The settings.
    """
    grid = rng.uniform(0.72, 1.0, size=(3, 4)).astype(np.float32)
    grid = cv2.resize(grid, (16, 9), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[-1:1:9j, -1:1:16j].astype(np.float32)
    vignette = 1.0 - rng.uniform(0.0, 0.3) * (xx**2 + yy**2) / 2
    black = rng.uniform(0.0, 0.12) + rng.uniform(-0.03, 0.03, size=3)
    white = rng.uniform(0.82, 1.0) + rng.uniform(-0.06, 0.06, size=3)
    return CameraLook(
        light=np.clip(grid * vignette, 0.6, 1.0),
        blur_sigma=float(rng.uniform(0.4, 1.0)) if rng.random() < 0.3 else 0.0,
        noise_sigma=float(rng.uniform(1.0, 8.0)),
        gamma=_log_uniform(rng, 0.7, 1.4),
        black=np.clip(black, 0.0, 0.2),
        white=np.clip(white, 0.75, 1.0),
    )


class Exposure:
    """A :class:`CameraLook` laid over one frame size: turns scene colours into output ones.

    Light falloff and the tone curve act pixel by pixel, so they are applied where colours
    are made (the low-resolution background, each object's paint, each stroke) instead of
    as extra passes over the whole frame: only blur and noise touch every pixel.
    """

    def __init__(self, look: CameraLook, width: int, height: int) -> None:
        """Prepare the look for a frame size.

        Args:
            look: Camera settings.
            width: Frame width in pixels.
            height: Frame height in pixels.
        """
        self.look, self.width, self.height = look, width, height
        self.lut = look.tone_lut()
        # Quantise the small grid, not the big map: the uint8 resize is 5x cheaper.
        grid = np.round(look.light * 255).astype(np.uint8)
        self.light = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
        """``[H, W]`` uint8 light falloff, 255 = full light."""

    def develop_layer(self, layer: np.ndarray) -> np.ndarray:
        """Light and tone-map a low-resolution planar layer spanning the frame.

        Args:
            layer: ``[3, h, w]`` float32 scene colours, 0-255 (modified in place).

        Returns:
            ``[h, w, 3]`` uint8 output colours.
        """
        light = cv2.resize(self.look.light, layer.shape[:0:-1], interpolation=cv2.INTER_LINEAR)
        layer *= light[None]
        np.clip(layer, 0, 255, out=layer)
        return cv2.LUT(cv2.merge(list(layer.astype(np.uint8))), self.lut)

    def develop_colors(self, colors: np.ndarray, x: float, y: float) -> np.ndarray:
        """Output colours of scene colours seen at one point of the frame.

        Args:
            colors: ``[M, 3]`` scene RGB colours, 0-255.
            x: Column of the point in frame pixels.
            y: Row of the point in frame pixels.

        Returns:
            ``[M, 3]`` int output RGB colours.
        """
        col = min(max(int(x), 0), self.width - 1)
        row = min(max(int(y), 0), self.height - 1)
        lit = np.round(np.asarray(colors, dtype=np.float64) * (self.light[row, col] / 255.0))
        return self.lut[:, 0, :][lit.astype(np.intp), np.arange(3)].astype(np.int64)

    def paint(self, color: Sequence[int], window: tuple[slice, slice]) -> np.ndarray:
        """Output colour of a flat scene colour over a window of the frame.

        Args:
            color: Scene RGB colour, 0-255.
            window: Row and column slices of the frame.

        Returns:
            ``[h, w, 3]`` uint8 output colours.
        """
        light = cv2.cvtColor(self.light[window], cv2.COLOR_GRAY2RGB)
        lit = cv2.multiply(light, (*(float(c) for c in color), 0.0), scale=1.0 / 255.0)
        return cv2.LUT(lit, self.lut)

    def draw(self, image: np.ndarray, raster: Raster, color: Sequence[int]) -> None:
        """Paint an object of a scene colour into the output image, in place.

        Args:
            image: ``[H, W, 3]`` uint8 RGB output image.
            raster: The object's coverage.
            color: Scene RGB colour, 0-255.
        """
        blend(image, raster, self.paint(color, raster.window))


def add_sensor_noise(
    image: np.ndarray, rng: np.random.Generator, sigma: float, offset: float = 0.0
) -> None:
    """Add Gaussian noise to an image, in place, saturating at 0 and 255.

    Uniform random bytes are mapped to signed Gaussian quantiles by two lookup tables
    (positive and negative part), which keeps everything in uint8 and costs ~1 ns a value.

    Args:
        image: ``[H, W, 3]`` uint8 image.
        rng: Random source.
        sigma: Standard deviation in grey levels.
        offset: Mean of the noise in grey levels (a global brightness change for free).
    """
    # Raw 64-bit draws viewed as bytes: 3x faster than Generator.bytes, same determinism.
    raw = rng.bit_generator.random_raw(-(-image.size // 8))
    uniform = raw.view(np.uint8)[: image.size].reshape(image.shape)
    values = np.round(_NORMAL_QUANTILES * sigma + offset)
    raise_lut = np.clip(values, 0, 255).astype(np.uint8)
    lower_lut = np.clip(-values, 0, 255).astype(np.uint8)
    cv2.add(image, cv2.LUT(uniform, raise_lut), dst=image)
    cv2.subtract(image, cv2.LUT(uniform, lower_lut), dst=image)


def apply_sensor(
    image: np.ndarray, look: CameraLook, rng: np.random.Generator, brightness: float = 0.0
) -> np.ndarray:
    """Blur of the optics, then sensor noise: the passes over every pixel of a frame.

    Args:
        image: ``[H, W, 3]`` uint8 RGB output image (modified in place).
        look: Camera settings.
        rng: Random source of the noise.
        brightness: Global brightness offset in grey levels (flicker).

    Returns:
        ``[H, W, 3]`` uint8 RGB camera image.
    """
    if look.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), look.blur_sigma)
    add_sensor_noise(image, rng, look.noise_sigma, brightness)
    return image


def pick_color(
    rng: np.random.Generator,
    avoid: np.ndarray,
    develop: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[int, int, int]:
    """Pick a random scene colour whose output colour stands out from given colours.

    Args:
        rng: Random source.
        avoid: ``[M, 3]`` output RGB colours to keep :data:`MIN_COLOR_DISTANCE` from (M
            may be 0).
        develop: Maps ``[K, 3]`` scene colours to output colours; identity if None.

    Returns:
        The first of ``_COLOR_CANDIDATES`` random colours far enough from all of
        ``avoid``, else the candidate farthest from its nearest one.
    """
    candidates = rng.integers(0, 256, size=(_COLOR_CANDIDATES, 3))
    if len(avoid) == 0:
        return _as_color(candidates[0])
    seen = develop(candidates) if develop is not None else candidates
    gaps = np.linalg.norm(seen[:, None, :] - np.asarray(avoid)[None, :, :], axis=2)
    nearest = gaps.min(axis=1)
    good = np.flatnonzero(nearest >= MIN_COLOR_DISTANCE)
    return _as_color(candidates[good[0] if len(good) else int(nearest.argmax())])


def _as_color(values: np.ndarray) -> tuple[int, int, int]:
    return int(values[0]), int(values[1]), int(values[2])
