"""Server URLs: one async gRPC client each, health watching, camera assignment, fail-over.

Each camera prefers the servers in its rendezvous-hash order (stable: adding or removing
a server moves only the cameras that hash to it) and is served by the first one that is
up. A server is marked down when a request to it fails at the connection level; a watcher
probes it (``is_server_ready`` and the ensemble's readiness) with exponential backoff
and marks it up again, which sends its cameras back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from camdet.client.backoff import Backoff, BackoffPolicy
from tritonclient.utils import InferenceServerException

from camdet.contract import ENSEMBLE, VIDEO_ENSEMBLE

logger = logging.getLogger(__name__)

# Status codes that say "this server cannot answer now" rather than "this frame is bad".
_SERVER_DOWN_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "CANCELLED"})
# gRPC's own reconnect backoff grows to 120 s by default; a restarted server must be
# found within seconds.
_RECONNECT_BACKOFF_MS = (250, 2000)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS to the servers (all optional; system roots when none).

    Attributes:
        root_certificates: CA certificates that sign the servers' certificates.
        private_key: Client key, for mutual TLS.
        certificate_chain: Client certificate chain, for mutual TLS.
    """

    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None


NO_TLS_FILES = TlsFiles()
PROBE_BACKOFF = BackoffPolicy(0.25, 2.0)
"""Probes of a server that is down: from 0.25 s up to every 2 s."""


@dataclass(frozen=True)
class Endpoint:
    """One server's gRPC endpoint.

    Attributes:
        address: ``host:port``.
        tls: Whether to use TLS.
    """

    address: str
    tls: bool = False

    @classmethod
    def parse(cls, text: str, tls: bool = False) -> Endpoint:
        """``host:port``, ``grpc://host:port`` or ``grpcs://host:port`` (TLS).

        Raises:
            ValueError: On another scheme or a missing port.
        """
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        if scheme not in ("", "grpc", "grpcs"):
            raise ValueError(f"server URL {text!r}: use host:port, grpc:// or grpcs://")
        address = rest.rstrip("/")
        if not address.rpartition(":")[2].isdigit():
            raise ValueError(f"server URL {text!r} has no port")
        return cls(address, tls or scheme == "grpcs")

    @property
    def url(self) -> str:
        """The endpoint as written in results and tables."""
        return f"grpcs://{self.address}" if self.tls else self.address


def rendezvous_order(camera_id: str, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """The endpoints in the camera's preference order (highest rendezvous hash first)."""

    def weight(endpoint: Endpoint) -> bytes:
        return hashlib.blake2b(f"{endpoint.address}\0{camera_id}".encode(), digest_size=8).digest()

    return sorted(endpoints, key=weight, reverse=True)


def is_server_failure(error: BaseException) -> bool:
    """Whether a request error means the server (not the frame) is the problem."""
    if not isinstance(error, InferenceServerException):
        return False
    status = str(error.status() or "")
    return status.removeprefix("StatusCode.") in _SERVER_DOWN_CODES


def channel_args() -> list[tuple[str, int]]:
    """The default channel options of tritonclient plus a short reconnect backoff."""
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[0]),
        ("grpc.min_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[1]),
    ]


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _hint(model: str) -> str:
    if model == VIDEO_ENSEMBLE:
        return " (a server without a video decoder: decode on the client)"
    return ""


