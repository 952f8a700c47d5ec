"""``camdet.perf.thread_cpu``: a real process's threads, read from ``/proc``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from camdet.perf.thread_cpu import EXITED, app, matching, measure
from typer.testing import CliRunner

from tests.helpers.workers import python_worker

# One thread spins (a busy-waiting thread), one sleeps 1 ms at a time (a waiting one); each
# names itself through /proc, as DALI names its pool threads.
_WORKER = """
def sleeper():
    name("sleeper0")
    while True:
        time.sleep(0.001)

def spinner():
    name("spinner0")
    while True:
        pass

threading.Thread(target=sleeper, daemon=True).start()
threading.Thread(target=spinner, daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def worker() -> Iterator[subprocess.Popen]:
    """A process with a spinning and a sleeping thread, running until the test ends."""
    with python_worker(_WORKER) as process:
        yield process


def test_a_spinning_thread_shows_cpu_and_a_sleeping_one_shows_voluntary_switches(worker) -> None:
    rows = {g.threads: g for g in measure(matching([], [worker.pid]), 1.5)}

    spinner, sleeper = rows["spinner#"], rows["sleeper#"]
    assert spinner.count == sleeper.count == 1
    assert spinner.cores > 0.3  # the 2-core CI machine may share its cores
    assert sleeper.cores < 0.2
    assert sleeper.voluntary_per_s > 100  # up to 1,000 sleeps a second
    assert next(iter(rows)) == "spinner#"  # busiest first


def test_the_command_prints_the_groups_with_cpu_ms_per_frame_and_writes_json(
    worker, tmp_path: Path
) -> None:
    out = tmp_path / "threads.json"
    result = CliRunner().invoke(
        app,
        [
            "--name",
            "no-such-process",
            "--pid",
            str(worker.pid),
            "--seconds",
            "1",
            "--frames-per-s",
            "100",
            "--out",
            str(out),
        ],
    )

    assert result.exit_code == 0, result.output
    spinner = next(line for line in result.output.splitlines() if "spinner#" in line)
    assert result.output.splitlines()[-1].startswith("all")
    groups = json.loads(out.read_text())["groups"]
    assert {g["threads"] for g in groups} >= {"spinner#", "sleeper#"}
    # 1000 ms x cores / 100 frames, from the JSON's unrounded cores: the table prints both
    # columns to 2 decimals, so 10 x its rounded cores can be 0.05 off (CI: 9.86 vs 9.9).
    cores = next(g["cores"] for g in groups if g["threads"] == "spinner#")
    assert float(spinner.split()[-1]) == pytest.approx(10 * cores, abs=0.0051)


# One short-lived thread after another, each busy for 50 ms: what a pool that starts a thread
# per task costs, and what per-thread sampling alone would miss.
_BURSTS = """
def burst():
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        pass

print("ready", flush=True)
while True:
    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()
"""


def test_threads_that_end_inside_the_window_are_counted_as_exited() -> None:
    with python_worker(_BURSTS) as process:
        rows = measure(matching([], [process.pid]), 1.5)

    exited = next(g for g in rows if g.threads == EXITED)
    assert exited.cores > 0.3  # ~30 bursts ended in the window; the 2-core CI machine shares
    assert sum(g.cores for g in rows) < 1.3  # one burst at a time: about one core in all
    assert sum(g.born for g in rows) <= 1  # at most the burst running at the end


def test_no_matching_process_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["--name", "no-such-process", "--seconds", "0.1"])

    assert result.exit_code != 0
    assert "no process named" in result.output
