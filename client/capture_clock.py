"""When a live camera captured each frame, on this machine's monotonic clock.

A reader that is back-pressured (capacity mode, a slow server) takes frames from the
socket long after the camera sent them: read time hides that lag. The stream's own
clock does not: a frame's presentation time plus the offset between the stream clock
and this machine's clock is when it was captured. The offset is the smallest
``arrival - pts`` seen in the session, i.e. the frame that arrived with the least delay
(network and buffering only ever add delay), so it settles within the first frames read
in real time and later back-pressure shows as growing lag instead of moving the offset.
"""

from __future__ import annotations

PTS_RESET_S = 1.0
"""A presentation time this far behind the previous one is a new timeline (the camera
restarted its clock): the offset is measured again."""


class StreamClock:
    """Maps one session's presentation times onto ``time.monotonic()``.

    Use one per session (:meth:`reset` on reconnect).
    """

    def __init__(self) -> None:
        self._offset: float | None = None
        self._last_pts: float | None = None

    def reset(self) -> None:
        """Forget the previous session's offset."""
        self._offset = self._last_pts = None

    def capture_time(self, pts_s: float | None, arrival: float) -> float:
        """When the frame was captured, ``time.monotonic()`` seconds.

        Args:
            pts_s: The frame's presentation time in seconds, or None if it has none.
            arrival: ``time.monotonic()`` when the frame was read.

        Returns:
            ``offset + pts_s``, never after ``arrival``; ``arrival`` when the frame has no
            presentation time.
        """
        if pts_s is None:
            return arrival
        if self._last_pts is not None and pts_s < self._last_pts - PTS_RESET_S:
            self._offset = None
        self._last_pts = pts_s
        offset = arrival - pts_s
        if self._offset is None or offset < self._offset:
            self._offset = offset
        return self._offset + pts_s
