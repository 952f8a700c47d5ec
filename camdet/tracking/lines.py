"""Counting tracks that cross a line: the analytic behind "people in", "cars past the gate".

A track crosses when its anchor (box centre) passes from one side of the line to the other
between two of its detections, through the segment between the line's two end points.
The side only changes once the anchor is more than :attr:`CountLine.margin` pixels from the
line, so an object standing on the line with jittering boxes is not counted again and
again. Direction: ``in`` is a crossing onto the right-hand side of the line as seen going
from ``(x1, y1)`` to ``(x2, y2)`` in image coordinates (y down), ``out`` the opposite.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

DIRECTIONS = ("in", "out")


@dataclass(frozen=True)
class CountLine:
    """A counting line segment.

    Attributes:
        x1: First end point, column in frame pixels.
        y1: First end point, row in frame pixels.
        x2: Second end point, column.
        y2: Second end point, row.
        margin: Distance from the line, pixels, within which the side does not change.
    """

    x1: float
    y1: float
    x2: float
    y2: float
    margin: float = 2.0

    def __post_init__(self) -> None:
        if self.x1 == self.x2 and self.y1 == self.y2:
            raise ValueError(f"a count line needs two different end points, got {self}")

    @classmethod
    def parse(cls, text: str) -> CountLine:
        """A line from ``"x1,y1,x2,y2"`` (pixels of the camera's frames).

        Raises:
            ValueError: Unless the text is four numbers separated by commas.
        """
        parts = text.split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ValueError(f"a count line is x1,y1,x2,y2 in pixels, got {text!r}")
        return cls(*values)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance of points from the (infinite) line, pixels; > 0 on the right-hand side.

        Args:
            points: ``[N, 2]`` ``(x, y)`` in frame pixels.

        Returns:
            ``[N]`` float64.
        """
        start = np.array([self.x1, self.y1])
        direction = np.array([self.x2, self.y2]) - start
        offset = np.asarray(points, dtype=np.float64).reshape(-1, 2) - start
        cross = direction[0] * offset[:, 1] - direction[1] * offset[:, 0]
        return cross / float(np.hypot(*direction))

    def passes_between(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether the path ``a -> b`` (on opposite sides) meets the segment itself."""
        da, db = self.signed_distance(np.stack([a, b]))
        where = a + (b - a) * (da / (da - db))
        start = np.array([self.x1, self.y1])
        direction = np.array([self.x2, self.y2]) - start
        along = float(np.dot(where - start, direction) / np.dot(direction, direction))
        return 0.0 <= along <= 1.0


def box_anchors(boxes: np.ndarray) -> np.ndarray:
    """``[N, 2]`` box centres of ``[N, 4]`` ``x1, y1, x2, y2`` boxes, pixels."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, :2] + boxes[:, 2:]) / 2


@dataclass
class LineCounter:
    """Crossings of one line by the tracks of one camera.

    Attributes:
        line: The line.
        counts: Crossings so far per direction (``in``, ``out``).
    """

    line: CountLine
    counts: Counter[str] = field(default_factory=Counter)
    _sides: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)

    def update(self, track_ids: np.ndarray, boxes: np.ndarray) -> list[tuple[int, str]]:
        """Take one frame's tracked boxes; count and return the crossings they complete.

        Args:
            track_ids: ``[N]`` track ids (negative: untracked, ignored).
            boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in frame pixels.

        Returns:
            ``(track id, direction)`` of each crossing in this frame.
        """
        anchors = box_anchors(boxes)
        distances = self.line.signed_distance(anchors)
        crossings = []
        for track_id, anchor, distance in zip(track_ids, anchors, distances, strict=True):
            if track_id < 0 or abs(distance) <= self.line.margin:
                continue
            side = 1 if distance > 0 else -1
            previous = self._sides.get(int(track_id))
            self._sides[int(track_id)] = (side, anchor)
            if previous is None or previous[0] == side:
                continue
            if self.line.passes_between(previous[1], anchor):
                direction = "in" if side > 0 else "out"
                self.counts[direction] += 1
                crossings.append((int(track_id), direction))
        return crossings

    def retain(self, track_ids: Iterable[int]) -> None:
        """Forget the sides of every track but these (the tracker's live ones).

        Call after each update with the ids of the tracks the tracker still holds: a track
        that ended never comes back (ids are not reused), so its side is dead weight, and a
        long-running camera would otherwise keep one entry per track it ever saw.
        """
        alive = set(track_ids)
        self._sides = {t: side for t, side in self._sides.items() if t in alive}

    def forget(self) -> None:
        """Forget every remembered side (a new camera session: all tracks ended)."""
        self._sides.clear()

    def __len__(self) -> int:
        """Number of tracks whose side is remembered."""
        return len(self._sides)
