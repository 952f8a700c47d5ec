"""The cameras of a load point: each a thread with its own gRPC client, sending frames.

Without a frame rate a camera sends the next frame as soon as the previous answer
arrives (capacity mode); with one it sends on its own clock and skips the frames whose
time has passed (real-time mode). :func:`worker_main` runs a share of the cameras in a
worker process (:mod:`camdet.perf.load`, :mod:`camdet.perf.multi_gpu`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from camdet.perf.measurement import MAX_ERRORS, CameraLog, LoadPoint, Window


def _request_function(
    point: LoadPoint, url: str, tag: str, frames: Sequence[bytes]
) -> tuple[Callable[[bytes], Any], Any, Any]:
    """One camera's ``detect(frame_bytes)``, and its transport and client to close after."""
    import tritonclient.grpc as grpcclient
    from camdet.client.sequence import sequence_id
    from camdet.perf.pipelines import EnsembleClient, NaiveClient, VideoClient
    from camdet.perf.transport import make_transport

    from camdet.constants import INPUT_HEIGHT, INPUT_WIDTH

    mode, shm, torch_threads = point.mode, point.shm, point.torch_threads
    client = grpcclient.InferenceServerClient(url)
    if mode == "video":
        # Unique per point and process: a sequence left by an earlier point (or run)
        # must not swallow this camera's keyframe.
        camera = f"bench/{os.getpid()}/{time.time_ns()}/{tag}"
        video = VideoClient(client, sequence_id(camera), point.codec)
        return video.detect, video, client  # closing it ends the sequence
    if mode == "ours":
        transport = make_transport(shm, client, tag, max(len(f) for f in frames))
        pipeline: Any = EnsembleClient(client, transport)
    else:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        pipeline = NaiveClient(client)
        image_bytes = 3 * INPUT_HEIGHT * INPUT_WIDTH * pipeline.input_dtype.itemsize
        pipeline.transport = transport = make_transport(shm, client, tag, image_bytes)
    return pipeline.detect, transport, client


def _camera_loop(
    detect: Callable[[bytes], Any],
    frames: Sequence[bytes],
    first: int,
    fps: float | None,
    phase: float,
    start: float,
    stop: float,
    log: CameraLog,
) -> None:
    """Send frames from ``start`` until ``stop`` (wall clock), logging into ``log``."""
    from tritonclient.utils import InferenceServerException

    interval = 1.0 / fps if fps else 0.0
    due = start + phase * interval
    index = first
    while True:
        now = time.time()
        if fps:
            if due > now:
                time.sleep(due - now)
            while time.time() - due >= interval:  # this frame's slot has passed: skip it
                log.dropped.append(due)
                due += interval
        if time.time() >= stop:
            return
        sent = time.time()
        held = False
        try:
            held = detect(frames[index % len(frames)]) is None  # a video decoder kept it
            ok = True
        except (InferenceServerException, ValueError) as exc:
            ok = False
            _keep_error(log, str(exc))
        if held:
            log.held.append(time.time())
        else:
            log.sent.append(sent)
            log.done.append(time.time())
            log.ok.append(ok)
        index += 1
        due += interval


