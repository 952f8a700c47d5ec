"""Test servers beyond the session's: a TLS-only and a slow portable tritonserver."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

from camdet.serving.launch import has_cuda_gpu, portable_launch
from camdet.serving.portable import generate_portable_repository
from camdet.serving.server import Ports, TritonServer


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost``/127.0.0.1 and its key (openssl)."""
    cert, key = folder / "server.crt", folder / "server.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return cert, key


SLOW_DETECTOR = '''"""Test variant of the portable detector: {delay_s} s of extra work per frame."""

import time

from camdet.triton_models.portable.detector_onnx import TritonPythonModel as _Detector


class TritonPythonModel(_Detector):
    def execute(self, requests):
        time.sleep({delay_s} * len(requests))
        return super().execute(requests)
'''


def slow_repository(production: Path, destination: Path, delay_s: float) -> Path:
    """The portable repository with a detector that takes ``delay_s`` more per frame."""
    generate_portable_repository(production, destination, gpu=has_cuda_gpu())
    (destination / "detector" / "1" / "model.py").write_text(SLOW_DETECTOR.format(delay_s=delay_s))
    return destination


def tls_server(repository: Path, workdir: Path, certificate: tuple[Path, Path]) -> TritonServer:
    """A (not yet started) portable tritonserver whose gRPC endpoint is TLS only."""
    ports = Ports.free()
    launch = portable_launch(repository, ports, workdir)
    cert, key = certificate
    tls_args = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={cert}",
        f"--grpc-server-key={key}",
        f"--grpc-root-cert={cert}",
    ]
    return TritonServer(
        replace(launch, argv=[*launch.argv, *tls_args]), ports, workdir / "tritonserver.log"
    )
