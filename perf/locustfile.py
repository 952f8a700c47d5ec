r"""locust load profile: every user is a camera streaming JPEG frames to ``detect`` over gRPC.

    locust -f perf/locustfile.py --headless -u 16 -r 4 -t 2m --stop-timeout 10 \\
        --host grpc://localhost:8001 --camera-fps 5,10 \\
        --input-data perf-data/detect.json --csv out/locust --camera-report out/cameras.json

Each user is one camera with its own gRPC connection and its own frame rate
(``--camera-fps`` is cycled over the cameras: ``5,10`` gives 5, 10, 5, 10, ... fps). A
camera sends one frame per request (the server batches across cameras) on its own clock;
when an answer comes back after the next frames were due, those frames are dropped, as a
live camera would, so latency stays bounded. Locust's statistics are reported per camera
(request name ``camera-000``, ``camera-001``, ...): latency percentiles, failures and
throughput; ``--camera-report`` adds each camera's sent, dropped and failed counts.

Frames come from the ensemble's perf_analyzer input-data JSON (``--input-data``, see
``python -m camdet.perf.input_data``), so locust, perf_analyzer and ``camdet bench`` send
the same bytes; without it, synthetic 720p/1080p frames are rendered at start.

Give ``--stop-timeout`` so that at the end each camera finishes its request in flight
rather than being killed inside a gRPC call; ``--request-timeout`` bounds every call.
"""

from __future__ import annotations

# grpc's blocking calls must yield to gevent (locust's users are greenlets): this has to
# run before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from locust import User, events, task  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from camdet.contract import ENSEMBLE, frame_input, parse_result, requested_outputs  # noqa: E402

DEFAULT_FPS = "5"
_GOLDEN = 0.6180339887  # successive multiples mod 1 spread evenly over [0, 1)
_frames: list[bytes] = []
_camera_numbers = itertools.count()
_cameras: dict[str, dict[str, Any]] = {}


class _Client(grpcclient.InferenceServerClient):
    """A Triton gRPC client whose ``close`` runs once.

    tritonclient's ``__del__`` closes the channel again, and under gRPC's gevent mode every
    close decrements gRPC's channel count. A close during interpreter shutdown can then
    wait forever on a lock that a gevent pool thread, stopped by the shutdown, still
    holds: locust printed its summary and never exited (1 run in 25 here). So every
    client is closed exactly once while the interpreter is whole (``on_stop``, or the
    ``quit`` listener for a camera whose ``on_stop`` did not run) and ``__del__`` finds
    nothing left to close.
    """

    _closed = False

    def close(self) -> None:
        """Close the channel, once."""
        if not self._closed:
            self._closed = True
            super().close()


_clients: list[_Client] = []


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--input-data",
        default=os.environ.get("CAMDET_INPUT_DATA", ""),
        help="perf_analyzer input-data JSON of the ensemble to take frames from",
    )
    parser.add_argument(
        "--camera-fps",
        default=DEFAULT_FPS,
        help="frames per second of each camera; a comma list is cycled over the cameras",
    )
    parser.add_argument(
        "--synthetic-frames", type=int, default=8, help="frames to render without --input-data"
    )
    parser.add_argument(
        "--camera-report", default="", help="JSON file for per-camera sent/dropped/failed"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="seconds before a request fails"
    )


@events.test_start.add_listener
def _load_frames(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options.input_data:
        from camdet.perf.input_data import read_encoded_frames

        _frames[:] = read_encoded_frames(Path(options.input_data))
    else:
        from camdet.perf.frames import synthetic_frames

        _frames[:] = [f.data for f in synthetic_frames(options.synthetic_frames)]


@events.quitting.add_listener
def _write_camera_report(environment: Any, **_: Any) -> None:
    path = environment.parsed_options.camera_report
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(dict(sorted(_cameras.items())), indent=2) + "\n")


@events.quit.add_listener
def _close_clients(**_: Any) -> None:
    # Fired after the users stopped, before locust exits: the last moment gRPC can close.
    for client in _clients:
        client.close()


def grpc_target(host: str) -> str:
    """``host:port`` from locust's ``--host`` (``grpc://`` prefix optional)."""
    return host.removeprefix("grpc://").rstrip("/")


class Camera(User):
    """One camera: its own connection, frame rate and clock; one frame per request."""

    host = os.environ.get("CAMDET_URL", "localhost:8001")

    def on_start(self) -> None:
        """Pick this camera's number, frame rate and first frame; connect."""
        number = next(_camera_numbers)
        rates = [float(v) for v in self.environment.parsed_options.camera_fps.split(",") if v]
        self.name = f"camera-{number:03d}"
        self.interval = 1.0 / rates[number % len(rates)]
        self.frame_index = number
        # Cameras are not synchronised: spread their clocks over one frame interval.
        self.due = time.monotonic() + (number * _GOLDEN) % 1.0 * self.interval
        self.log = _cameras.setdefault(
            self.name, {"fps": 1.0 / self.interval, "sent": 0, "dropped": 0, "failed": 0}
        )
        self.client = _Client(grpc_target(self.host))
        _clients.append(self.client)
        self.timeout_s = self.environment.parsed_options.request_timeout
        gevent.sleep(max(0.0, self.due - time.monotonic()))

    def on_stop(self) -> None:
        """Close the connection."""
        self.client.close()

    def wait_time(self) -> float:
        """Seconds until the next frame is due; frames whose slot has passed are dropped."""
        self.due += self.interval
        now = time.monotonic()
        while now - self.due >= self.interval:
            self.due += self.interval
            self.log["dropped"] += 1
        return max(0.0, self.due - now)

    @task
    def send_frame(self) -> None:
        """Send the next frame through the ensemble and report it under this camera."""
        frame = _frames[self.frame_index % len(_frames)]
        self.frame_index += 1
        started = time.perf_counter()
        error: Exception | None = None
        detections = 0
        try:
            result = self.client.infer(
                ENSEMBLE,
                frame_input(frame),
                outputs=requested_outputs(),
                client_timeout=self.timeout_s,
            )
            detections = len(parse_result(result))
        except InferenceServerException as exc:
            error = exc
            self.log["failed"] += 1
        self.log["sent"] += 1
        self.environment.events.request.fire(
            request_type="grpc",
            name=self.name,
            response_time=(time.perf_counter() - started) * 1e3,
            response_length=len(frame),
            exception=error,
            context={"detections": detections},
        )
