"""The client's Prometheus endpoint: per-camera frame counters and latency percentiles.

Values are read from :meth:`Accounting.snapshot` at scrape time, so the endpoint shows
exactly what the accounting holds (no second set of counters to drift apart).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from camdet.client.accounting import Accounting
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "camdet_client"

_COUNTERS = (
    ("captured", "Frames taken from the camera."),
    ("answered", "Frames whose detections came back."),
    ("dropped", "Frames discarded before sending (stale in real-time mode, or at shutdown)."),
    ("failed", "Frames whose request failed."),
    ("damaged", "Answered frames the server flagged as damaged (decoded with concealed errors)."),
)


class IngestCollector(Collector):
    """Exports an :class:`Accounting` (and the current camera -> server assignment).

    Args:
        accounting: The counters.
        assignment: Returns the server URL serving each camera now (None: none up).
        crossings: Returns the count line's crossings per camera and direction
            (:meth:`camdet.client.tracks.Tracking.crossings`).
    """

    def __init__(
        self,
        accounting: Accounting,
        assignment: Callable[[], dict[str, str | None]] = dict,
        crossings: Callable[[], dict[str, dict[str, int]]] = dict,
    ) -> None:
        self.accounting = accounting
        self.assignment = assignment
        self.crossings = crossings

    def collect(self) -> Iterator[Metric]:
        """One sample per camera of every metric."""
        snapshot = self.accounting.snapshot()
        for name, documentation in _COUNTERS:
            family = CounterMetricFamily(
                f"{PREFIX}_frames_{name}", documentation, labels=["camera"]
            )
            for camera, totals in snapshot.items():
                family.add_metric([camera], getattr(totals, name))
            yield family
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_frames_in_flight", "Frames captured and not yet resolved.", labels=["camera"]
        )
        reconnects = CounterMetricFamily(
            f"{PREFIX}_camera_reconnects", "Camera connections re-opened.", labels=["camera"]
        )
        latency = GaugeMetricFamily(
            f"{PREFIX}_latency_seconds",
            "End-to-end latency (capture to answer) over the recent window.",
            labels=["camera", "quantile"],
        )
        lag = GaugeMetricFamily(
            f"{PREFIX}_lag_seconds",
            "How far behind live the camera's latest answer was (capture to answer).",
            labels=["camera"],
        )
        for camera, totals in snapshot.items():
            if totals.lag_s is not None:
                lag.add_metric([camera], totals.lag_s)
            in_flight.add_metric([camera], totals.in_flight)
            reconnects.add_metric([camera], totals.reconnects)
            for quantile, value in (("0.5", totals.latency_p50_s), ("0.99", totals.latency_p99_s)):
                if value is not None:
                    latency.add_metric([camera, quantile], value)
        yield from (in_flight, reconnects, latency, lag)
        yield from self._assignment()
        yield from self._crossings()

    def _crossings(self) -> Iterator[Metric]:
        counts = self.crossings()
        if not counts:
            return
        family = CounterMetricFamily(
            f"{PREFIX}_line_crossings",
            "Tracks that crossed the count line (in: onto its right-hand side, x1,y1 -> x2,y2).",
            labels=["camera", "direction"],
        )
        for camera, by_direction in counts.items():
            for direction, value in by_direction.items():
                family.add_metric([camera, direction], value)
        yield family

    def _assignment(self) -> Iterator[Metric]:
        server = GaugeMetricFamily(
            f"{PREFIX}_camera_server",
            "1 for the server that serves the camera now.",
            labels=["camera", "server"],
        )
        for camera, url in self.assignment().items():
            if url is not None:
                server.add_metric([camera, url], 1)
        yield server


@dataclass
class MetricsServer:
    """A running metrics endpoint.

    Attributes:
        port: The port it listens on.
        host: The address it listens on.
    """

    port: int
    host: str
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """The scrape URL."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_metrics(
    collector: IngestCollector, port: int = 0, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``/metrics`` for the collector on its own registry.

    Args:
        collector: What to export.
        port: TCP port (0: any free one; see :attr:`MetricsServer.port`).
        host: Address to bind (``0.0.0.0`` to let other machines scrape).
    """
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(port, host, registry)
    return MetricsServer(server.server_port, host, server, thread)