class ServerPool:
    """The servers, their health, and which one serves each camera.

    Use ``async with``; clients and watchers live inside the block.

    Args:
        endpoints: The servers (at least one).
        tls: Certificate files for TLS endpoints.
        probe_backoff: Delays between probes of a server that is down.
        check_interval_s: Delay between probes of a server that is up.
        probe_timeout_s: Deadline of each probe RPC.
        models: The models a server must have ready to be up (``detect``, and
            ``detect_video`` when cameras pass H.264/HEVC through).

    Attributes:
        last_error: Why each endpoint's last failed probe failed.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        tls: TlsFiles = NO_TLS_FILES,
        probe_backoff: BackoffPolicy = PROBE_BACKOFF,
        check_interval_s: float = 2.0,
        probe_timeout_s: float = 2.0,
        models: Sequence[str] = (ENSEMBLE,),
    ) -> None:
        if not endpoints:
            raise ValueError("need at least one server URL")
        if len(set(endpoints)) != len(endpoints):
            raise ValueError(f"server URLs repeat: {[e.url for e in endpoints]}")
        self.endpoints = list(endpoints)
        self._tls = tls
        self._probe_backoff = probe_backoff
        self._check_interval_s = check_interval_s
        self._probe_timeout_s = probe_timeout_s
        self.models = tuple(models)
        self._clients: dict[Endpoint, grpcaio.InferenceServerClient] = {}
        self._up = dict.fromkeys(self.endpoints, False)
        self._wake = {e: asyncio.Event() for e in self.endpoints}
        self._changed = asyncio.Condition()
        self._watchers: list[asyncio.Task[None]] = []
        self._stop_waiting = False
        self.last_error: dict[Endpoint, str] = {}

    async def __aenter__(self) -> ServerPool:
        for endpoint in self.endpoints:
            self._clients[endpoint] = grpcaio.InferenceServerClient(
                endpoint.address,
                ssl=endpoint.tls,
                root_certificates=_path(self._tls.root_certificates),
                private_key=_path(self._tls.private_key),
                certificate_chain=_path(self._tls.certificate_chain),
                channel_args=channel_args(),
            )
        for endpoint, ready in zip(
            self.endpoints, await asyncio.gather(*map(self._probe, self.endpoints)), strict=True
        ):
            self._up[endpoint] = ready
            if not ready:
                logger.warning(
                    "server %s: %s; waiting for it", endpoint.url, self.last_error[endpoint]
                )
        self._watchers = [asyncio.create_task(self._watch(e)) for e in self.endpoints]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in self._clients.values():
            await client.close()

    def is_up(self, endpoint: Endpoint) -> bool:
        """Whether the endpoint was ready at its last probe and has not failed since."""
        return self._up[endpoint]

    def client(self, endpoint: Endpoint) -> grpcaio.InferenceServerClient:
        """The async client of an endpoint."""
        return self._clients[endpoint]

    def route(self, camera_id: str) -> Endpoint | None:
        """The server that serves the camera now: its first preference that is up."""
        return next((e for e in rendezvous_order(camera_id, self.endpoints) if self._up[e]), None)

    async def wait_route(self, camera_id: str) -> Endpoint | None:
        """The camera's server, waiting while every server is down.

        Returns:
            The endpoint, or None once :meth:`stop_waiting` was called and none is up.
        """
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._stop_waiting or self.route(camera_id) is not None
            )
        return self.route(camera_id)

    async def stop_waiting(self) -> None:
        """From now on :meth:`wait_route` does not wait (shutting down)."""
        self._stop_waiting = True
        async with self._changed:
            self._changed.notify_all()

    def report_failure(self, endpoint: Endpoint, error: BaseException) -> None:
        """A request to ``endpoint`` failed at the server level: mark it down."""
        if self._up[endpoint]:
            logger.warning("server %s marked down: %s", endpoint.url, error)
            self._up[endpoint] = False
            self._wake[endpoint].set()

    async def _probe(self, endpoint: Endpoint) -> bool:
        client = self._clients[endpoint]
        timeout = self._probe_timeout_s
        try:
            if not await client.is_server_ready(client_timeout=timeout):
                self.last_error[endpoint] = "server not ready"
                return False
            for model in self.models:
                if not await client.is_model_ready(model, client_timeout=timeout):
                    self.last_error[endpoint] = f"model {model!r} not ready{_hint(model)}"
                    return False
        except InferenceServerException as error:
            self.last_error[endpoint] = str(error)
            return False
        return True

    async def _watch(self, endpoint: Endpoint) -> None:
        backoff = Backoff(self._probe_backoff)
        while True:
            up = self._up[endpoint]
            delay = self._check_interval_s if up else backoff.next_delay()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake[endpoint].wait(), delay)
            self._wake[endpoint].clear()
            ready = await self._probe(endpoint)
            if ready:
                backoff.reset()
            if ready != self._up[endpoint]:
                logger.warning("server %s is %s", endpoint.url, "up" if ready else "down")
                self._up[endpoint] = ready
                async with self._changed:
                    self._changed.notify_all()
