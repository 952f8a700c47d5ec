"""The preprocess decode budget: claimed pixels from headers, batches split to fit."""

from __future__ import annotations

import numpy as np
from camdet.perf.fuzz_inputs import claim_size

from camdet.steps.preprocess.budget import claimed_pixels, plan, split_by_pixels
from tests.helpers.images import encode


def test_claimed_pixels_come_from_the_header_not_the_data() -> None:
    jpeg = encode(np.zeros((48, 64, 3), np.uint8))
    assert claimed_pixels(jpeg) == 48 * 64
    assert claimed_pixels(np.frombuffer(claim_size(jpeg, 4096, 4096), np.uint8)) == 4096 * 4096
    assert claimed_pixels(encode(np.zeros((30, 40, 3), np.uint8), ".png")) == 1200
    assert claimed_pixels(b"\x00\x01 not an image") is None


def test_batches_split_into_consecutive_groups_within_the_budget() -> None:
    assert split_by_pixels([1, 2, 3, 4], 100) == [slice(0, 4)]
    assert split_by_pixels([60, 30, 20, 50, 50], 100) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    # Over the budget or unknown: alone, never dropped.
    assert split_by_pixels([10, 500, 10], 100) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert split_by_pixels([None, 10, 10], 100) == [slice(0, 1), slice(1, 3)]
    assert split_by_pixels([], 100) == []


def test_plan_decodes_largest_first_so_every_position_stays_small() -> None:
    # Camera batch of 720p/1080p frames and two headers claiming 4096x4096 / 8192x2048.
    pixels = [921_600, 2_073_600, 16_777_216, 921_600, 16_777_216, None]
    budget = 2 * 16_777_216
    order, groups = plan(pixels, budget)
    assert order == [5, 2, 4, 1, 0, 3]  # unknown size first (as over budget), ties kept
    assert groups == [slice(0, 1), slice(1, 3), slice(3, 6)]
    sizes = [budget if pixels[i] is None else pixels[i] for i in order]
    for group in groups:
        run = sizes[group]
        assert len(run) == 1 or sum(run) <= budget
        # The bound DALI's per-position buffers rely on: position i holds <= budget/(i+1).
        assert all(size <= budget / (i + 1) for i, size in enumerate(run)), run
    assert plan([5, 5], 100) == ([0, 1], [slice(0, 2)])  # nothing to reorder or split
