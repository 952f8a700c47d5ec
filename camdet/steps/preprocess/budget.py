"""How many decoded pixels one run of the preprocess pipeline may hold (issue #12).

DALI's CPU image decoder keeps, for good, a buffer per position in the batch sized for the
largest frame it has decoded at that position (measured with DALI 2.4: 8 frames whose
headers claim 4096x4096 left ~380 MiB resident, 4 such frames ~170 MiB, 1 frame ~40 MiB;
neither a pipeline rebuild, ``ReleaseUnusedMemory`` nor ``malloc_trim`` gave it back).
validate bounds each frame (``max_pixels``); :func:`plan` bounds what the positions keep:
frames are decoded largest first, in consecutive groups whose claimed pixels fit a
budget, so the frame at position ``i`` of any run has at most ``budget / (i + 1)``
pixels and all positions together keep at most ``budget * H(n)`` (the harmonic number of
the batch size: 4.7 x the budget at 64 frames), besides one over-budget frame at
position 0 (at most ``max_pixels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from camdet.steps.validate.image_check import ImageCheckError, check_encoded_image

DEFAULT_MAX_BATCH_PIXELS = 4096 * 4096 // 2
"""Half of validate's default ``max_pixels``: one 4K frame or four 1080p frames per run,
a larger frame alone. Measured on the portable server with the fuzz's mix of claimed
sizes, DALI kept ~280 MiB for good with a budget of 16.8 or 33.5 Mpixel and ~140 MiB
with this one; on a CPU server camera batches are a few frames, so splitting costs
nothing measurable."""

_NO_LIMIT = 1 << 62


def claimed_pixels(encoded: np.ndarray | bytes) -> int | None:
    """``width * height`` from a JPEG/PNG header, or None when the header does not parse."""
    data = encoded.tobytes() if isinstance(encoded, np.ndarray) else encoded
    try:
        info = check_encoded_image(data, _NO_LIMIT, _NO_LIMIT)
    except ImageCheckError:
        return None
    return info.width * info.height


def split_by_pixels(pixels: Sequence[int | None], budget: int) -> list[slice]:
    """Consecutive groups of samples whose pixels sum to at most ``budget``.

    A sample over the budget, or whose size is unknown (None), is a group of its own.
    """
    groups: list[slice] = []
    start, total = 0, 0
    for index, count in enumerate(pixels):
        size = budget if count is None else count
        if index > start and total + size > budget:
            groups.append(slice(start, index))
            start, total = index, 0
        total += size
    if len(pixels) > start:
        groups.append(slice(start, len(pixels)))
    return groups


def plan(pixels: Sequence[int | None], budget: int) -> tuple[list[int], list[slice]]:
    """The decoding order (largest first, unknown sizes first) and its groups.

    Returns:
        ``order``: sample indices in decoding order; ``groups``: slices of ``order``,
        one pipeline run each. Sample ``order[k]``'s output is row ``k`` of the runs'
        outputs concatenated in order.
    """
    sizes = [budget if count is None else count for count in pixels]
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])  # stable: ties keep order
    return order, split_by_pixels([sizes[i] for i in order], budget)
