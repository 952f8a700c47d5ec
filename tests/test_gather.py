"""The pipelines' first-stage gathering (camdet.triton_models.portable.gather), on threads.

``execute`` hands batches over without waiting for the decode stage while less than a
whole batch waits; the stage takes what waits as one batch, in order, never more than
its largest batch. The pipelines' answers under it are tests/test_pipeline.py's.
"""

from __future__ import annotations

import threading

import pytest

from camdet.triton_models.portable.gather import Waiting

# A batch here: the list of its requests' frame counts; joined, the lists concatenated.
Batch = list[int]


def waiting(max_frames: int = 8) -> Waiting[Batch]:
    return Waiting(sum, lambda batches: [n for batch in batches for n in batch], max_frames)


def test_the_stage_takes_what_waits_in_order_up_to_its_largest_batch() -> None:
    batches = waiting(max_frames=8)
    for batch in ([1], [2, 1], [3], [2]):  # handed over at once: under 8 frames waited
        batches.put(batch)
    # 1 + 3 + 3 = 7 frames; the 2-frame batch would make 9: it waits for the next take.
    assert batches.take() == [1, 2, 1, 3]
    batches.put([1])
    assert batches.take() == [2, 1]


def test_a_batch_larger_than_the_limit_is_taken_alone() -> None:
    batches = waiting(max_frames=4)
    batches.put([1])
    batches.put([6])
    assert batches.take() == [1]
    assert batches.take() == [6]


def test_execute_is_held_back_only_while_a_whole_batch_waits() -> None:
    batches = waiting(max_frames=4)
    batches.put([2])  # returns at once: 0 frames were waiting
    batches.put([2])  # 2 < 4: at once
    handed_over = threading.Event()
    third = threading.Thread(target=lambda: (batches.put([1]), handed_over.set()))
    third.start()
    assert not handed_over.wait(0.3), "4 frames wait: the third batch must be held back"
    assert batches.take() == [2, 2]
    assert handed_over.wait(5)
    third.join()
    assert batches.take() == [1]


def test_stop_comes_after_the_batches_already_waiting() -> None:
    batches = waiting(max_frames=2)
    batches.put([2])
    batches.put(None)  # not held back by the full batch before it
    assert batches.take() == [2]
    assert batches.take() is None


def test_the_stage_waits_for_a_batch() -> None:
    batches = waiting()
    taken: list[Batch | None] = []
    stage = threading.Thread(target=lambda: taken.append(batches.take()))
    stage.start()
    stage.join(0.2)
    assert stage.is_alive()
    batches.put([3])
    stage.join(5)
    assert taken == [[3]]


def test_a_limit_below_one_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="max_frames must be at least 1, got 0"):
        waiting(max_frames=0)
