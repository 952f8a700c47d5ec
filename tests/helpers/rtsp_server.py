"""A real RTSP server on loopback for the ingest tests: GStreamer's, serving H.264/HEVC MP4 clips.

Run by Debian's ``/usr/bin/python3`` (``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``,
``gstreamer1.0-plugins-good/-bad``), not by the project's virtualenv::

    /usr/bin/python3 tests/helpers/rtsp_server.py --port 8554 \
        --clip /cam0=a.mp4 --clip /cam1=hevc:b.mp4

A clip is H.264 unless its path carries the ``hevc:`` prefix. Parameter sets travel only in
the SDP (``sprop-parameter-sets``/``sprop-vps``...), as many IP cameras send them.

Every client session gets its own pipeline (the factory is not shared), so each session
streams its clip from frame 0, paced at the clip's frame rate, and ends at the clip's end.
``--tls-cert``/``--tls-key`` serve RTSPS instead. The server prints ``READY <port>`` once
it listens and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINES = {
    "h264": "( filesrc location={path} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )",
    "hevc": "( filesrc location={path} ! qtdemux ! h265parse ! rtph265pay name=pay0 pt=96 )",
}


def clip_pipeline(spec_path: str) -> str:
    """The launch line of a clip: ``PATH`` (H.264) or ``hevc:PATH``."""
    codec, sep, path = spec_path.partition(":")
    if not sep or codec not in PIPELINES:
        codec, path = "h264", spec_path
    return PIPELINES[codec].format(path=path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line arguments: port, clips per mount point, optional TLS files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1.")
    parser.add_argument(
        "--clip",
        action="append",
        required=True,
        help="MOUNT=PATH or MOUNT=hevc:PATH, e.g. /cam0=/tmp/a.mp4.",
    )
    parser.add_argument("--tls-cert", help="PEM certificate: serve RTSPS.")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert.")
    return parser.parse_args(argv)


def make_server(args: argparse.Namespace) -> GstRtspServer.RTSPServer:
    """An RTSP server with one unshared media factory per clip."""
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.clip:
        mount, path = spec.split("=", 1)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(clip_pipeline(path))
        factory.set_shared(False)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        if args.tls_cert:
            factory.set_permissions(anonymous_permissions())
        mounts.add_factory(mount, factory)
    if args.tls_cert:
        server.set_auth(tls_auth(args.tls_cert, args.tls_key))
    return server


def tls_auth(cert: str, key: str) -> GstRtspServer.RTSPAuth:
    """RTSPS with no user check: TLS encrypts, anonymous clients may play."""
    auth = GstRtspServer.RTSPAuth()
    auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(cert, key))
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "anonymous")
    auth.set_default_token(token)
    return auth


def anonymous_permissions() -> GstRtspServer.RTSPPermissions:
    """Access and construct rights on a factory for the ``anonymous`` role."""
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_role_from_structure(
        Gst.Structure.new_from_string(
            "anonymous, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        )
    )
    return permissions


def main(argv: list[str]) -> int:
    """Serve until SIGTERM/SIGINT."""
    args = parse_args(argv)
    Gst.init(None)
    server = make_server(args)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
