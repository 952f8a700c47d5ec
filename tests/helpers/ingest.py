"""Observing an ingest: the accounting identity sampled in a thread, answers scored
against a clip's ground truth."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from camdet.client.accounting import Accounting, CameraTotals
from camdet.client.sinks import Result

from camdet.cli.demo import match
from tests.helpers.clips import Clip

SCORE_THRESHOLD = 0.5  # detections counted against ground truth


@dataclass
class Watch:
    """Samples the accounting every 50 ms in a thread and keeps every unbalanced sample."""

    accounting: Accounting
    samples: int = 0
    violations: list[dict[str, CameraTotals]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            snapshot = self.accounting.snapshot()
            self.samples += 1
            if not all(t.balanced for t in snapshot.values()):
                self.violations.append(snapshot)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``condition()`` until true.

    Raises:
        AssertionError: Naming ``what`` if it stays false for ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Score:
    """Detections of answered frames against the clip's ground truth."""

    frames: int = 0
    truths: int = 0
    detections: int = 0
    matched: int = 0

    @property
    def recall(self) -> float:
        """Matched truths / truths."""
        return self.matched / max(self.truths, 1)

    @property
    def precision(self) -> float:
        """Matched detections / detections."""
        return self.matched / max(self.detections, 1)


def score(results: Iterable[Result], clip: Clip) -> Score:
    """Match each answered frame's detections to the truth of its clip frame.

    The frame's ``position`` in its session is its index in the clip: each RTSP session
    streams the clip from frame 0 over TCP, and files and MJPEG streams are read in order.
    """
    total = Score()
    for result in results:
        truth = clip.frame(result.frame.position)
        found = [d for d in result.detections if d.score >= SCORE_THRESHOLD]
        total.frames += 1
        total.truths += len(truth.boxes)
        total.detections += len(found)
        total.matched += len(match(found, truth))
    return total


def by_camera(results: Iterable[Result]) -> dict[str, list[Result]]:
    """Answered frames grouped by camera id, in arrival order."""
    grouped: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        grouped[result.frame.camera_id].append(result)
    return grouped


def assert_boxes_inside(results: Iterable[Result], width: int, height: int) -> None:
    """Every box lies inside the original frame, in its pixels."""
    for result in results:
        assert result.frame.size() == (width, height)
        for d in result.detections:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, d
