"""The view's command-line options (``camdet ingest``/``camdet demo``) and settings.

Nothing here imports the web server: it is imported when a view is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from camdet.client.streamer import Ingest
from camdet.client.view.sink import ViewSink

from camdet.serving.security import Exposure

if TYPE_CHECKING:
    from camdet.client.view.app import View

DEFAULT_TRITON_METRICS_PORT = 8002
KEY_ENV = "CAMDET_VIEW_KEY"

ViewOption = Annotated[
    str | None,
    typer.Option(
        "--view",
        metavar="[ADDRESS:]PORT",
        help="Serve a live page of the cameras (annotated frames, counters, the server's "
        "health and per-model times) here, e.g. 8080 (loopback) or 0.0.0.0:8080 (needs "
        "--view-key).",
        show_default=False,
    ),
]
ViewKeyOption = Annotated[
    str | None,
    typer.Option(
        envvar=KEY_ENV,
        help="Key the page asks for (header camdet-view-key, cookie or ?key=); required when "
        "--view is not on loopback. Prefer the environment variable: arguments show in ps.",
        show_default=False,
    ),
]
ViewFpsOption = Annotated[
    float, typer.Option(min=0.1, max=30.0, help="Most pictures per second per watched camera.")
]
ViewWidthOption = Annotated[
    int, typer.Option(min=64, max=3840, help="Widest picture sent to the page, pixels.")
]
MetricsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--triton-metrics",
        metavar="URL",
        help="Triton metrics endpoint(s) the page reads per-model queue and compute times "
        f"from. Default: each server's host, port {DEFAULT_TRITON_METRICS_PORT}.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class ViewAddress:
    """Where the page is served: ``[ADDRESS:]PORT``.

    Attributes:
        host: Address to bind (loopback unless told otherwise).
        port: TCP port (0: any free one).
    """

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ViewAddress:
        """``PORT``, ``ADDRESS:PORT`` or ``[IPv6]:PORT``.

        Raises:
            ValueError: If the port is not a number in 0..65535.
        """
        host, sep, port = text.strip().rpartition(":")
        if not sep:
            host = "127.0.0.1"
        host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
        if not port.isdigit() or int(port) > 65535:
            raise ValueError(f"--view {text!r}: give [ADDRESS:]PORT, e.g. 8080 or 0.0.0.0:8080")
        return cls(host, int(port))

    @property
    def public(self) -> bool:
        """Whether other machines can reach it (the server's rule, ``Exposure.public``)."""
        return Exposure(self.host).public


@dataclass(frozen=True)
class ViewSettings:
    """How the view is served.

    Attributes:
        address: Where it listens.
        key: The key every request must carry (required on a public address).
        fps: Most pictures per second per watched camera.
        max_width: Widest picture, pixels.
        metrics_urls: Triton metrics endpoints (``http://host:8002/metrics``) to read.
    """

    address: ViewAddress
    key: str | None = None
    fps: float = 5.0
    max_width: int = 640
    metrics_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.address.public and not self.key:
            raise ValueError(
                f"--view {self.address.host}: other machines can reach this address; set a "
                "key (--view-key or CAMDET_VIEW_KEY) or serve on loopback"
            )
        if self.key is not None and (len(self.key) < 8 or not self.key.isprintable()):
            raise ValueError("the view key must be at least 8 printable characters")


def default_metrics_urls(servers: Sequence[str]) -> tuple[str, ...]:
    """Triton's metrics endpoint on each server's host, on the default port 8002."""
    urls = []
    for server in servers:
        host = server.partition("://")[2] or server
        host = host.rsplit(":", 1)[0]
        urls.append(f"http://{host}:{DEFAULT_TRITON_METRICS_PORT}/metrics")
    return tuple(dict.fromkeys(urls))


def view_settings(
    view: str | None,
    key: str | None,
    fps: float,
    width: int,
    metrics: Sequence[str] | None,
    servers: Sequence[str],
) -> ViewSettings | None:
    """The view's settings from the options (None without ``--view``).

    Raises:
        ValueError: On a malformed address, or a public address without a key.
    """
    if view is None:
        return None
    urls = tuple(metrics) if metrics else default_metrics_urls(servers)
    return ViewSettings(ViewAddress.parse(view), key or None, fps, width, urls)


def attach_view(ingest: Ingest, settings: ViewSettings | None) -> View | None:
    """The page of an ingest built with :func:`view sinks <camdet.client.cli._sinks>`."""
    if settings is None:
        return None
    from camdet.client.view.app import View

    sink = next(s for s in ingest.sinks if isinstance(s, ViewSink))
    return View(ingest, sink, settings)
