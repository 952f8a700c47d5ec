"""Constant-velocity Kalman filter over boxes, the motion model of ByteTrack and SORT.

State ``[cx, cy, a, h, vcx, vcy, va, vh]``: box centre and height in frame pixels, aspect
``a = w / h``, and their velocities per frame. Noise scales with the box height, as in
ByteTrack (and DeepSORT before it), so one filter suits 20 px and 400 px objects alike.
A step may span several frames (``dt``): frames dropped in real-time mode, frames lost in a
server outage, or a decimated camera.
"""

from __future__ import annotations

import numpy as np

_POSITION_WEIGHT = 1.0 / 20  # measurement/position noise per pixel of box height
_VELOCITY_WEIGHT = 1.0 / 160  # velocity noise per pixel of box height, per frame


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """Corner boxes to centre, aspect, height.

    Args:
        boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in pixels.

    Returns:
        ``[N, 4]`` float64 ``cx, cy, w / h, h``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    return np.column_stack([center, wh[:, 0] / wh[:, 1], wh[:, 1]])


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """Centre, aspect, height to corner boxes.

    Args:
        xyah: ``[N, 4+]`` ``cx, cy, w / h, h`` (extra columns, e.g. velocities, ignored).

    Returns:
        ``[N, 4]`` float64 ``x1, y1, x2, y2`` in pixels.
    """
    xyah = np.asarray(xyah, dtype=np.float64).reshape(len(xyah), -1)
    h = xyah[:, 3]
    w = xyah[:, 2] * h
    half = np.column_stack([w, h]) / 2
    return np.column_stack([xyah[:, :2] - half, xyah[:, :2] + half])


def _std(height: float, position: float, speed: float) -> np.ndarray:
    """``[8]`` standard deviations: position terms, then velocity terms (aspect: fixed)."""
    p, v = position * height, speed * height
    return np.array([p, p, 1e-2, p, v, v, 1e-5, v])


class BoxKalman:
    """One track's state and covariance.

    Args:
        box: ``[4]`` ``x1, y1, x2, y2`` of the first detection, pixels.
    """

    _H = np.eye(4, 8)

    def __init__(self, box: np.ndarray) -> None:
        xyah = xyxy_to_xyah(box)[0]
        self.mean = np.concatenate([xyah, np.zeros(4)])
        # Velocity unknown at birth: ten times the per-frame velocity noise.
        self.covariance = np.diag(
            np.square(_std(xyah[3], 2 * _POSITION_WEIGHT, 10 * _VELOCITY_WEIGHT))
        )

    def predict(self, dt: float = 1.0) -> None:
        """Advance the state by ``dt`` frames (> 0)."""
        transition = np.eye(8)
        transition[:4, 4:] = dt * np.eye(4)
        if self.mean[3] + dt * self.mean[7] <= 1.0:
            self.mean[7] = 0.0  # a shrinking box must not collapse through zero height
        noise = np.diag(np.square(_std(self.mean[3], _POSITION_WEIGHT, _VELOCITY_WEIGHT))) * dt
        self.mean = transition @ self.mean
        self.covariance = transition @ self.covariance @ transition.T + noise

    def update(self, box: np.ndarray) -> None:
        """Correct the state with a matched detection ``[4]`` ``x1, y1, x2, y2``."""
        measurement = xyxy_to_xyah(box)[0]
        std = _std(self.mean[3], _POSITION_WEIGHT, 0.0)[:4]
        projected = self._H @ self.covariance @ self._H.T + np.diag(np.square(std))
        gain = np.linalg.solve(projected, self._H @ self.covariance).T
        self.mean = self.mean + gain @ (measurement - self._H @ self.mean)
        self.covariance = self.covariance - gain @ projected @ gain.T

    def hold_size(self) -> None:
        """Stop the box's aspect and height from changing (velocities 0) while unseen."""
        self.mean[6:8] = 0.0

    def reobserve(self, before: np.ndarray | None, box: np.ndarray, gap: int) -> None:
        """Correct with ``box`` after a gap, velocity re-estimated from the observations.

        Args:
            before: ``[4]`` the last box observed before the gap (None: plain update).
            box: ``[4]`` the box observed now, ``x1, y1, x2, y2`` pixels.
            gap: Frames between the two observations (>= 1).
        """
        self.update(box)
        if before is not None and gap > 0:
            # Only the centre's velocity: the boxes' sizes are clipped at the occluder.
            then, now = xyxy_to_xyah(before)[0], xyxy_to_xyah(box)[0]
            self.mean[4:6] = (now[:2] - then[:2]) / gap

    @property
    def box(self) -> np.ndarray:
        """``[4]`` predicted or corrected ``x1, y1, x2, y2``, pixels."""
        return xyah_to_xyxy(self.mean[None, :4])[0]
