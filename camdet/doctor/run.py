"""``camdet doctor``: every check in order, and the exit status they give.

:mod:`camdet.doctor.checks` holds what a check is; :mod:`camdet.doctor.local` and
:mod:`camdet.doctor.server` the checks; this module runs them (imports go one way).
"""

from __future__ import annotations

from collections.abc import Iterable

from camdet.doctor.checks import Check, DoctorOptions, Status, guarded
from camdet.doctor.local import local_checks
from camdet.doctor.server import server_checks


def run_checks(options: DoctorOptions) -> list[Check]:
    """Every check, in order: environment, GPU stack, repository, server, benchmark."""
    checks: list[Check] = []
    for name, check in local_checks(options.repository):
        checks += guarded(name, check)
    for name, check in server_checks(options):
        checks += guarded(name, check)
    return checks


def exit_code(checks: Iterable[Check]) -> int:
    """1 if any check failed, else 0 (warnings and skips pass)."""
    return int(any(check.status is Status.FAIL for check in checks))
