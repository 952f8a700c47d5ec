"""The real perf_analyzer 2.51: installed from the tritonclient wheel, run against the portable
server on real JPEGs, and the sweep that survives failed points."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import typer
from camdet.perf import perf_analyzer
from camdet.perf.cli import perf_analyzer_app
from camdet.perf.perf_analyzer_sweep import (
    CPU_DEFAULTS,
    GPU_DEFAULTS,
    Point,
    PointResult,
    SweepConfig,
    exit_status,
    failure_reason,
    point_args,
    sweep_points,
)
from camdet.perf.stats import model_stats_delta
from typer.testing import CliRunner

LATENCIES = ("p50 latency", "p90 latency", "p95 latency", "p99 latency")
FRAMES = ("--frames", "4", "--tensor-frames", "1")
# Stabilization is perf_analyzer's business, not what these tests check: on a shared CPU
# machine a 2-s window at ~4 frames/s varies by tens of percent.
QUICK = ("--measurement-interval", "2000", "--stability-percentage", "100", "--max-trials", "10")


@pytest.fixture(scope="module")
def command() -> list[str]:
    """The perf_analyzer command, installed from the wheel on first use."""
    return perf_analyzer.ensure_command()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Input data written by the documented command: 4 real JPEG frames (720p and 1080p)."""
    out = tmp_path_factory.mktemp("perf_data")
    done = subprocess.run(
        [sys.executable, "-m", "camdet.perf.input_data", *("--out", str(out)), *FRAMES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out


def _model_stats(url: str) -> dict:
    with grpcclient.InferenceServerClient(url) as client:
        return client.get_inference_statistics(as_json=True)


# ------------------------------------------------------------------------ installation


def test_installed_binary_is_perf_analyzer_2_51_with_every_library(command) -> None:
    if os.environ.get(perf_analyzer.ENV_VAR):
        pytest.skip("PERF_ANALYZER set: its command is not the installed binary")
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Perf Analyzer Version 2.51.0" in done.stdout + done.stderr
    libraries = dict(part.split("=", 1) for part in command if "=" in part)["LD_LIBRARY_PATH"]
    ldd = subprocess.run(
        ["ldd", command[-1]],
        capture_output=True,
        text=True,
        env={**os.environ, "LD_LIBRARY_PATH": libraries},
    )
    assert "not found" not in ldd.stdout, ldd.stdout
    links = {p.name: p.resolve() for p in perf_analyzer.library_dir().iterdir()}
    assert set(links) == {"libb64.so.0d", "libcudart.so.12"}
    assert all(target.parent.name == perf_analyzer.PYTRITON_LIBS for target in links.values())


def test_perf_analyzer_variable_is_the_whole_command(monkeypatch) -> None:
    monkeypatch.setenv("PERF_ANALYZER", "env A='b c' /opt/sdk/perf_analyzer")
    assert perf_analyzer.command() == ["env", "A=b c", "/opt/sdk/perf_analyzer"]


def test_missing_binary_names_the_install_command(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PERF_ANALYZER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(perf_analyzer.PerfAnalyzerError, match="camdet perf-analyzer install"):
        perf_analyzer.command(tmp_path / "nowhere")


def test_install_refuses_a_binary_that_is_not_the_pinned_one(monkeypatch, tmp_path) -> None:
    def forged_wheel(folder: Path) -> Path:
        wheel = folder / f"tritonclient-{perf_analyzer.VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(perf_analyzer.WHEEL_MEMBER, b"#!/bin/sh\necho not it\n")
        return wheel

    monkeypatch.setattr(perf_analyzer, "_download_wheel", forged_wheel)
    with pytest.raises(perf_analyzer.PerfAnalyzerError, match="pinned"):
        perf_analyzer.install(tmp_path / "pa")
    assert not perf_analyzer.binary_path(tmp_path / "pa").exists()


def test_camdet_perf_analyzer_commands_explain_every_option() -> None:
    from camdet.cli.main import app

    result = CliRunner().invoke(app, ["perf-analyzer", "--help"])
    assert result.exit_code == 0
    for name in ("install", "which", "run", "sweep"):
        assert name in result.output
    group = typer.main.get_command(perf_analyzer_app)
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            assert getattr(param, "help", None) or name == "run", (name, param.name)


# ------------------------------------------------------------------------ sweep grid


def test_machine_defaults_fit_cpu_and_gpu_rates() -> None:
    assert CPU_DEFAULTS.concurrency == (1, 2, 4)
    assert max(CPU_DEFAULTS.rates) <= 10 and "cuda" not in CPU_DEFAULTS.shm
    assert GPU_DEFAULTS.concurrency[0] == 1 and GPU_DEFAULTS.concurrency[-1] == 256
    assert (min(GPU_DEFAULTS.rates), max(GPU_DEFAULTS.rates)) == (100, 2000)
    assert GPU_DEFAULTS.shm == ("none", "system", "cuda") and GPU_DEFAULTS.collect_metrics


def test_sweep_points_skip_models_without_data(tmp_path) -> None:
    (tmp_path / "detect.json").write_text("{}")
    config = SweepConfig(tmp_path, tmp_path / "out", (1, 4), (2.5,), ("none", "system"))
    names = [p.name for p in sweep_points(config)]
    assert names == [
        "detect-concurrency-none-1",
        "detect-concurrency-none-4",
        "detect-rate-none-2.5",
        "detect-concurrency-system-1",
        "detect-concurrency-system-4",
        "detect-rate-system-2.5",
    ]


def test_point_arguments(tmp_path) -> None:
    config = SweepConfig(
        tmp_path, tmp_path, (1,), (500,), ("cuda",), metrics_url="h:8002/metrics", extra=("-v",)
    )
    args = point_args(config, Point("detector", "cuda", "rate", 500), tmp_path / "p.csv")
    assert args[:8] == ["-m", "detector", "-i", "grpc", "-u", "localhost:8001", "-b", "1"]
    assert args[args.index("--input-data") + 1] == str(tmp_path / "detector.json")
    assert args[args.index("--output-shared-memory-size") + 1] == str(1 << 20)
    assert args[args.index("--request-rate-range") + 1] == "500"
    assert args[args.index("--request-distribution") + 1] == "constant"
    assert {"--async", "--collect-metrics", "--verbose-csv"} <= set(args)
    assert args[-3:] == ["-f", str(tmp_path / "p.csv"), "-v"]
    plain = point_args(config, Point("detect", "none", "concurrency", 8), tmp_path / "c.csv")
    assert "--output-shared-memory-size" not in plain and "--async" not in plain
    assert plain[plain.index("--concurrency-range") + 1] == "8"


def test_exit_status_fails_only_when_nothing_was_measured() -> None:
    def result(ok: bool) -> PointResult:
        return PointResult(Point("detect", "none", "concurrency", 1), ok, 0 if ok else 99, 1.0)

    assert exit_status([result(True), result(True)]) == 0
    assert exit_status([result(True), result(False)]) == 0
    assert exit_status([result(True), result(False)], strict=True) == 1
    assert exit_status([result(False), result(False)]) == 1
    assert exit_status([]) == 1


def test_failure_reason_is_perf_analyzer_s_error_line() -> None:
    output = " Successfully read data\nerror: failed to get model metadata: no model\n\n"
    assert failure_reason(output, 99) == "error: failed to get model metadata: no model"
    assert failure_reason("", None) == "exit status None"


# ------------------------------------------------------------------------ against the server


@pytest.mark.server
@pytest.mark.slow
def test_perf_analyzer_measures_the_ensemble_on_real_jpegs(server, data, command, tmp_path):
    out = tmp_path / "detect.csv"
    before = _model_stats(server.grpc_url)
    done = perf_analyzer.run(
        [
            *("-m", "detect", "-i", "grpc", "-u", server.grpc_url, "-b", "1"),
            *("--input-data", str(data / "detect.json"), "--concurrency-range", "1"),
            *(*QUICK, "--verbose-csv", "-f", str(out)),
        ],
        base=command,
        timeout_s=120,
    )
    assert done.returncode == 0, done.stdout
    (row,) = perf_analyzer.read_csv(out)
    assert row["Concurrency"] == "1"
    assert float(row["Inferences/Second"]) > 0
    latencies = [float(row[name]) for name in LATENCIES]
    assert 0 < latencies[0] <= latencies[1] <= latencies[2] <= latencies[3]
    assert float(row["Avg latency"]) > 0
    assert float(row["Server Compute Infer"]) > 0
    served = model_stats_delta(before, _model_stats(server.grpc_url))
    assert served["detect"]["failures"] == 0
    assert served["detect"]["requests"] >= 3
    assert served["detector"]["requests"] == served["detect"]["requests"]


def _sweep(server, data: Path, out: Path, command: list[str], models: str) -> tuple[int, list]:
    result = CliRunner().invoke(
        perf_analyzer_app,
        [
            *("sweep", str(data), str(out), "--url", server.grpc_url, "--models", models),
            *("--concurrency", "2", "--rates", "2", "--shm", "system", "--interval-ms", "2000"),
            *("--stability-percentage", "100", "--max-trials", "10"),
            *("--perf-analyzer", shlex.join(command)),
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    with (out / "summary.csv").open(newline="") as f:
        return result.exit_code, list(csv.DictReader(f))


@pytest.mark.server
@pytest.mark.slow
def test_sweep_records_a_failed_point_and_goes_on(server, data, command, tmp_path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    shutil.copy(broken / "detect.json", broken / "absent.json")  # no such model on the server
    out = tmp_path / "out"
    status, summary = _sweep(server, broken, out, command, "absent,detect")
    assert status == 0
    assert [(r["model"], r["mode"], r["status"]) for r in summary] == [
        ("absent", "concurrency", "failed"),
        ("absent", "rate", "failed"),
        ("detect", "concurrency", "ok"),
        ("detect", "rate", "ok"),
    ]
    assert "unknown model: 'absent'" in summary[0]["reason"]
    assert all(float(r["infer_per_s"]) > 0 for r in summary[2:])
    (concurrency,) = perf_analyzer.read_csv(out / "detect-concurrency-system.csv")
    assert concurrency["Concurrency"] == "2"
    (rate,) = perf_analyzer.read_csv(out / "detect-rate-system.csv")
    assert float(rate["Request Rate"]) == 2 and float(rate["Inferences/Second"]) > 0
    assert not (out / "absent-concurrency-system.csv").exists()

    status, summary = _sweep(server, broken, tmp_path / "none", command, "absent")
    assert status == 1
    assert {r["status"] for r in summary} == {"failed"}
