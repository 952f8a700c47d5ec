"""Where a server's CPU goes, thread by thread (``python -m camdet.perf.thread_cpu``).

The served JPEG pipeline on the H100 runs out of the machine's 16 cores first: ~7.5 CPU
ms per frame against the bare loop's 1.0 (perf/RESULTS.md, session 13), and session 8's
``top -H`` put ~5 of those cores in the DALI decoders' threads. ``top`` shows one moment
and one process at a time; this reads every thread's CPU time and context switches from
``/proc`` twice, ``seconds`` apart, for the whole server (``tritonserver``, its stubs, the
CUDA MPS server) and sums them by process and thread name. A thread that waits by
spinning shows many CPU seconds and few voluntary switches; one that sleeps in the kernel
shows the opposite. Threads that start and end between the two reads are not listed, but
their CPU is: a process's own counters include them, and what those grew by beyond its
live threads' is reported as ``(exited)``.

Threads are named by the process that runs them (``top``'s names: DALI's pool threads are
``[DALI][TP0]Mixe...``; Python threads carry their process's name); digits become ``#`` so
that the pools of all instances of one model sum into one line.

Prints the table; ``--out`` writes it as JSON. Linux only (``/proc``).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import psutil
import typer
from camdet.perf.rss import process_label, tree_processes

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``python -m camdet.perf.thread_cpu``."""

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ThreadTimes:
    """One thread's counters at one moment.

    Attributes:
        process: The process's label (:func:`process_key`).
        name: The thread's name with digits as ``#``.
        user_s: User CPU time, seconds.
        system_s: System CPU time, seconds.
        voluntary: Voluntary context switches (the thread slept).
        involuntary: Involuntary context switches (the scheduler took the core away).
    """

    process: str
    name: str
    user_s: float
    system_s: float
    voluntary: int
    involuntary: int


@dataclass(frozen=True)
class ThreadGroup:
    """The threads of one name in one kind of process, over the window.

    Attributes:
        process: ``tritonserver``, ``stub:<model>`` (all its instances), or a name.
        threads: Thread name with digits as ``#``; ``(exited)`` for the CPU of threads that
            ended inside the window (the process's total less its live threads').
        count: Threads alive at the end of the window.
        born: Of those, threads started inside the window.
        cores: CPU seconds per second, user + system.
        system_share: Part of ``cores`` spent in the kernel, 0..1.
        voluntary_per_s: Voluntary context switches per second, all threads.
        involuntary_per_s: Involuntary context switches per second, all threads.
    """

    process: str
    threads: str
    count: int
    born: int
    cores: float
    system_share: float
    voluntary_per_s: float
    involuntary_per_s: float


EXITED = "(exited)"
"""The thread name under which a process's CPU of threads that ended in the window is kept."""

_PROCESS = -1
"""The tid under which :func:`snapshot` keeps a process's own counters (all its threads,
those that exited included, as ``/proc/<pid>/stat`` sums them)."""


def process_key(process: psutil.Process) -> str:
    """``tritonserver`` or ``stub:<model>`` (instances merged), else the process name."""
    label = process_label(process)
    if label.startswith("stub:"):
        return re.sub(r"_\d+_\d+$", "", label)
    return label.rsplit(":", 1)[0]


def _read_times(folder: Path, process: str) -> ThreadTimes | None:
    """The counters of ``/proc/<pid>`` or ``/proc/<pid>/task/<tid>`` (None: it exited)."""
    try:
        stat = (folder / "stat").read_text()
        status = (folder / "status").read_text()
    except OSError:
        return None
    # The name sits in parentheses and may hold spaces; the fields after it are fixed.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    switches = dict(
        line.split(":", 1) for line in status.splitlines() if line.endswith(tuple("0123456789"))
    )
    return ThreadTimes(
        process,
        re.sub(r"\d+", "#", name),
        int(fields[11]) / _TICKS,  # utime: field 14 of stat, 12th after the name
        int(fields[12]) / _TICKS,  # stime
        int(switches.get("voluntary_ctxt_switches", "0")),
        int(switches.get("nonvoluntary_ctxt_switches", "0")),
    )


def snapshot(processes: list[psutil.Process]) -> dict[tuple[int, int], ThreadTimes]:
    """Every thread of ``processes`` by ``(pid, tid)``, and each process's own counters."""
    threads = {}
    for process in processes:
        try:
            key = process_key(process)
        except psutil.NoSuchProcess:
            continue
        folder = Path(f"/proc/{process.pid}")
        tasks = folder / "task"
        for task in tasks.iterdir() if tasks.is_dir() else ():
            times = _read_times(task, key)
            if times is not None:
                threads[(process.pid, int(task.name))] = times
        whole = _read_times(folder, key)  # read last: it covers every thread read above
        if whole is not None:
            threads[(process.pid, _PROCESS)] = whole
    return threads


def _delta(end: ThreadTimes, start: ThreadTimes | None) -> tuple[float, float, int, int]:
    """(user s, system s, voluntary, involuntary) from ``start`` (None: from zero) to ``end``."""
    if start is None:
        return end.user_s, end.system_s, end.voluntary, end.involuntary
    return (
        end.user_s - start.user_s,
        end.system_s - start.system_s,
        end.voluntary - start.voluntary,
        end.involuntary - start.involuntary,
    )


