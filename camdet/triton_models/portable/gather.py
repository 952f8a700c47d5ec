"""The first stage's own batching: the batches waiting for it are taken as one.

With a rendezvous in front of the first stage, ``execute`` held its batch until that
stage was free, and Triton gathered the next batch meanwhile: a request waited one
stage time in Triton's queue, one more inside ``execute``, then went through the
stages. A pipeline batch's time barely shrinks with its frames (H.264 on an H100:
20 ms for 6.6 frames, 26 ms for 14; perf/RESULTS.md, session 17), so at 70 % of the
peak that chain was ~4 batch times long. Here ``execute`` hands its batch over and
returns while fewer than ``max_frames`` frames wait, and the stage takes every batch
waiting when it is free, up to ``max_frames`` frames: its batches grow to what arrived
while it worked, one batch time earlier. A full ``max_frames`` waiting holds ``execute``
back, so under overload the server's dynamic batcher gathers, as before.

Pure Python (no Triton, no torch): :mod:`camdet.triton_models.portable.stages` uses it
with its batches.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Waiting(Generic[T]):
    """Batches handed to a stage and not taken yet, bounded by their frames.

    Args:
        frames: A batch's frames (what ``max_frames`` counts).
        join: Several batches, in the order they were handed over, as one.
        max_frames: The most frames the stage takes at once (its largest batch), and
            the most that wait before :meth:`put` holds the next batch back.
    """

    def __init__(
        self, frames: Callable[[T], int], join: Callable[[list[T]], T], max_frames: int
    ) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        self.frames, self.join, self.max_frames = frames, join, max_frames
        self._items: deque[tuple[T, int] | None] = deque()  # each batch with its frames
        self._waiting = 0  # frames in _items
        self._changed = threading.Condition()

    def put(self, item: T | None) -> None:
        """Hand ``item`` over once fewer than ``max_frames`` frames wait (None: stop).

        The stop is handed over at once, after every batch already waiting.
        """
        with self._changed:
            if item is None:
                self._items.append(None)
            else:
                frames = self.frames(item)
                self._changed.wait_for(lambda: self._waiting < self.max_frames)
                self._waiting += frames
                self._items.append((item, frames))
            self._changed.notify_all()

    def take(self) -> T | None:
        """Every waiting batch, up to ``max_frames`` frames, as one (None: stop).

        Waits for one. A batch that would overrun ``max_frames`` stays for the next take;
        the first is always taken, whatever its size.
        """
        with self._changed:
            self._changed.wait_for(lambda: bool(self._items))
            first = self._items.popleft()
            if first is None:
                return None
            taken, frames = [first[0]], first[1]
            while (following := self._items[0] if self._items else None) is not None:
                item, more = following
                if frames + more > self.max_frames:
                    break
                self._items.popleft()
                taken.append(item)
                frames += more
            self._waiting -= frames
            self._changed.notify_all()
        return taken[0] if len(taken) == 1 else self.join(taken)
