"""The command line of :mod:`camdet.perf.multi_gpu`, under its earlier name.

The command lives with the run it starts (``camdet perf multi-gpu``,
``python -m camdet.perf.multi_gpu``); ``app`` is importable from here too.
"""

from __future__ import annotations

from camdet.perf.multi_gpu import app

__all__ = ["app"]
