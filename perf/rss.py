"""Resident memory of process trees, for the memory benchmarks (fuzz, soak).

The portable server is ``tritonserver`` plus one Python-backend stub process per model
instance; a leak can sit in any of them, so every number here is per process and summed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class TreeRss:
    """RSS of a process tree at one moment.

    Attributes:
        total_mb: Sum over the processes, MiB.
        processes: ``{label: MiB}``; a label is the process name plus, for Triton's
            Python-backend stubs, the model instance it serves.
        anon_mb: Sum of the anonymous part of their RSS (``RssAnon``: heaps, arenas,
            buffers), MiB: what a leak grows. The rest of RSS is file pages (shared
            libraries) and shared memory, which a busy machine short of memory evicts and
            pages back in, moving RSS by hundreds of MiB without any leak.
        anon: ``{label: MiB}`` of the same.
    """

    total_mb: float
    processes: dict[str, float]
    anon_mb: float = 0.0
    anon: dict[str, float] = field(default_factory=dict)


def process_label(process: psutil.Process) -> str:
    """``tritonserver``, or e.g. ``stub:preprocess_0_0`` for a Python-backend stub."""
    try:
        cmdline = process.cmdline()
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"pid{process.pid}"
    if "triton_python_backend_stub" in name or any("python_backend_stub" in a for a in cmdline):
        # argv: stub, <repository>/<model>/<version>/model.py, ..., <model>_<n>_<m>, ...
        model = Path(cmdline[1]).parent.parent.name if len(cmdline) > 1 else ""
        instance = next((a for a in cmdline[2:] if model and a.startswith(f"{model}_")), model)
        return f"stub:{instance or process.pid}"
    return f"{name}:{process.pid}"


def tree_processes(pid: int) -> list[psutil.Process]:
    """The process and its live descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss_of(processes: Iterable[psutil.Process]) -> TreeRss:
    """Summed and per-process RSS of ``processes`` (those that exited are skipped)."""
    sizes: dict[str, float] = {}
    anon: dict[str, float] = {}
    for process in processes:
        try:
            mb = process.memory_info().rss / 2**20
            anon_mb = _rss_anon_mb(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
        label = process_label(process)
        while label in sizes:  # two stubs of one model share a prefix: keep both
            label += "'"
        sizes[label], anon[label] = mb, anon_mb
    return TreeRss(sum(sizes.values()), sizes, sum(anon.values()), anon)


def _rss_anon_mb(pid: int) -> float:
    """``RssAnon`` of ``/proc/<pid>/status``, MiB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def tree_rss(pid: int) -> TreeRss:
    """RSS of ``pid`` and all its descendants (for the server: tritonserver + stubs)."""
    return rss_of(tree_processes(pid))


def client_rss(server_pid: int | None) -> TreeRss:
    """RSS of this process and its descendants, minus the server's tree if it is one."""
    server = {p.pid for p in tree_processes(server_pid)} if server_pid is not None else set()
    return rss_of(p for p in tree_processes(psutil.Process().pid) if p.pid not in server)


def tree_gpu_mb(pid: int) -> float | None:
    """GPU memory held by process ``pid`` and its descendants, MiB (None: no nvidia-smi).

    Read from ``nvidia-smi --query-compute-apps``: device memory each process allocated
    (CUDA context, pools, decoder buffers), which RSS does not show.
    """
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    result = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        return None
    pids = {p.pid for p in tree_processes(pid)}
    used = (line.split(",") for line in result.stdout.strip().splitlines() if "," in line)
    return sum(float(mb) for app, mb in used if int(app) in pids)
