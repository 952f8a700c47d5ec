"""The view's web application (aiohttp): the page, one WebSocket per page, the key check.

It runs on the ingest's own event loop. Per page, one WebSocket carries everything:

- to the page, text: ``hello`` (the cameras) once, then ``stats`` once a second (cameras,
  servers, Triton's per-model times); binary: a picture, 2 bytes of camera index (big
  endian) followed by the JPEG;
- from the page, text: ``{"type": "watch", "cameras": [...]}``: the cameras it shows now.
  Only watched cameras are rendered (:class:`~camdet.client.view.sink.ViewSink`), and
  statistics and Triton's metrics are only gathered while a page is open.

Exposure follows ``camdet serve``'s rules: loopback by default; another address needs a
key, which every request must carry as header ``camdet-view-key``, cookie
``camdet_view_key`` or query parameter ``key`` (the page's link; it is swapped for the
cookie at once). WebSockets from another origin are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from camdet.client.streamer import Ingest
from camdet.client.view.options import ViewSettings
from camdet.client.view.sink import ViewSink
from camdet.client.view.stats import CameraRates, TritonRates

logger = logging.getLogger(__name__)

KEY_HEADER = "camdet-view-key"
KEY_COOKIE = "camdet_view_key"
KEY_QUERY = "key"
STATS_PERIOD_S = 1.0
METRICS_PERIOD_S = 2.0

_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}


def _has_key(request: web.Request, key: str) -> bool:
    offered = (
        request.headers.get(KEY_HEADER)
        or request.cookies.get(KEY_COOKIE)
        or request.query.get(KEY_QUERY)
        or ""
    )
    return hmac.compare_digest(offered.encode(), key.encode())


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


class View:
    """The page of one running :class:`~camdet.client.streamer.Ingest`.

    Args:
        ingest: The ingest shown (its accounting, tracks, servers, cameras).
        sink: The ingest's view sink (one of its sinks).
        settings: Address, key, rate and size.
    """

    def __init__(self, ingest: Ingest, sink: ViewSink, settings: ViewSettings) -> None:
        self.ingest = ingest
        self.sink = sink
        self.settings = settings
        self.camera_ids = [c.id for c in ingest.cameras]
        self._crossings = ingest.tracking.crossings if ingest.tracking is not None else dict
        sink.counts = self._crossings
        sink.count_line = ingest.options.count_line
        self._sockets: set[web.WebSocketResponse] = set()
        self._stats = ""
        self._stats_task: asyncio.Task[None] | None = None
        self._rates = CameraRates()
        self._triton = {url: TritonRates() for url in settings.metrics_urls}
        self._triton_rows: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/ws", self._websocket)
        return app

    async def start(self) -> str:
        """Listen; the page's URL (with a free port chosen if the port was 0)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.address.host, self.settings.address.port)
        await site.start()
        port = self._runner.addresses[0][1]
        host = self.settings.address.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{port}/"
        return self.url

    async def close(self) -> None:
        """Close every page's socket and stop listening."""
        for socket in list(self._sockets):
            await socket.close()
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        key = self.settings.key
        if key is not None and not _has_key(request, key):
            raise web.HTTPUnauthorized(
                text=f"camdet view: add ?{KEY_QUERY}=<the view key> to the address "
                f"(or send header {KEY_HEADER})\n"
            )
        if key is not None and KEY_QUERY in request.query:
            # Swap the key in the address for a cookie, so it leaves the address bar.
            rest = {k: v for k, v in request.query.items() if k != KEY_QUERY}
            target = request.rel_url.with_query(rest)
            response = web.HTTPFound(str(target))
            response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="Strict")
            raise response
        return await handler(request)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return await self._static_file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return await self._static_file(request.match_info["name"])

    async def _static_file(self, name: str) -> web.StreamResponse:
        if name not in _STATIC:
            raise web.HTTPNotFound()
        body = resources.files("camdet.client.view").joinpath("static", name).read_bytes()
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return web.Response(body=body, content_type=_STATIC[name], headers=headers)

    async def _state(self, request: web.Request) -> web.StreamResponse:
        await self._refresh(scrape=not self._stats)
        return web.Response(text=self._stats, content_type="application/json")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            raise web.HTTPForbidden(text="camdet view: WebSocket from another origin\n")
        socket = web.WebSocketResponse(heartbeat=20.0, max_msg_size=1 << 16)
        await socket.prepare(request)
        self._sockets.add(socket)
        if self._stats_task is None or self._stats_task.done():
            self._stats_task = asyncio.create_task(self._stats_loop())
        watched: set[str] = set()
        sender = asyncio.create_task(self._send_pictures(socket, watched))
        try:
            hello = {
                "type": "hello",
                "cameras": self.camera_ids,
                "fps": self.settings.fps,
                "width": self.settings.max_width,
            }
            await socket.send_str(json.dumps(hello))
            if self._stats:
                await socket.send_str(self._stats)
            async for message in socket:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._on_message(message.data, watched)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            for camera_id in watched:
                self.sink.unwatch(camera_id)
            self._sockets.discard(socket)
        return socket

    def _on_message(self, data: str, watched: set[str]) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "watch":
            return
        wanted = {c for c in message.get("cameras", []) if c in self.camera_ids}
        for camera_id in wanted - watched:
            self.sink.watch(camera_id)
        for camera_id in watched - wanted:
            self.sink.unwatch(camera_id)
        watched.clear()
        watched.update(wanted)

    async def _send_pictures(self, socket: web.WebSocketResponse, watched: set[str]) -> None:
        sent: dict[str, int] = {}
        index = {camera_id: i for i, camera_id in enumerate(self.camera_ids)}
        tick = min(0.05, 0.5 / self.settings.fps)
        while not socket.closed:
            for camera_id in list(watched):
                picture = self.sink.picture(camera_id)
                if picture is None or sent.get(camera_id) == picture.seq:
                    continue
                sent[camera_id] = picture.seq
                await socket.send_bytes(index[camera_id].to_bytes(2, "big") + picture.jpeg)
            await asyncio.sleep(tick)

    async def _stats_loop(self) -> None:
        """While a page is open: statistics every second, Triton's metrics every two."""
        scraped = 0.0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5)) as session:
            while self._sockets:
                scrape = time.monotonic() - scraped >= METRICS_PERIOD_S
                if scrape:
                    scraped = time.monotonic()
                await self._refresh(scrape, session)
                for socket in list(self._sockets):
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await socket.send_str(self._stats)
                await asyncio.sleep(STATS_PERIOD_S)

    async def _refresh(self, scrape: bool, session: aiohttp.ClientSession | None = None) -> None:
        if scrape:
            if session is None:
                timeout = aiohttp.ClientTimeout(total=1.5)
                async with aiohttp.ClientSession(timeout=timeout) as own:
                    await self._scrape(own)
            else:
                await self._scrape(session)
        snapshot = self.ingest.accounting.snapshot()
        cameras = self._rates.rows(snapshot, self._crossings(), self.ingest.camera_errors())
        for row in cameras:
            row["watched"] = self.sink.watchers(row["id"])
        servers = [{"url": u, "up": up} for u, up in self.ingest.servers_up().items()]
        stats = {
            "type": "stats",
            "time": time.time(),
            "cameras": cameras,
            "servers": servers,
            "triton": list(self._triton_rows.values()),
            "rendered": self.sink.rendered,
        }
        self._stats = json.dumps(stats)

    async def _scrape(self, session: aiohttp.ClientSession) -> None:
        results = await asyncio.gather(
            *(self._scrape_one(session, url) for url in self._triton), return_exceptions=True
        )
        for url, outcome in zip(self._triton, results, strict=True):
            if isinstance(outcome, BaseException):
                self._triton_rows[url] = {"url": url, "ok": False, "error": str(outcome) or "down"}
            else:
                self._triton_rows[url] = {"url": url, "ok": True, "models": outcome}

    async def _scrape_one(self, session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
        async with session.get(url) as response:
            response.raise_for_status()
            text = await response.text()
        return self._triton[url].update(text)
