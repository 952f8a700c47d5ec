"""The ports a server listens on, and who holds one that is taken.

A second ``camdet serve`` on ports in use used to report the *first* server's readiness
as its own and die seconds later in a wall of gRPC output (issue #25). The ports are
checked before the server starts, and readiness is accepted only from the process that
was started.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Ports:
    """Ports the server listens on (on the address of its :class:`.security.Exposure`)."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> Ports:
        """Three ports that were free a moment ago (bind port 0)."""
        return cls(*(_free_port() for _ in range(3)))

    def named(self) -> dict[str, int]:
        """``{"http": 8000, "grpc": 8001, "metrics": 8002}``: the option names' stems."""
        return {"http": self.http, "grpc": self.grpc, "metrics": self.metrics}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def busy_port(ports: Ports, address: str) -> str | None:
    """Why the server cannot listen on ``address``, in one line, or None if it can.

    E.g. ``port 8001 (--grpc-port) on 127.0.0.1 is in use by tritonserver (pid 4242):
    stop it or choose another port``.
    """
    for name, port in ports.named().items():
        if not _can_bind(address, port):
            holder = listener(port)
            by = f" by {holder[1]} (pid {holder[0]})" if holder else ""
            return (
                f"port {port} (--{name}-port) on {address} is in use{by}: "
                "stop it or choose another port"
            )
    return None


def _can_bind(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As servers bind: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def listener(port: int) -> tuple[int, str] | None:
    """``(pid, process name)`` listening on TCP ``port``, or None if it cannot be told."""
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
            if connection.pid is None:
                return None
            try:
                return connection.pid, psutil.Process(connection.pid).name()
            except psutil.Error:
                return connection.pid, "an exited process"
    return None
