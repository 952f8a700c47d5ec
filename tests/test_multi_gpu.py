"""perf/multi_gpu.py: layouts, ABBA order, and a CPU run of the real command.

Without a GPU the command's degenerate form runs: two real portable servers that would
see GPU 0 and GPU 1, a baseline on the first and both saturated in one shared window.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from camdet.perf.load import Window
from camdet.perf.multi_gpu import LAYOUTS, MultiGpuConfig, layout_order, visible_devices
from camdet.perf.multi_gpu_cli import app
from typer.testing import CliRunner


def test_each_layout_sees_its_gpus() -> None:
    assert visible_devices("one", 2) == ["0"]
    assert visible_devices("per-gpu", 4) == ["0", "1", "2", "3"]
    assert visible_devices("shared", 2) == ["0,1"]


def test_layouts_run_in_abba_order() -> None:
    assert layout_order(LAYOUTS, 2) == [
        (0, "one"),
        (0, "per-gpu"),
        (0, "shared"),
        (1, "shared"),
        (1, "per-gpu"),
        (1, "one"),
    ]


@pytest.mark.parametrize(
    ("layouts", "gpus", "message"),
    [(("per-gpu",), 2, "layouts"), (("one", "dual"), 2, "layouts"), (("one", "shared"), 1, "gpus")],
)
def test_config_refuses_runs_without_a_baseline_or_two_gpus(layouts, gpus, message) -> None:
    with pytest.raises(ValueError, match=message):
        MultiGpuConfig(gpus, 1, 1, Window(), 1, layouts, [b"x"])


@pytest.mark.server
@pytest.mark.slow
def test_cpu_run_measures_both_layouts_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    arguments = [
        "--gpus", "2", "--cameras-per-gpu", "2", "--processes-per-gpu", "1",
        "--layouts", "one,per-gpu", "--warmup", "2", "--duration", "4", "--repeats", "2",
        "--frames", "4", "--size", "320x240", "--out", str(out), "--require-ratio", "100",
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    # A CPU cannot give 100x: the command measured, reported and refused the ratio.
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "choice: per-gpu" in result.output
    report = json.loads((out / "multi_gpu.json").read_text())
    # Each server process really ran with its own CUDA_VISIBLE_DEVICES.
    assert report["visible_devices_seen"] == {"0": "0", "1": "1"}
    assert [(r["repeat"], r["layout"]) for r in report["results"]] == [
        (0, "one"),
        (0, "per-gpu"),
        (1, "per-gpu"),
        (1, "one"),
    ]
    for entry in report["results"]:
        servers = entry["servers"]
        assert len(servers) == (1 if entry["layout"] == "one" else 2)
        assert all(s["completed"] > 0 and s["failed"] == 0 for s in servers), servers
        cameras = sum(s["cameras"] for s in servers)
        assert cameras == (2 if entry["layout"] == "one" else 4)
        assert entry["throughput_fps"] == pytest.approx(sum(s["throughput_fps"] for s in servers))
    fps = {(r["repeat"], r["layout"]): r["throughput_fps"] for r in report["results"]}
    within = [fps[(n, "per-gpu")] / fps[(n, "one")] for n in (0, 1)]
    assert report["layouts"]["one"]["ratio_to_one"] == 1.0
    assert report["layouts"]["per-gpu"]["ratio_to_one"] == pytest.approx(statistics.median(within))
