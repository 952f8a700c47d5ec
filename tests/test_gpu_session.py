"""perf/gpu_session.sh, the GPU machine's one-command measurements: its usage and its phases agree.

The script runs only on the card (it starts servers and stops every ``tritonserver`` between
phases), so the CPU checks what can go wrong before a scarce call: the shell parses, and
every phase its usage names is a function it can run.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "perf" / "gpu_session.sh"


def test_the_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_phase_in_the_usage_is_a_function() -> None:
    text = SCRIPT.read_text()
    named = set(re.findall(r"^#   bash perf/gpu_session\.sh (\w+)", text, re.MULTILINE))
    defined = set(re.findall(r"^(\w+)\(\) \{", text, re.MULTILINE))

    assert {"remaining", "decoders_parts", "native", "jpeg", "accuracy", "jpeg_instances"} <= named
    assert named - defined == {"all"}  # `all` is the case statement's own


def test_remaining_runs_phases_that_exist() -> None:
    text = SCRIPT.read_text()
    (default,) = re.findall(r"\$\{REMAINING:-([\w ]+)\}", text)
    defined = set(re.findall(r"^(\w+)\(\) \{", text, re.MULTILINE))

    phases = default.split()
    assert set(phases) <= defined
    # Each has its length in `remaining` (else it is skipped as "no phase").
    timed = {
        name
        for names in re.findall(r"^ +([\w|]+)\) need=", text, re.MULTILINE)
        for name in names.split("|")
    }
    assert set(phases) <= timed


def test_nvdec_parallel_measures_decoders_on_the_cpu(tmp_path: Path) -> None:
    # The same code paths the card runs, with PyAV: one JSON record per measurement.
    out = tmp_path / "p.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "camdet.perf.nvdec_parallel",
            "--cpu",
            "--threads",
            "2",
            "--processes",
            "2",
            "--seconds",
            "0.5",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    records = json.loads(out.read_text())
    assert [r["mode"] for r in records] == ["gil", "threads", "processes"]
    assert 0 < records[0]["python_loop_share"] <= 1.5
    assert all(r["fps"] > 0 for r in records[1:])
    assert [r["decoders"] for r in records[1:]] == [2, 2]
