"""Client CPU per answered frame with the view closed and open, at N cameras.

Runs ``camdet ingest``'s pipeline in this process (looping H.264 clips, paced like
cameras, passing through undecoded, tracked) against a running server, with the view
on. Phases alternate *closed* (no page) and *open* (a page in another process watching
every camera over the WebSocket, as the browser's grid does): closed, open, open, closed.
CPU is this process's (``time.process_time``: every thread, FFmpeg's included), per
answered frame. Run ``python -m camdet.client.view.bench --server HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from camdet.client.config import CameraConfig
from camdet.client.ingest_options import IngestOptions
from camdet.client.streamer import Ingest
from camdet.client.view.app import View
from camdet.client.view.options import ViewAddress, ViewSettings
from camdet.client.view.sink import ViewSink


async def watch(url: str, seconds: float) -> None:
    """Watch every camera of the page at ``url`` for ``seconds`` (the other process)."""
    pictures = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}ws") as socket:
        hello = await socket.receive_json()
        await socket.send_json({"type": "watch", "cameras": hello["cameras"]})
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                message = await socket.receive(timeout=left)
            except TimeoutError:
                break
            pictures += message.type == aiohttp.WSMsgType.BINARY
    print(pictures)


async def _phase(ingest: Ingest, url: str | None, seconds: float) -> tuple[float, int, int]:
    """``(cpu_s, answered, pictures)`` of one phase; a watcher process when ``url``."""
    watcher = None
    if url is not None:
        argv = [sys.executable, "-m", "camdet.client.view.bench", "--watch", url]
        argv += ["--seconds", str(seconds + 1.0)]
        watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        await asyncio.sleep(1.0)  # connected and watching before the phase starts
    answered = sum(t.answered for t in ingest.accounting.snapshot().values())
    cpu = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu
    answered = sum(t.answered for t in ingest.accounting.snapshot().values()) - answered
    pictures = 0
    if watcher is not None:
        out, _ = await asyncio.to_thread(watcher.communicate)
        pictures = int(out.strip() or 0)
    return cpu, answered, pictures


async def _bench(server: str, cameras: int, seconds: float, folder: Path) -> None:
    from camdet.scenes import write_clip

    clip = folder / "cam.mp4"
    write_clip(clip, 5, 100, 1280, 720, fps=10)
    configs = [CameraConfig(f"cam{c:02d}", str(clip), loop=True) for c in range(cameras)]
    sink = ViewSink()
    ingest = Ingest(configs, [server], [sink], IngestOptions())
    view = View(ingest, sink, ViewSettings(ViewAddress("127.0.0.1", 0)))
    url = await view.start()
    task = asyncio.create_task(ingest.run())
    await asyncio.sleep(5.0)  # warm up: every camera streaming
    results: dict[str, list[tuple[float, int, int]]] = {"closed": [], "open": []}
    for name in ("closed", "open", "open", "closed"):
        results[name].append(await _phase(ingest, url if name == "open" else None, seconds))
    ingest.stop()
    await task
    await view.close()
    for name, phases in results.items():
        cpu = sum(p[0] for p in phases)
        answered = sum(p[1] for p in phases)
        pictures = sum(p[2] for p in phases)
        print(
            f"view {name:6}: {1000 * cpu / max(answered, 1):6.2f} ms CPU per answered frame, "
            f"{answered / (len(phases) * seconds):5.1f} frames/s answered, "
            f"{pictures / (len(phases) * seconds):5.1f} pictures/s to the page, "
            f"{100 * cpu / (len(phases) * seconds):5.1f}% of a core"
        )


def main(
    server: Annotated[str, typer.Option(help="Server gRPC URL.")] = "localhost:8001",
    cameras: Annotated[int, typer.Option(min=1, help="Cameras (looping 720p H.264 clips).")] = 16,
    seconds: Annotated[float, typer.Option(help="Length of each phase, seconds.")] = 15.0,
    watch_url: Annotated[
        str | None, typer.Option("--watch", help="Internal: be the watching page.", hidden=True)
    ] = None,
) -> None:
    """Print client CPU per answered frame, view closed versus open."""
    if watch_url is not None:
        asyncio.run(watch(watch_url, seconds))
        return
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_bench(server, cameras, seconds, Path(folder)))


if __name__ == "__main__":
    typer.run(main)