def groups(
    before: dict[tuple[int, int], ThreadTimes],
    after: dict[tuple[int, int], ThreadTimes],
    seconds: float,
) -> list[ThreadGroup]:
    """Sum the window's threads by (process, thread name), busiest first.

    A thread started in the window counts all its CPU; what a process's own counters grew by
    beyond its live threads' is the CPU of threads that ended in the window (``(exited)``).
    """
    sums: dict[tuple[str, str], list[float]] = {}
    live: dict[int, list[float]] = {}
    for (pid, tid), end in after.items():
        if tid == _PROCESS:
            continue
        start = before.get((pid, tid))
        user, system, voluntary, involuntary = _delta(end, start)
        row = sums.setdefault((end.process, end.name), [0, 0, 0.0, 0.0, 0, 0])
        for k, value in enumerate((1, start is None, user, system, voluntary, involuntary)):
            row[k] += value
        totals = live.setdefault(pid, [0.0, 0.0])
        totals[0], totals[1] = totals[0] + user, totals[1] + system
    for (pid, tid), end in after.items():
        start = before.get((pid, tid))
        if tid != _PROCESS or start is None:
            continue
        user, system, _, _ = _delta(end, start)
        seen = live.get(pid, [0.0, 0.0])
        # Clock ticks make the difference jitter around zero when nothing exited.
        gone_user, gone_system = max(user - seen[0], 0.0), max(system - seen[1], 0.0)
        row = sums.setdefault((end.process, EXITED), [0, 0, 0.0, 0.0, 0, 0])
        row[2], row[3] = row[2] + gone_user, row[3] + gone_system
    result = [
        ThreadGroup(
            process,
            name,
            int(count),
            int(born),
            (user + system) / seconds,
            system / (user + system) if user + system > 0 else 0.0,
            voluntary / seconds,
            involuntary / seconds,
        )
        for (process, name), (count, born, user, system, voluntary, involuntary) in sums.items()
    ]
    return sorted(result, key=lambda g: -g.cores)


def matching(names: list[str], pids: list[int]) -> list[psutil.Process]:
    """The processes named ``names*`` or with a listed pid, and their descendants, once each.

    A server's descendants are its stubs.
    """
    roots = [p for p in psutil.process_iter(["name"]) if p.info["name"].startswith(tuple(names))]
    roots += [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)]
    found: dict[int, psutil.Process] = {}
    for root in roots:
        for process in tree_processes(root.pid):
            found.setdefault(process.pid, process)
    return list(found.values())


def measure(processes: list[psutil.Process], seconds: float) -> list[ThreadGroup]:
    """The thread groups of ``processes`` over ``seconds`` of wall time."""
    before, start = snapshot(processes), time.monotonic()
    time.sleep(seconds)
    after = snapshot(processes)
    return groups(before, after, time.monotonic() - start)


def table(rows: list[ThreadGroup], frames_per_s: float | None, least: float = 0.02) -> str:
    """Plain-text table of the groups using at least ``least`` cores, then totals by process.

    With ``frames_per_s``, each line also gives CPU milliseconds per frame.
    """
    per_frame = (lambda c: f"{1000 * c / frames_per_s:8.2f}") if frames_per_s else (lambda c: "")
    head = (
        f"{'process':<32} {'threads':<20} {'n':>4} {'born':>5} {'cores':>6} {'sys':>5} "
        f"{'vol/s':>8} {'invol/s':>8}"
    )
    lines = [head + (" CPU ms/frame" if frames_per_s else "")]
    for g in rows:
        if g.cores >= least:
            lines.append(
                f"{g.process[:32]:<32} {g.threads[:20]:<20} {g.count:>4} {g.born:>5} "
                f"{g.cores:6.2f} {g.system_share:5.2f} {g.voluntary_per_s:8.0f} "
                f"{g.involuntary_per_s:8.0f}" + per_frame(g.cores)
            )
    totals: dict[str, float] = {}
    for g in rows:
        totals[g.process] = totals.get(g.process, 0.0) + g.cores
    lines.append("")
    for process, cores in sorted(totals.items(), key=lambda t: -t[1]):
        lines.append(f"{process[:32]:<32} {'(all)':<20} {'':>10} {cores:6.2f}" + per_frame(cores))
    lines.append(
        f"{'all':<32} {'':<20} {'':>10} {sum(totals.values()):6.2f}"
        + per_frame(sum(totals.values()))
    )
    return "\n".join(lines)


@app.command()
def main(
    name: Annotated[
        list[str], typer.Option(help="Process name prefix, with descendants (tritonserver).")
    ] = [],  # noqa: B006
    pid: Annotated[list[int], typer.Option(help="A process id (with descendants).")] = [],  # noqa: B006
    seconds: Annotated[float, typer.Option(min=0.1)] = 5.0,
    frames_per_s: Annotated[float | None, typer.Option(help="Adds CPU ms per frame.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the groups as JSON.")] = None,
) -> None:
    """Sample the matching processes' threads over SECONDS and print where the CPU went."""
    processes = matching(name or ([] if pid else ["tritonserver"]), pid)
    if not processes:
        raise typer.BadParameter(f"no process named {name} or with pid {pid}")
    rows = measure(processes, seconds)
    typer.echo(table(rows, frames_per_s))
    if out is not None:
        out.write_text(
            json.dumps({"seconds": seconds, "groups": [asdict(g) for g in rows]}, indent=1)
        )


if __name__ == "__main__":
    app()
