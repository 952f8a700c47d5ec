"""A real RTSP camera: GStreamer's RTSP server (``rtsp_server.py``, run by Debian's python3)."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.helpers.clips import Clip

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
GST_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)


def rtsp_mounts(clips: Sequence[Clip] | Mapping[str, Clip]) -> dict[str, str]:
    """Mount points of clips: ``/cam0``, ``/cam1``... for a list, ``/<name>`` for a dict."""
    named = clips.items() if isinstance(clips, Mapping) else enumerate(clips)
    prefix = "/" if isinstance(clips, Mapping) else "/cam"
    return {f"{prefix}{name}": clip.rtsp_source for name, clip in named}


def require_gst_rtsp() -> None:
    """Skip (fail on CI) when Debian's GStreamer RTSP server is not installed."""
    probe = (
        subprocess.run(
            [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
            capture_output=True,
            check=False,
        )
        if Path(SYSTEM_PYTHON).exists()
        else None
    )
    if probe is not None and probe.returncode == 0:
        return
    message = f"GStreamer RTSP server missing: apt-get install {GST_PACKAGES}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """``tests/helpers/rtsp_server.py`` in a process: start, stop, start again on the same port.

    Args:
        clips: Mount point (``/cam0``) -> clip path.
        tls: ``(certificate, key)`` PEM files to serve RTSPS instead.
    """

    def __init__(
        self, clips: Mapping[str, Path | str], tls: tuple[Path, Path] | None = None
    ) -> None:
        self.clips = clips
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        """The camera URL of a mount point."""
        return f"{'rtsps' if self.tls else 'rtsp'}://127.0.0.1:{self.port}{mount}"

    def start(self, timeout_s: float = 15.0) -> RtspServer:
        """Start and wait until it prints READY and accepts connections.

        Raises:
            RuntimeError: If the process exits or is not ready in time.
        """
        argv = [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), "--port", str(self.port)]
        argv += [arg for mount, path in self.clips.items() for arg in ("--clip", f"{mount}={path}")]
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump_lines, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        output = []
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=0.1))
            if self.process.poll() is not None:
                raise RuntimeError(f"RTSP server exited: {''.join(output)}")
            if any(line.startswith("READY") for line in output) and _accepts(self.port):
                return self
        self.stop()
        raise RuntimeError(f"RTSP server not ready in {timeout_s} s: {''.join(output)}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _pump_lines(stream, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
