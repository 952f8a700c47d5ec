"""The one ``camdet`` command line (typer).

serve, infer, ingest, demo, doctor, model, scenes, bench and perf-analyzer.
"""
