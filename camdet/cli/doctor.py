"""``camdet doctor``: run the pre-flight checks, print a table or JSON, exit 1 on a failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from camdet.doctor.checks import Check, DoctorOptions, Status
from camdet.doctor.run import exit_code, run_checks
from camdet.serving.repository import find_repository

_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.SKIP: "dim"}


def checks_table(checks: list[Check]) -> Table:
    """One row per check: name, status, what was found, the fix or skip reason."""
    table = Table("check", "status", "detail", "fix / reason", title="camdet doctor")
    for check in checks:
        style = _STYLE[check.status]
        table.add_row(check.name, f"[{style}]{check.status}[/]", check.detail, check.fix)
    return table


def doctor(
    repository: Annotated[
        Path | None,
        typer.Option(
            envvar="CAMDET_MODEL_REPOSITORY",
            help="Production model repository to check (default: ./model_repository if "
            "present, else the installed one).",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="CAMDET_URL",
            help="gRPC host:port of a running server: check its readiness, each model's, "
            "and run the smoke benchmark. Default: server checks are skipped.",
        ),
    ] = None,
    bench_seconds: Annotated[
        float, typer.Option(min=0, help="Smoke benchmark length, seconds (0: none).")
    ] = 10.0,
    tls: Annotated[bool, typer.Option(help="TLS to the server.")] = False,
    root_certificates: Annotated[
        Path | None, typer.Option(help="PEM CA certificates for --tls.", exists=True)
    ] = None,
    private_key: Annotated[
        Path | None,
        typer.Option(help="PEM client key, for a mutual-TLS server (--tls).", exists=True),
    ] = None,
    certificate_chain: Annotated[
        Path | None,
        typer.Option(help="PEM client certificate chain for --private-key.", exists=True),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object on stdout (for scripts).")
    ] = False,
) -> None:
    """Pre-flight check before a deployment or a migration; exit 1 if any check fails.

    Checks Python and numpy, GPU, driver and CUDA, DALI, the hardware JPEG decoder and
    NVDEC, TensorRT and the detector plan's sidecar, the repository and its
    production/portable contract identity, and, with --url, a running server's readiness,
    each model's readiness and a smoke benchmark. Each check says pass, warn, fail or
    skip, and what to do about it.
    """
    path = find_repository(repository)[0]  # no line printed: --json owns stdout
    options = DoctorOptions(
        path, url, bench_seconds, tls, root_certificates, private_key, certificate_chain
    )
    checks = run_checks(options)
    code = exit_code(checks)
    if as_json:
        typer.echo(json.dumps({"ok": code == 0, "checks": [c.as_dict() for c in checks]}))
    else:
        Console().print(checks_table(checks))
    raise typer.Exit(code)
