"""perf_analyzer against a server whose admin APIs are behind a header (``--restrict-apis``).

perf_analyzer reads the model configuration and statistics and registers shared memory,
all restricted there: the sweep's ``--admin-header`` must carry the secret to a real
portable server started with the guard, over gRPC, with system shared memory.
"""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from camdet.perf import perf_analyzer
from camdet.perf.cli import perf_analyzer_app
from camdet.perf.perf_analyzer_sweep import Point, SweepConfig, point_args
from typer.testing import CliRunner

from camdet.serving.security import LOOPBACK, Exposure, RestrictedApis
from camdet.serving.server import Ports, TritonServer, serve

HEADER = "camdet-admin=s3cret-for-perf"


def test_admin_header_becomes_a_perf_analyzer_header_per_protocol() -> None:
    assert perf_analyzer.admin_header_args(HEADER) == [
        "-H",
        "triton-grpc-protocol-camdet-admin:s3cret-for-perf",
    ]
    assert perf_analyzer.admin_header_args(HEADER, "http") == ["-H", "camdet-admin:s3cret-for-perf"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        perf_analyzer.admin_header_args("camdet-admin")


def test_sweep_points_carry_the_header_only_when_given(tmp_path: Path) -> None:
    plain = SweepConfig(tmp_path, tmp_path, (1,), (), ("none",))
    guarded = SweepConfig(tmp_path, tmp_path, (1,), (), ("none",), admin_header=HEADER)
    point = Point("detect", "none", "concurrency", 1)
    assert "-H" not in point_args(plain, point, tmp_path / "p.csv")
    args = point_args(guarded, point, tmp_path / "p.csv")
    assert args[args.index("-H") + 1] == "triton-grpc-protocol-camdet-admin:s3cret-for-perf"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        SweepConfig(tmp_path, tmp_path, (1,), (), ("none",), admin_header="no-value")


@pytest.fixture(scope="module")
def guarded(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A portable server with the admin APIs behind ``HEADER`` (plaintext loopback gRPC)."""
    exposure = Exposure(LOOPBACK, None, RestrictedApis.parse(HEADER))
    workdir = tmp_path_factory.mktemp("restricted")
    with serve(repository, Ports.free(), portable=True, workdir=workdir, exposure=exposure) as s:
        yield s


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("perf_data")
    done = subprocess.run(
        [sys.executable, "-m", "camdet.perf.input_data", "--out", str(out), "--frames", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out


def _sweep(server: TritonServer, data: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    result = CliRunner().invoke(
        perf_analyzer_app,
        [
            *("sweep", str(data), str(out), "--url", server.grpc_url, "--models", "validate"),
            *("--concurrency", "1", "--rates", "2", "--shm", "system", "--interval-ms", "1000"),
            *("--stability-percentage", "100", "--max-trials", "5"),
            *("--perf-analyzer", shlex.join(perf_analyzer.ensure_command())),
            *extra,
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    with (out / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.server
@pytest.mark.slow
def test_sweep_with_the_admin_header_measures_a_restricted_server(
    guarded: TritonServer, data: Path, tmp_path: Path
) -> None:
    refused = _sweep(guarded, data, tmp_path / "without")
    assert [r["status"] for r in refused] == ["failed", "failed"]
    assert all("restricted" in r["reason"] for r in refused), refused
    measured = _sweep(guarded, data, tmp_path / "with", "--admin-header", HEADER)
    assert [r["status"] for r in measured] == ["ok", "ok"], measured
    assert all(float(r["infer_per_s"]) > 0 for r in measured)
