"""Many cameras, one event loop: read, send to the ``detect`` ensemble, account, deliver.

Per camera: a reader thread fills a bounded :class:`~camdet.client.reader.FrameBuffer`;
a pump coroutine takes frames from it and sends each as one async gRPC request, with at
most ``max_in_flight`` requests outstanding. Answers are correlated to their camera and
frame by the request's own coroutine and go to the tracker and the sinks in the order the
frames were sent: requests in flight together may be answered out of order (the server
runs several instances), and the tracker only moves forward in time, so an answer that
comes early waits for its predecessors to end (answered or failed). H.264/HEVC access
units go to ``detect_video`` instead, in order, as the camera's
:class:`~camdet.client.sequence.VideoSequence`; answers are correlated by frame id.

Real-time mode keeps latency bounded when the server is slower than the cameras: the
buffer holds the newest frame only (older ones are dropped and counted; for access units:
the rest of the GOP), and frames that waited longer than ``max_frame_age_s`` are dropped
before sending (access units: with the rest of their GOP). Capacity mode drops
nothing: the reader waits for room. While no server is up, frames wait (real-time: and
are superseded); requests that fail count as failed.

Stopping (:meth:`Ingest.stop`, e.g. on SIGINT/SIGTERM): readers stop, buffered and in-flight
frames are drained for up to ``drain_timeout_s``, the rest is counted, sinks are closed.
:meth:`Ingest.abandon` (a second signal) or the timeout cuts the drain short: frames not
sent yet are dropped, frames whose request is on the wire stay *in flight* (their answers
are not awaited). The stop itself never counts a frame as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from camdet.client.accounting import Accounting, CameraTotals
from camdet.client.config import CameraConfig, check_unique
from camdet.client.ingest_options import IngestOptions, Mode
from camdet.client.reader import CameraReader, CapturedFrame, FrameBuffer
from camdet.client.sequence import SequenceSettings, VideoSequence, sequence_ids
from camdet.client.servers import (
    NO_TLS_FILES,
    Endpoint,
    ServerPool,
    TlsFiles,
    is_server_failure,
)
from camdet.client.sinks import Result, Sink
from camdet.client.sources import AvSource, open_source
from camdet.client.tracks import Tracking

from camdet.contract import (
    ENSEMBLE,
    VIDEO_ENSEMBLE,
    frame_input,
    is_damaged,
    parse_result,
    requested_outputs,
)

logger = logging.getLogger(__name__)


@dataclass
class _Camera:
    config: CameraConfig
    buffer: FrameBuffer
    reader: CameraReader


class Ingest:
    """Streams cameras to the ensemble on one or more servers.

    Args:
        cameras: The cameras (unique ids).
        servers: Server gRPC URLs (``host:port``, ``grpcs://host:port`` for TLS);
            cameras are spread over them and fail over when one is down.
        sinks: Where answered frames go.
        options: Streaming options.
        tls: Certificate files for TLS servers.

    Raises:
        ValueError: On no cameras, repeated camera ids, or no or a malformed server URL.
        camdet.client.sources.SourceError: If a camera's file or folder does not exist.
    """

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        servers: Sequence[str],
        sinks: Sequence[Sink] = (),
        options: IngestOptions | None = None,
        tls: TlsFiles = NO_TLS_FILES,
    ) -> None:
        self.cameras = check_unique(cameras)
        if not self.cameras:
            raise ValueError("no cameras")
        self.endpoints = [Endpoint.parse(url) for url in servers]
        if not self.endpoints:
            raise ValueError("no server URLs")
        self.sinks = list(sinks)
        self.options = options = options or IngestOptions()
        self.tls = tls
        # Sources are built (not opened) now, so a missing file fails here.
        pass_video = not options.decode_on_client
        self._sources = {c.id: open_source(c, options.timeouts, pass_video) for c in self.cameras}
        self._sequence_ids = sequence_ids(self._sources)
        self.accounting = Accounting([c.id for c in self.cameras])
        tracked = options.track or options.count_line is not None
        self.tracking = Tracking(count_line=options.count_line) if tracked else None
        self._quality = {c.id: c.jpeg_quality or options.jpeg_quality for c in self.cameras}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._abandoning: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._abandon_requested = threading.Event()
        self._pool: ServerPool | None = None
        self._last_assignment: dict[str, str | None] = dict.fromkeys(self._sources)
        self._readers: dict[str, CameraReader] = {}

    def stop(self) -> None:
        """Begin a clean shutdown (any thread; idempotent)."""
        self._stop_requested.set()
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: nothing to stop
                self._loop.call_soon_threadsafe(self._stopping.set)

    def abandon(self) -> None:
        """Stop without waiting for the drain (any thread; idempotent).

        Frames not sent yet are dropped; frames whose request is on the wire stay in
        flight; none counts as failed. :meth:`run` still returns the totals.
        """
        self._abandon_requested.set()
        self.stop()
        if self._loop is not None and self._abandoning is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: nothing to stop
                self._loop.call_soon_threadsafe(self._abandoning.set)

    def never_captured(self) -> dict[str, str]:
        """Why each camera that has captured no frame has none (empty when all have).

        After :meth:`run`: the camera's last connection error, else what else happened.
        """
        reasons = {}
        for camera_id, totals in self.accounting.snapshot().items():
            if totals.captured:
                continue
            reader = self._readers.get(camera_id)
            if reader is None:
                reasons[camera_id] = "never started"
            elif reader.last_error is not None:
                reasons[camera_id] = f"never opened: {reader.last_error}"
            elif reader.finished and not self._stop_requested.is_set():
                reasons[camera_id] = "opened, but its stream ended without a frame"
            else:
                reasons[camera_id] = "no frame arrived before the stop"
        return reasons

    def assignment(self) -> dict[str, str | None]:
        """The server URL serving each camera now (None: no server is up).

        Before :meth:`run` every camera maps to None; after it, to its last server.
        """
        if self._pool is None:
            return dict(self._last_assignment)
        routes = {c.id: self._pool.route(c.id) for c in self.cameras}
        return {cid: None if e is None else e.url for cid, e in routes.items()}

    def servers_up(self) -> dict[str, bool]:
        """Whether each server is up (ready at its last probe, no failure since) right now."""
        pool = self._pool
        return {e.url: pool is not None and pool.is_up(e) for e in self.endpoints}

    def camera_errors(self) -> dict[str, str | None]:
        """Each started camera's last connection error (None: none yet)."""
        return {camera_id: reader.last_error for camera_id, reader in self._readers.items()}

    async def run(self) -> dict[str, CameraTotals]:
        """Stream until every camera has ended or :meth:`stop` is called.

        Returns:
            Final per-camera totals (``in_flight`` is 0 after a clean drain).
        """
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._abandoning = asyncio.Event()
        if self._stop_requested.is_set():
            self._stopping.set()
        if self._abandon_requested.is_set():
            self._abandoning.set()
        try:
            async with ServerPool(
                self.endpoints, self.tls, self.options.server_probe, models=self._models()
            ) as pool:
                self._pool = pool
                await self._stream(pool, [self._start_camera(c) for c in self.cameras])
        finally:
            self._last_assignment = self.assignment()
            self._pool = None
            await asyncio.to_thread(self._close_sinks)
        return self.accounting.snapshot()

    def _models(self) -> tuple[str, ...]:
        """The ensembles a server must serve: ``detect_video`` only for video cameras."""
        video = any(isinstance(s, AvSource) and s.pass_video for s in self._sources.values())
        return (ENSEMBLE, VIDEO_ENSEMBLE) if video else (ENSEMBLE,)

    def _start_camera(self, config: CameraConfig) -> _Camera:
        buffer = FrameBuffer(
            self.options.buffer_size,
            self.options.mode is Mode.REALTIME,
            self._loop,
            self.options.video_queue_size,
        )
        source = self._sources[config.id]
        reader = CameraReader(config, source, buffer, self.accounting, self.options.reconnect)
        self._readers[config.id] = reader
        reader.start()
        return _Camera(config, buffer, reader)

    async def _stream(self, pool: ServerPool, cameras: list[_Camera]) -> None:
        pumps = [asyncio.create_task(self._pump(pool, camera)) for camera in cameras]
        all_done = asyncio.gather(*pumps, return_exceptions=True)
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([all_done, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not all_done.done():
            await self._drain(pool, cameras, pumps)
        for camera, outcome in zip(cameras, await all_done, strict=True):
            if isinstance(outcome, Exception):
                logger.error("camera %s: sender failed: %r", camera.config.id, outcome)
        await asyncio.to_thread(self._join_readers, cameras)

    async def _drain(
        self, pool: ServerPool, cameras: list[_Camera], pumps: list[asyncio.Task[None]]
    ) -> None:
        logger.info("stopping: draining buffered and in-flight frames")
        for camera in cameras:
            camera.reader.stop()
        if self.options.mode is Mode.CAPACITY:
            # A reader waiting for room holds a frame it already captured: let it hand
            # that over before closing the buffer, so capacity mode drops nothing.
            await asyncio.to_thread(self._wait_readers, cameras, self.options.drain_timeout_s)
        for camera in cameras:
            camera.buffer.close()
        await pool.stop_waiting()
        abandoning = asyncio.create_task(self._abandoning.wait())
        drained = asyncio.gather(*pumps, return_exceptions=True)
        try:
            await asyncio.wait(
                [drained, abandoning],
                timeout=self.options.drain_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            abandoning.cancel()
        pending = [task for task in pumps if not task.done()]
        if pending:
            logger.info("stopping: %d cameras' frames left in flight", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for camera in cameras:
            left = camera.buffer.take_all()
            if left:
                self.accounting.dropped(camera.config.id, len(left))

    @staticmethod
    def _wait_readers(cameras: list[_Camera], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for camera in cameras:
            camera.reader.join(max(0.0, deadline - time.monotonic()))

    def _join_readers(self, cameras: list[_Camera]) -> None:
        deadline = time.monotonic() + self.options.timeouts.read_s + 1.0
        for camera in cameras:
            camera.reader.stop()
            camera.buffer.close()
            if not camera.reader.join(max(0.0, deadline - time.monotonic())):
                logger.warning("camera %s: reader still blocked at exit", camera.config.id)

    def _sequence(self, pool: ServerPool, camera_id: str) -> VideoSequence:
        settings = SequenceSettings(self.options.thresholds, self.options.request_timeout_s)
        return VideoSequence(
            camera_id,
            self._sequence_ids[camera_id],
            pool,
            lambda frame: self._route(pool, frame),
            self.accounting,
            self._deliver,
            settings,
        )

    async def _pump(self, pool: ServerPool, camera: _Camera) -> None:
        """Send the camera's frames, at most ``max_in_flight`` at a time.

        Access units go one at a time, in order, through the camera's video sequence.
        """
        slots = asyncio.Semaphore(self.options.max_in_flight)
        requests: set[asyncio.Task[None]] = set()
        video = self._sequence(pool, camera.config.id)
        # The previous request's turn: done once it has ended (answer delivered, or failed).
        turn: asyncio.Future[None] | None = None
        try:
            while True:
                await slots.acquire()
                frame = await camera.buffer.get()
                if frame is not None and frame.video is not None:
                    slots.release()
                    await video.send(frame)
                    continue
                endpoint = None if frame is None else await self._route(pool, frame)
                if endpoint is None:
                    slots.release()
                    if frame is None:
                        break
                    continue
                after, turn = turn, asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self._send(pool, endpoint, frame, after, turn))
                requests.add(task)
                task.add_done_callback(requests.discard)
                task.add_done_callback(lambda _: slots.release())
            await asyncio.gather(*requests)
            await video.end()
        except asyncio.CancelledError:  # a stop cut the drain short
            video.leave()
            for task in requests:
                task.cancel()
            await asyncio.gather(*requests, return_exceptions=True)
            raise

    async def _route(self, pool: ServerPool, frame: CapturedFrame) -> Endpoint | None:
        """The server for a frame, or None if the frame was dropped or failed instead."""
        try:
            endpoint = await pool.wait_route(frame.camera_id)
        except asyncio.CancelledError:
            self.accounting.dropped(frame.camera_id)  # held here, never sent
            raise
        if endpoint is None:
            self.accounting.failed(frame.camera_id)
            return None
        age = time.monotonic() - frame.captured_mono
        if self.options.mode is Mode.REALTIME and age > self.options.max_frame_age_s:
            self.accounting.dropped(frame.camera_id)
            return None
        return endpoint

    async def _send(
        self,
        pool: ServerPool,
        endpoint: Endpoint,
        frame: CapturedFrame,
        after: asyncio.Future[None] | None,
        turn: asyncio.Future[None],
    ) -> None:
        """One request; the frame ends answered or failed, whatever happens.

        Args:
            pool: The servers.
            endpoint: The server this frame goes to.
            frame: The frame.
            after: Done when the camera's previous request has ended (None: no request
                before this one). This one's answer is delivered only then, and this
                one ends only then, answered or failed: a failure must not let a later
                answer overtake an earlier one still in flight.
            turn: Set done here when this request has ended.
        """
        try:
            result = await self._request(pool, endpoint, frame)
            if after is not None:
                # asyncio.wait, not await: a stop that cancels this task must not cancel
                # the predecessor's turn, which its own task still sets.
                await asyncio.wait([after])
            if result is not None:
                self._deliver(result)
        finally:
            if not turn.done():
                turn.set_result(None)

    async def _request(
        self, pool: ServerPool, endpoint: Endpoint, frame: CapturedFrame
    ) -> Result | None:
        """The frame's answer, counted as answered; None: it failed (counted as failed)."""
        camera_id = frame.camera_id
        sending = False
        try:
            payload = frame.encoded
            if payload is None:
                payload = await asyncio.to_thread(frame.jpeg, self._quality[camera_id])
            sending = True
            response = await pool.client(endpoint).infer(
                ENSEMBLE,
                frame_input(payload),
                outputs=requested_outputs(),
                parameters=dict(self.options.thresholds) or None,
                client_timeout=self.options.request_timeout_s,
            )
            detections = parse_result(response)
            damaged = is_damaged(response)
        except asyncio.CancelledError:
            # A stop cut the drain short: not sent yet, dropped; on the wire, still in flight.
            if not sending:
                self.accounting.dropped(camera_id)
            raise
        except Exception as error:
            self.accounting.failed(camera_id)
            if is_server_failure(error):
                # One line per outage comes from the pool; not one per frame.
                pool.report_failure(endpoint, error)
                logger.debug("camera %s frame %d failed: %s", camera_id, frame.index, error)
            else:
                logger.warning("camera %s frame %d failed: %s", camera_id, frame.index, error)
            return None
        latency = time.monotonic() - frame.captured_mono
        self.accounting.answered(camera_id, latency + frame.capture_delay_s, damaged)
        return Result(frame, detections, latency, endpoint.url, damaged)

    def _deliver(self, result: Result) -> None:
        if self.tracking is not None:
            result = self.tracking.apply(result)
        for sink in self.sinks:
            try:
                sink.write(result)
            except Exception:
                logger.exception(
                    "sink %s failed on %s", type(sink).__name__, result.frame.camera_id
                )

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("closing sink %s failed", type(sink).__name__)


class BackgroundIngest:
    """Runs an :class:`Ingest` on its own event loop thread (embedding, tests).

    Use as a context manager; leaving the block stops the ingest cleanly.
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.totals: dict[str, CameraTotals] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def _run(self) -> None:
        try:
            self.totals = asyncio.run(self.ingest.run())
        except BaseException as error:  # reported by stop()/wait() in the caller's thread
            self.error = error

    def __enter__(self) -> BackgroundIngest:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the ingest to end by itself (finite sources); True if it has."""
        self._thread.join(timeout_s)
        if self.error is not None:
            raise self.error
        return not self._thread.is_alive()

    def stop(self, timeout_s: float = 60.0) -> dict[str, CameraTotals]:
        """Stop cleanly and return the final totals.

        Raises:
            TimeoutError: If the ingest did not end within ``timeout_s``.
        """
        self.ingest.stop()
        if not self.wait(timeout_s):
            raise TimeoutError(f"ingest did not stop within {timeout_s} s")
        assert self.totals is not None
        return self.totals
