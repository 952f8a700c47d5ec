"""The one ``camdet`` command line (typer).

serve, infer, ingest, demo, doctor, model, scenes, bench and perf-analyzer; the scripts as
the groups detector, track and perf (:mod:`camdet.cli.scripts`).
"""
