"""Python processes with named threads, for the tests of perf's process samplers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

NAMING = '''
import threading, time

def name(text):
    """Name the calling thread through /proc, as DALI names its pool threads."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
        comm.write(text)
'''
"""Prepended to every worker's code: the imports and ``name(text)``."""


@contextmanager
def python_worker(body: str) -> Iterator[subprocess.Popen]:
    """Run ``NAMING + body`` in a Python process until the block ends.

    ``body`` prints ``ready`` once its threads are started; the process is killed after.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", NAMING + body], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # its threads have named themselves
        yield process
    finally:
        process.kill()
        process.wait()
