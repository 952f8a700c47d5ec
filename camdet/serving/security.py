"""What a served Triton exposes: listen address, gRPC TLS, and header-guarded admin APIs.

Triton listens on every interface by default and serves its administrative APIs (load
and unload models, read configs, register shared memory, statistics, tracing, logging
settings) to anyone who reaches a port. :class:`Exposure` turns the three knobs camdet
offers into Triton 2.51 flags:

- ``address``: where HTTP, gRPC and metrics listen (loopback unless told otherwise);
- :class:`GrpcTls`: TLS, optionally mutual, on gRPC (Triton's HTTP has no TLS: put a
  TLS proxy in front of it, see the README's Security section);
- :class:`RestrictedApis`: the admin APIs answer only requests that carry a header
  ``key: value`` (``--grpc-restricted-protocol`` / ``--http-restricted-api``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
ADMIN_APIS = (
    "model-repository",
    "model-config",
    "shared-memory",
    "statistics",
    "trace",
    "logging",
)
"""The APIs :class:`RestrictedApis` guards by default: everything but health,
metadata and inference, which cameras and load balancers need."""
RESTRICTABLE_APIS = ("health", "metadata", "inference", *ADMIN_APIS)
"""Every API group Triton 2.51 can restrict."""
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
"""Triton 2.51 expects the restricted key as gRPC metadata ``triton-grpc-protocol-<key>``."""


@dataclass(frozen=True)
class GrpcTls:
    """TLS on the gRPC endpoint.

    Attributes:
        certificate: PEM server certificate (chain); its names must match the host
            clients dial.
        private_key: PEM key of the certificate.
        client_ca: PEM CA certificates that sign client certificates: when set, TLS is
            mutual and a client without such a certificate is refused.
    """

    certificate: Path
    private_key: Path
    client_ca: Path | None = None

    def __post_init__(self) -> None:
        for path in (self.certificate, self.private_key, self.client_ca):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file {path} does not exist")

    def args(self) -> list[str]:
        """Triton's flags for this TLS setting."""
        args = [
            f"--grpc-server-cert={self.certificate}",
            f"--grpc-server-key={self.private_key}",
        ]
        if self.client_ca is None:
            return ["--grpc-use-ssl=true", *args]
        return ["--grpc-use-ssl-mutual=true", *args, f"--grpc-root-cert={self.client_ca}"]


@dataclass(frozen=True)
class RestrictedApis:
    """API groups that answer only requests carrying the header ``key: value``.

    Attributes:
        key: Header name (gRPC metadata keys are lower case, so it is lower-cased).
        value: The secret the header must carry.
        apis: The API groups guarded (see :data:`RESTRICTABLE_APIS`).
    """

    key: str
    value: str
    apis: tuple[str, ...] = ADMIN_APIS

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.key.strip().lower())
        if not self.key or not self.value:
            raise ValueError("a restricted-API header needs a key and a value (KEY=VALUE)")
        if any(c in self.key + self.value for c in ",:= \t"):
            raise ValueError("restricted-API header key and value must not contain , : = or space")
        unknown = sorted(set(self.apis) - set(RESTRICTABLE_APIS))
        if unknown or not self.apis:
            raise ValueError(f"unknown APIs {unknown}; choose from {', '.join(RESTRICTABLE_APIS)}")

    @classmethod
    def parse(cls, header: str, apis: tuple[str, ...] = ADMIN_APIS) -> RestrictedApis:
        """From ``KEY=VALUE`` (the form of ``camdet serve --restrict-apis``).

        Raises:
            ValueError: If ``header`` is not ``KEY=VALUE`` or either part is unusable.
        """
        key, sep, value = header.partition("=")
        if not sep:
            raise ValueError(f"restricted-API header {key!r}: write it as KEY=VALUE")
        return cls(key, value, apis)

    @property
    def http_headers(self) -> dict[str, str]:
        """What an HTTP client sends to be let in."""
        return {self.key: self.value}

    @property
    def grpc_headers(self) -> dict[str, str]:
        """What a gRPC client sends to be let in (``headers=`` of tritonclient calls).

        Triton's gRPC endpoint looks for the key behind its own prefix.
        """
        return {f"{GRPC_HEADER_PREFIX}{self.key}": self.value}

    def args(self) -> list[str]:
        """Triton's flags: the same guard on gRPC and HTTP."""
        spec = f"{','.join(self.apis)}:{self.key}={self.value}"
        return [f"--grpc-restricted-protocol={spec}", f"--http-restricted-api={spec}"]


@dataclass(frozen=True)
class Exposure:
    """Where the server listens and how it is guarded.

    Attributes:
        address: Address HTTP, gRPC and metrics bind to: loopback by default,
            ``0.0.0.0`` (or one interface's address) to serve other machines.
        grpc_tls: TLS on gRPC, or None for plaintext.
        restricted: Header guard of the admin APIs, or None for none.
    """

    address: str = LOOPBACK
    grpc_tls: GrpcTls | None = None
    restricted: RestrictedApis | None = None

    @property
    def local_host(self) -> str:
        """The host this machine dials to reach the server (loopback for wildcards)."""
        return "localhost" if self.address in (ALL_INTERFACES, "::", LOOPBACK) else self.address

    @property
    def public(self) -> bool:
        """Whether other machines can reach the ports."""
        return self.address not in (LOOPBACK, "localhost", "::1")

    def args(self) -> list[str]:
        """Triton's flags for this exposure."""
        args = [
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
        ]
        if self.grpc_tls is not None:
            args += self.grpc_tls.args()
        if self.restricted is not None:
            args += self.restricted.args()
        return args


LOCAL = Exposure()
"""Loopback only, plaintext, no guard: a laptop."""


def exposure_from_options(
    address: str,
    certificate: Path | None = None,
    private_key: Path | None = None,
    client_ca: Path | None = None,
    restricted_header: str | None = None,
) -> Exposure:
    """The :class:`Exposure` of ``camdet serve``'s options.

    Raises:
        ValueError: If only one of certificate and key is given, a client CA comes
            without them, a file is missing, or the header is not ``KEY=VALUE``.
    """
    tls = None
    if certificate is not None or private_key is not None or client_ca is not None:
        if certificate is None or private_key is None:
            raise ValueError("gRPC TLS needs both a certificate and its private key")
        tls = GrpcTls(certificate, private_key, client_ca)
    restricted = RestrictedApis.parse(restricted_header) if restricted_header else None
    return Exposure(address, tls, restricted)


def endpoint_lines(exposure: Exposure, http: int, grpc: int, metrics: int) -> list[str]:
    """What ``camdet serve`` prints: each endpoint, how it is guarded, and warnings."""
    host = exposure.address
    tls = exposure.grpc_tls
    grpc_scheme = "grpcs://" if tls is not None else ""
    mutual = " (mutual TLS)" if tls is not None and tls.client_ca is not None else ""
    lines = [
        f"  gRPC    {grpc_scheme}{host}:{grpc}{mutual}",
        f"  HTTP    http://{host}:{http}",
        f"  metrics http://{host}:{metrics}/metrics",
    ]
    if exposure.restricted is not None:
        apis = ", ".join(exposure.restricted.apis)
        lines.append(f"  {apis}: only with header {exposure.restricted.key!r}")
    if exposure.public and tls is None:
        lines.append("  warning: gRPC is plaintext on a public address (--grpc-tls-cert/-key)")
    if exposure.public and exposure.restricted is None:
        lines.append("  warning: admin APIs are open to the network (--restrict-apis KEY=VALUE)")
    return lines
