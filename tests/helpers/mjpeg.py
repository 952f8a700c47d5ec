"""A real MJPEG-over-HTTP camera on loopback: ``multipart/x-mixed-replace`` JPEG parts.

Each connection streams the given JPEG frames from the first one, in a loop, at ``fps``,
the way IP cameras serve ``/video.mjpg``. The server can be stopped (open streams are cut)
and started again on the same port.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOUNDARY = "camdetframe"


class MjpegServer:
    """Serves ``GET /stream`` on 127.0.0.1.

    Args:
        frames: JPEG bytes of each frame.
        fps: Frames per second of each stream.
        content_length: Send ``Content-Length`` with each part (some cameras do not).
        credentials: ``(user, password)`` required by HTTP basic authentication.
    """

    def __init__(
        self,
        frames: list[bytes],
        fps: float,
        content_length: bool = True,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.frames = frames
        self.fps = fps
        self.content_length = content_length
        self.authorization = (
            None
            if credentials is None
            else "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        )
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        """The stream URL."""
        return f"http://127.0.0.1:{self.port}/stream"

    def start(self) -> MjpegServer:
        """Listen (on the previous port after a stop) and serve in a thread."""
        self._stopping = threading.Event()  # a fresh one: streams of a past run stay cut
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open stream."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/stream":
                    self.send_error(404)
                    return
                wanted = server.authorization
                if wanted is not None and self.headers.get("Authorization") != wanted:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server._stream(self.wfile)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _stream(self, out) -> None:
        stopping = self._stopping
        start = time.monotonic()
        index = 0
        while not stopping.is_set():
            jpeg = self.frames[index % len(self.frames)]
            header = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
            if self.content_length:
                header += f"Content-Length: {len(jpeg)}\r\n"
            out.write(header.encode() + b"\r\n" + jpeg + b"\r\n")
            out.flush()
            index += 1
            delay = start + index / self.fps - time.monotonic()
            if delay > 0:
                stopping.wait(delay)
