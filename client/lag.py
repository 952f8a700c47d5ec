"""Warn when a live camera's answers fall behind live, once per doubling of the lag.

Lag is capture-to-answer time (see :mod:`camdet.client.capture_clock`): in capacity mode
with a server slower than the camera it grows without bound, while read-to-answer
latency stays small. One warning at ``threshold_s``, the next at twice that, and so on;
one line when the camera is back under the threshold.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEFAULT_LAG_WARNING_S = 2.0


class LagAlarm:
    """The lag warnings of one camera.

    Args:
        camera_id: The camera, for the log lines.
        threshold_s: Lag of the first warning, seconds.
    """

    def __init__(self, camera_id: str, threshold_s: float = DEFAULT_LAG_WARNING_S) -> None:
        if threshold_s <= 0:
            raise ValueError(f"lag warning threshold must be > 0, got {threshold_s}")
        self.camera_id = camera_id
        self.threshold_s = threshold_s
        self.warnings = 0
        self._next_s = threshold_s

    def observe(self, lag_s: float) -> None:
        """Take the lag of one answer; log when it crossed the next level or recovered."""
        if lag_s >= self._next_s:
            self.warnings += 1
            logger.warning(
                "camera %s is %.1f s behind live and falling behind (the server is slower "
                "than the camera: add servers, lower --fps, or use --mode realtime)",
                self.camera_id,
                lag_s,
            )
            while self._next_s <= lag_s:
                self._next_s *= 2
        elif lag_s < self.threshold_s and self._next_s > self.threshold_s:
            logger.warning("camera %s caught up: %.1f s behind live", self.camera_id, lag_s)
            self._next_s = self.threshold_s
