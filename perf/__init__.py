"""Benchmarks and load generators of camdet (installed as ``camdet.perf``)."""
