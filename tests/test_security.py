"""What a served Triton exposes: loopback by default, mutual TLS on gRPC, guarded admin APIs.

One real portable tritonserver started by ``camdet.serving.server.serve`` with certificates this
test makes (``tests/helpers/certificates.py``); clients are the real ``camdet ingest`` command,
tritonclient over gRPC and plain HTTP, all on loopback.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from camdet.serving.security import (
    ADMIN_APIS,
    LOOPBACK,
    Exposure,
    GrpcTls,
    RestrictedApis,
    endpoint_lines,
    exposure_from_options,
)
from camdet.serving.server import Ports, TritonServer, serve
from tests.helpers.certificates import Pki, make_pki

pytestmark = [pytest.mark.server]

HEADER_KEY = "camdet-admin"
SECRET = "s3cret-for-tests"
FRAMES = 6


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def guarded(
    repository: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """A server on loopback with mutual TLS on gRPC and the admin APIs behind a header."""
    exposure = Exposure(
        LOOPBACK,
        GrpcTls(pki.server_cert, pki.server_key, client_ca=pki.ca),
        RestrictedApis(HEADER_KEY, SECRET),
    )
    workdir = tmp_path_factory.mktemp("guarded")
    with serve(repository, Ports.free(), portable=True, workdir=workdir, exposure=exposure) as s:
        yield s


def tls_client(server: TritonServer, pki: Pki, cert: Path | None, key: Path | None):
    return grpcclient.InferenceServerClient(
        server.grpc_url,
        ssl=True,
        root_certificates=str(pki.ca),
        private_key=None if key is None else str(key),
        certificate_chain=None if cert is None else str(cert),
    )


# ---------------------------------------------------------------------------- arguments


def test_default_exposure_binds_every_endpoint_to_loopback() -> None:
    args = Exposure().args()
    assert args == [
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
    ]


def test_restricted_header_becomes_one_flag_per_protocol() -> None:
    restricted = RestrictedApis.parse("X-Admin=abc")
    spec = f"{','.join(ADMIN_APIS)}:x-admin=abc"
    assert restricted.args() == [
        f"--grpc-restricted-protocol={spec}",
        f"--http-restricted-api={spec}",
    ]
    assert restricted.http_headers == {"x-admin": "abc"}
    assert restricted.grpc_headers == {"triton-grpc-protocol-x-admin": "abc"}


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("no-value", "write it as KEY=VALUE"),
        ("=abc", "needs a key and a value"),
        ("key=a,b", "must not contain"),
    ],
)
def test_bad_restricted_headers_are_refused(header: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RestrictedApis.parse(header)


def test_tls_needs_certificate_and_key(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both a certificate and its private key"):
        exposure_from_options(LOOPBACK, certificate=pki.server_cert)
    mutual = exposure_from_options("0.0.0.0", pki.server_cert, pki.server_key, pki.ca)
    assert "--grpc-use-ssl-mutual=true" in mutual.args()
    assert f"--grpc-root-cert={pki.ca}" in mutual.args()


def test_public_plaintext_unguarded_serving_is_warned_about() -> None:
    lines = "\n".join(endpoint_lines(Exposure("0.0.0.0"), 1, 2, 3))
    assert "gRPC is plaintext on a public address" in lines
    assert "admin APIs are open to the network" in lines
    assert "warning" not in "\n".join(endpoint_lines(Exposure(), 1, 2, 3))


# ------------------------------------------------------------------------ served, guarded


def test_server_listens_on_loopback_only(guarded: TritonServer) -> None:
    assert guarded.process is not None
    ports = {guarded.ports.http, guarded.ports.grpc, guarded.ports.metrics}
    listening = [
        c.laddr
        for c in psutil.Process(guarded.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
    ]
    assert {addr.port for addr in listening} == ports
    assert all(_is_loopback(addr.ip) for addr in listening), listening


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    # gRPC binds 127.0.0.1 through a dual-stack socket: ::ffff:127.0.0.1.
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_grpc_refuses_plaintext_and_clients_without_a_trusted_certificate(
    guarded: TritonServer, pki: Pki
) -> None:
    attempts = {
        "plaintext": grpcclient.InferenceServerClient(guarded.grpc_url),
        "no client certificate": tls_client(guarded, pki, None, None),
        "another CA's certificate": tls_client(guarded, pki, pki.stranger_cert, pki.stranger_key),
    }
    for what, client in attempts.items():
        with client, pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=5.0)
            pytest.fail(f"{what}: the server answered")
    with tls_client(guarded, pki, pki.client_cert, pki.client_key) as client:
        assert client.is_server_ready(client_timeout=5.0)


def test_camdet_ingest_streams_over_mutual_tls(
    guarded: TritonServer, pki: Pki, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(FRAMES):
        cv2.imwrite(str(frames / f"{i:03d}.jpg"), rng.integers(0, 255, (240, 320, 3), np.uint8))
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "camdet.cli.main", "ingest", str(frames),
        "--server", guarded.grpc_url, "--ssl",
        "--root-certificates", str(pki.ca),
        "--private-key", str(pki.client_key),
        "--certificate-chain", str(pki.client_cert),
        "--mode", "capacity", "--jsonl", str(out), "--no-live",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["frame"] for r in records) == list(range(FRAMES)), done.stdout
    assert {r["server"] for r in records} == {f"grpcs://{guarded.grpc_url}"}


def test_doctor_checks_a_mutual_tls_server(guarded: TritonServer, pki: Pki) -> None:
    from typer.testing import CliRunner

    from camdet.cli.main import app

    tls = ["--tls", "--root-certificates", str(pki.ca)]
    client = ["--private-key", str(pki.client_key), "--certificate-chain", str(pki.client_cert)]
    base = ["doctor", "--json", "--url", guarded.grpc_url, "--bench-seconds", "1"]

    def server_check(*args: str) -> dict:
        result = CliRunner().invoke(app, [*base, *args])
        return {c["name"]: c for c in json.loads(result.stdout)["checks"]}

    checks = server_check(*tls, *client)
    assert checks["server"]["status"] == "pass", checks["server"]
    assert checks["benchmark"]["status"] == "pass" and "0 failed" in checks["benchmark"]["detail"]
    # Without a client certificate the server refuses the handshake.
    assert server_check(*tls)["server"]["status"] == "fail"


def test_admin_grpc_apis_need_the_header_inference_does_not(
    guarded: TritonServer, pki: Pki
) -> None:
    headers = RestrictedApis(HEADER_KEY, SECRET).grpc_headers
    with tls_client(guarded, pki, pki.client_cert, pki.client_key) as client:
        admin_calls = {
            "model-repository": lambda **kw: client.get_model_repository_index(**kw),
            "model-config": lambda **kw: client.get_model_config("detect", **kw),
            "statistics": lambda **kw: client.get_inference_statistics("detect", **kw),
            "shared-memory": lambda **kw: client.get_system_shared_memory_status(**kw),
            "trace": lambda **kw: client.get_trace_settings(**kw),
            "logging": lambda **kw: client.get_log_settings(**kw),
        }
        for api, call in admin_calls.items():
            with pytest.raises(
                InferenceServerException, match="This protocol is restricted, expecting header"
            ):
                call()
                pytest.fail(f"{api} answered without the header")
            with pytest.raises(InferenceServerException):
                call(headers={name: "wrong" for name in headers})
                pytest.fail(f"{api} answered with a wrong value")
            call(headers=headers)
        assert client.get_model_metadata("detect").name == "detect"
        assert client.is_model_ready("detect")


def _http_status(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
    """Status of a GET (a POST with ``body``) to ``url``."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_admin_http_apis_need_the_header_health_does_not(guarded: TritonServer) -> None:
    base = f"http://{guarded.http_url}/v2"
    guarded_urls = [
        f"{base}/models/detect/config",
        f"{base}/models/detect/stats",
        f"{base}/logging",
        f"{base}/trace/setting",
        f"{base}/systemsharedmemory/status",
    ]
    for url in guarded_urls:
        assert _http_status(url) == 403, url
        assert _http_status(url, {HEADER_KEY: SECRET}) == 200, url
    # model-repository: the index lists the models (POST, as Triton's API has it).
    index = f"{base}/repository/index"
    assert _http_status(index, body=b"{}") == 403
    assert _http_status(index, {HEADER_KEY: SECRET}, body=b"{}") == 200
    assert _http_status(f"{base}/health/ready") == 200
    assert _http_status(f"{base}/models/detect") == 200
