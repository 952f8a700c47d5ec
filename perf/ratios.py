"""The bench's headline: ratios of the pipelines' throughput and CPU per frame, per repeat."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from typing import Any

from camdet.perf.measurement import PointResult
from camdet.perf.stats import best, ratio


def side_by_side_ratios(results: Sequence[PointResult]) -> list[dict[str, Any]]:
    """Ours / bare and ours / naive per camera count and transport, two ways.

    - ``ours/bare``, ``ours/naive``: measured throughput (bare: its best batch size);
    - ``ours/bare cpu``, ``ours/naive cpu``: CPU milliseconds per frame of the other
      pipeline over ours (clients + server, when the server's CPU was measured), i.e.
      the throughput ratio on a machine whose cores they had to themselves: on a shared
      host the other tenants' load moves throughput far more than CPU time per frame;
    - with the video modes, ``video/ours`` and ``video/ours cpu`` (the same cameras'
      frames as JPEGs) and ``video/segment`` (its best batch), likewise.

    Each ratio is taken within one repeat (the points measured back to back), then
    summarized over repeats as median, min and max. The bare throughput each repeat's
    ``ours/bare`` divides by is :func:`bare_reference`'s point, which ``bench.png`` draws.
    """
    per_repeat = ratios_per_repeat(results)
    rows = []
    for (name, cameras, shm), values in sorted(per_repeat.items()):
        finite = [v for v in values if v == v]
        if finite:
            rows.append(
                {
                    "name": name,
                    "cameras": cameras,
                    "shm": shm,
                    "median": statistics.median(finite),
                    "min": min(finite),
                    "max": max(finite),
                    "repeats": len(finite),
                }
            )
    return rows


def ratios_per_repeat(results: Sequence[PointResult]) -> dict[tuple[str, int, str], list[float]]:
    """Every ratio of every repeat: ``{(name, cameras, shm): [value per repeat, ...]}``.

    Values are in repeat order and may be NaN (a pipeline without a frame);
    :func:`side_by_side_ratios` summarizes the finite ones.
    """
    per_repeat: dict[tuple[str, int, str], list[float]] = {}
    for repeat in sorted({r.repeat for r in results}):
        for key, value in _repeat_ratios([r for r in results if r.repeat == repeat]):
            per_repeat.setdefault(key, []).append(value)
    return per_repeat


def bare_reference(results: Sequence[PointResult]) -> dict[int, PointResult]:
    """The bare point ``ours/bare`` divides by in each repeat: that repeat's fastest loop.

    Which loop (OpenCV or DALI, batch size) is fastest can change from one repeat to the
    next on a shared host, so the reference is per repeat, not per loop.
    """
    reference: dict[int, PointResult] = {}
    for r in results:
        if r.mode != "bare" or r.throughput_fps != r.throughput_fps:  # NaN: no frame
            continue
        if r.repeat not in reference or r.throughput_fps > reference[r.repeat].throughput_fps:
            reference[r.repeat] = r
    return dict(sorted(reference.items()))


def _cpu_ms_per_frame(result: PointResult) -> float:
    """Client + server CPU per frame (the server's is 0 for bare, NaN if unmeasured)."""
    server = 0.0 if result.mode == "bare" else result.server_cpu_ms_per_frame
    return result.client_cpu_ms_per_frame + server


def _repeat_ratios(batch: Sequence[PointResult]) -> Iterator[tuple[tuple[str, int, str], float]]:
    yield from _jpeg_ratios(batch)
    yield from _video_ratios(batch)


def _video_ratios(batch: Sequence[PointResult]) -> Iterator[tuple[tuple[str, int, str], float]]:
    """Ratios of ``video`` to ``ours`` (the clip's frames as JPEGs) and to ``segment``."""
    segment = best(r.throughput_fps for r in batch if r.mode == "segment")
    ours = {r.cameras: r for r in batch if r.mode == "ours" and r.fps is None and r.shm == "none"}
    for video in (r for r in batch if r.mode == "video" and r.fps is None):
        key = (video.cameras, video.shm)
        if video.cameras in ours:
            jpeg = ours[video.cameras]
            yield ("video/ours", *key), ratio(video.throughput_fps, jpeg.throughput_fps)
            yield ("video/ours cpu", *key), ratio(_cpu_ms_per_frame(jpeg), _cpu_ms_per_frame(video))
        yield ("video/segment", *key), ratio(video.throughput_fps, segment)


def _jpeg_ratios(batch: Sequence[PointResult]) -> Iterator[tuple[tuple[str, int, str], float]]:
    bares = [r for r in batch if r.mode == "bare"]
    reference = bare_reference(bares)
    bare = best(r.throughput_fps for r in reference.values())
    bare_cpu = min((_cpu_ms_per_frame(r) for r in bares), default=float("nan"))
    naive = {(r.cameras, r.shm): r for r in batch if r.mode == "naive" and r.fps is None}
    for ours in (r for r in batch if r.mode == "ours" and r.fps is None):
        key = (ours.cameras, ours.shm)
        ours_cpu = _cpu_ms_per_frame(ours)
        yield ("ours/bare", *key), ratio(ours.throughput_fps, bare)
        yield ("ours/bare cpu", *key), ratio(bare_cpu, ours_cpu)
        if key in naive:
            yield ("ours/naive", *key), ratio(ours.throughput_fps, naive[key].throughput_fps)
            yield ("ours/naive cpu", *key), ratio(_cpu_ms_per_frame(naive[key]), ours_cpu)