def run_cameras(
    url: str,
    frames: Sequence[bytes],
    point: LoadPoint,
    cameras: Sequence[int],
    start: float | Callable[[], float],
    window: Window,
    ready: Callable[[], None] | None = None,
) -> CameraLog:
    """Run some of a point's cameras in this process and return what they did.

    Args:
        url: Server gRPC endpoint ``host:port``.
        frames: Encoded frames; camera ``c`` starts at frame ``c`` and cycles.
        point: The load point.
        cameras: Indices (in ``range(point.cameras)``) of the cameras run here.
        start: Wall-clock start time, or a callable returning it once every worker is
            ready (see :func:`run_point`).
        window: Warm-up and window lengths.
        ready: Called once the clients are connected and warmed up.

    Returns:
        The merged log of these cameras; ``cpu_s`` covers the window only.
    """
    setups = [_request_function(point, url, str(c), frames) for c in cameras]
    logs = [CameraLog() for _ in cameras]
    # At once: a video camera's lead-in is up to a GOP of frames, one request at a time.
    warming = [
        threading.Thread(
            target=_warm_camera, args=(detect, _lead_in(point, c, frames), log), daemon=True
        )
        for (detect, _, _), c, log in zip(setups, cameras, logs, strict=True)
    ]
    for thread in warming:
        thread.start()
    for thread in warming:
        thread.join()
    if ready is not None:
        ready()
    t0 = start() if callable(start) else start
    window_start, stop = t0 + window.warmup_s, t0 + window.warmup_s + window.duration_s
    threads = [
        threading.Thread(
            target=_camera_loop,
            args=(
                detect,
                frames,
                point.first_frame(c, len(frames)) + point.lead_in(c),
                point.fps,
                c / point.cameras,
                t0,
                stop,
                log,
            ),
            daemon=True,
        )
        for (detect, _, _), c, log in zip(setups, cameras, logs, strict=True)
    ]
    for thread in threads:
        thread.start()
    cpu_start = _cpu_at(window_start)
    cpu_s = _cpu_at(stop) - cpu_start
    for thread in threads:
        thread.join()
    for _, transport, client in setups:
        transport.close()
        client.close()
    merged = CameraLog()
    for log in logs:
        merged.merge(log)
    merged.cpu_s = cpu_s
    return merged


def _lead_in(point: LoadPoint, camera: int, frames: Sequence[bytes]) -> list[bytes]:
    """What a camera sends before its clock starts: its first frame, or its lead-in.

    With no lead-in the camera's loop sends its first frame again (a video stream
    restarts at its keyframe); with one it goes on with the frame after the lead-in.
    """
    first = point.first_frame(camera, len(frames))
    return [frames[(first + i) % len(frames)] for i in range(max(1, point.lead_in(camera)))]


def _warm_camera(detect: Callable[[bytes], Any], frames: Sequence[bytes], log: CameraLog) -> None:
    """Connect and warm one camera's path with its first frames, in order, before the window.

    A refusal here is this camera's alone, as it is in the window (a card with no NVDEC
    decoder left refuses the cameras beyond its limit, perf/RESULTS.md session 12): its
    text is kept and the camera keeps trying in the window, where each of its frames is
    answered or failed-and-counted. The other cameras' numbers still come back.
    """
    from tritonclient.utils import InferenceServerException

    try:
        for frame in frames:
            detect(frame)
    except (InferenceServerException, ValueError) as exc:
        _keep_error(log, f"before the window: {exc}")


def _keep_error(log: CameraLog, message: str) -> None:
    """Keep the first :data:`MAX_ERRORS` distinct error texts (300 characters each)."""
    message = message[:300]
    if message not in log.errors and len(log.errors) < MAX_ERRORS:
        log.errors.append(message)


def _cpu_at(moment: float) -> float:
    """This process's CPU seconds (all threads) at wall-clock ``moment``."""
    time.sleep(max(0.0, moment - time.time()))
    return time.process_time()


def worker_main(
    url: str,
    frames: Sequence[bytes],
    point: LoadPoint,
    cameras: Sequence[int],
    window: Window,
    start: Any,
    go: Any,
    results: Any,
) -> None:
    """Entry point of a worker process: report ready, wait for go, run, send the log.

    Runners that start their own workers (:mod:`camdet.perf.multi_gpu`) use it too.
    """
    try:

        def wait_for_start() -> float:
            go.wait()
            return start.value

        log = run_cameras(
            url, frames, point, cameras, wait_for_start, window, lambda: results.put("ready")
        )
        results.put(log)
    except BaseException as exc:
        results.put(RuntimeError(f"worker failed: {type(exc).__name__}: {exc}"))
        raise
