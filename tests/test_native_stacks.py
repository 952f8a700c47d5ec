"""``camdet.perf.native_stacks``: pystack's native stacks of a real process, counted per thread."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from camdet.perf.native_stacks import app, parse, tally
from typer.testing import CliRunner

from tests.helpers.workers import python_worker


def _ptrace_allowed() -> bool:
    """Whether this process may attach to a sibling (root, or Yama's ptrace_scope 0)."""
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    return os.geteuid() == 0 or not scope.exists() or scope.read_text().strip() == "0"


pytestmark = [
    pytest.mark.skipif(
        shutil.which("pystack") is None and not Path(sys.executable).with_name("pystack").exists(),
        reason="pystack is not installed (the [dev] extra has it)",
    ),
    pytest.mark.skipif(not _ptrace_allowed(), reason="ptrace of a sibling process is not allowed"),
]

# A few lines of pystack 1.7's output: a DALI pipeline's executor thread and two pool threads.
_TEXT = (Path(__file__).parent / "helpers" / "pystack_sample.txt").read_text()


def test_threads_of_one_pool_sum_under_one_name_and_the_caller_skips_the_runtimes() -> None:
    counts = tally([_TEXT, _TEXT])

    executor, pool = counts["[DALI] Executor"], counts["[DALI][TP#]Exec"]
    assert executor.seen == 2 and pool.seen == 4  # 1 and 2 threads, 2 samples each
    assert executor.innermost == {"syscall (libc.so.6)": 2}
    assert executor.caller == {"nvimgcodecFutureWaitForAll (libnvimgcodec.so.0)": 2}
    assert pool.innermost == {"decode_mcu (libjpeg_turbo_ext.so.0.9.0)": 4}
    stack = parse(_TEXT)["[DALI] Executor"][0]
    assert stack[2][0] == "dali::imgcodec::ImageDecoder<>::RunImplImpl() (libdali_operators.so)"


# The main thread sleeps; a thread that names itself "spinner0" spins in Python.
_WORKER = """
def spinner():
    name("spinner0")
    while True:
        pass

threading.Thread(target=spinner, daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def worker() -> Iterator[subprocess.Popen]:
    """A process whose main thread sleeps and whose "spinner0" spins, until the test ends."""
    with python_worker(_WORKER) as process:
        yield process


def test_a_live_process_is_sampled_and_each_thread_counted_once_per_sample(
    worker, tmp_path: Path
) -> None:
    out = tmp_path / "stacks.json"
    result = CliRunner().invoke(
        app, ["--pid", str(worker.pid), "--samples", "3", "--interval", "0", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    assert "spinner#: 3 stacks" in result.output
    data = json.loads(out.read_text())
    threads = data["threads"]
    assert data["samples"] == 3 and threads["spinner#"]["seen"] == 3
    main = next(v for k, v in threads.items() if k != "spinner#")
    assert main["seen"] == 3
    # time.sleep waits in the C library; the spinner never does.
    assert any("sleep" in frame for frame in main["innermost"])
    assert not any("sleep" in frame for frame in threads["spinner#"]["innermost"])


def test_a_process_that_is_gone_is_a_clear_error() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    result = CliRunner().invoke(app, ["--pid", str(gone.pid), "--samples", "1"])

    assert result.exit_code != 0
    assert f"pystack failed on pid {gone.pid}" in str(result.exception)
