"""Where a process's threads spend their time, native frames included.

``python -m camdet.perf.native_stacks --pid PID --samples 20``

:mod:`camdet.perf.thread_cpu` tells which threads use the CPU: on the H100 the DALI decoder
threads of ``detect_pipeline`` used ~4 of the server's ~6.6 CPU ms per frame, and they
rarely sleep (perf/RESULTS.md, session 14). Which code they run is the next question, and
the GPU machine has no ``perf``, ``gdb`` or ``eu-stack``, while py-spy sees only Python
threads. pystack (``pystack remote --native-all PID``) prints the native stack of every
thread of a live process, DALI's and CUDA's included; this takes it ``samples`` times and
counts, per thread name, the innermost frame of each sample and the innermost frame outside
the C and C++ runtimes (what called the wait or the lock): a sampling profiler for one
process, coarse but native.

Prints the counts; ``--out`` writes them as JSON. Linux only, and pystack attaches with
ptrace (root, or ``ptrace_scope`` 0).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``python -m camdet.perf.native_stacks``."""

_THREAD = re.compile(r"^Traceback for thread (\d+) \((.*)\) \[.*\] \(most recent call last\):")
_FRAME = re.compile(r"^\s+\((C|Python)\) File \"(.*)\", line \d+, in (.*?)(?: \(([^()]*)\))?$")
_RUNTIMES = ("libc.so", "libstdc++.so", "libpthread.so", "ld-linux", "libgcc_s.so")
"""Libraries whose frames are the mechanics of a wait (futex, condition variable, syscall),
not its reason: the "caller" column skips them."""


@dataclass
class ThreadStacks:
    """What one thread name's threads were doing over the samples.

    Attributes:
        seen: Thread stacks counted (threads x samples).
        innermost: Counts of the innermost frame, ``function (library)``.
        caller: Counts of the innermost frame outside the C/C++ runtimes.
    """

    seen: int = 0
    innermost: Counter = field(default_factory=Counter)
    caller: Counter = field(default_factory=Counter)


def _frame_name(function: str, library: str | None, path: str) -> str:
    """``function (library)`` with C++ template and argument lists shortened."""
    short = function
    while short != (shorter := re.sub(r"<[^<>]*>", "<>", short)):  # innermost lists first
        short = shorter
    short = re.sub(r"\(.*\)", "()", short)[:120]
    where = Path(library or path).name
    return f"{short} ({where})"


def parse(text: str) -> dict[str, list[list[tuple[str, str]]]]:
    """Pystack's output as ``{thread name with digits as #: [stack, ...]}``.

    Each stack is its ``(frame name, library or file)`` pairs, outermost first.
    """
    stacks: dict[str, list[list[tuple[str, str]]]] = defaultdict(list)
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        thread = _THREAD.match(line)
        if thread:
            current = []
            stacks[re.sub(r"\d+", "#", thread.group(2))].append(current)
            continue
        frame = _FRAME.match(line)
        if frame and current is not None:
            kind, path, function, library = frame.groups()
            where = library if kind == "C" and library else path
            current.append((_frame_name(function, library, path), where))
    return dict(stacks)


def tally(samples: list[str]) -> dict[str, ThreadStacks]:
    """Count innermost frames and callers per thread name over pystack outputs."""
    result: dict[str, ThreadStacks] = defaultdict(ThreadStacks)
    for text in samples:
        for name, stacks in parse(text).items():
            for stack in stacks:
                if not stack:
                    continue
                counts = result[name]
                counts.seen += 1
                counts.innermost[stack[-1][0]] += 1
                outside = [f for f, where in stack if not Path(where).name.startswith(_RUNTIMES)]
                counts.caller[outside[-1] if outside else stack[-1][0]] += 1
    return dict(result)


def sample(pid: int, pystack: str, timeout_s: float = 60.0) -> str:
    """One ``pystack remote --native-all`` of ``pid`` (its text; raises if pystack fails)."""
    command = [pystack, "remote", "--native-all", "--no-color", str(pid)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pystack failed on pid {pid}: {result.stderr.strip()[-500:]}")
    return result.stdout


def report(counts: dict[str, ThreadStacks], top: int = 5) -> str:
    """Plain text: per thread name (most stacks first), its top innermost frames and callers."""
    lines = []
    for name, stacks in sorted(counts.items(), key=lambda item: -item[1].seen):
        lines.append(f"{name}: {stacks.seen} stacks")
        for title, counter in (("innermost", stacks.innermost), ("caller", stacks.caller)):
            for frame, n in counter.most_common(top):
                lines.append(f"  {title:<9} {100 * n / stacks.seen:5.1f} %  {frame}")
    return "\n".join(lines)


def _pystack(given: Path | None) -> str:
    """``given``, else pystack beside this interpreter (a virtual environment), else on PATH."""
    if given is not None:
        if not given.exists():
            raise typer.BadParameter(f"no pystack at {given}")
        return str(given)
    beside = Path(sys.executable).with_name("pystack")
    found = str(beside) if beside.exists() else shutil.which("pystack")
    if found is None:
        raise typer.BadParameter("pystack is not installed (pip install pystack)")
    return found


@app.command()
def main(
    pid: Annotated[int, typer.Option(help="The process to sample.")],
    samples: Annotated[int, typer.Option(min=1)] = 20,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between samples.")] = 0.2,
    top: Annotated[int, typer.Option(min=1, help="Frames listed per thread name.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Write the counts as JSON.")] = None,
    pystack: Annotated[Path | None, typer.Option(help="The pystack program.")] = None,
) -> None:
    """Sample PID's native stacks and print, per thread name, where its threads were."""
    program = _pystack(pystack)
    texts = []
    for i in range(samples):
        texts.append(sample(pid, program))
        if i + 1 < samples:
            time.sleep(interval)
    counts = tally(texts)
    typer.echo(report(counts, top))
    if out is not None:
        data = {
            name: {"seen": c.seen, "innermost": dict(c.innermost), "caller": dict(c.caller)}
            for name, c in counts.items()
        }
        out.write_text(json.dumps({"pid": pid, "samples": samples, "threads": data}, indent=1))


if __name__ == "__main__":
    app()
