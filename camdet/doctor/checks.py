"""What a ``camdet doctor`` check is: a :class:`Check` and the helpers that make one.

Each check returns one :class:`Check` (pass, warn, fail, or skip with the reason, and
the fix when it is not a pass); :func:`camdet.doctor.run.run_checks` runs them all in
order and :func:`camdet.doctor.run.exit_code` is non-zero when any failed. The checks
themselves live in
:mod:`camdet.doctor.local` (environment, GPU stack, repository) and
:mod:`camdet.doctor.server` (a running server and the smoke benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    """Outcome of one check."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One check's outcome.

    Attributes:
        name: What was checked (``numpy``, ``gpu``, ``server``, ...).
        status: pass, warn, fail or skip.
        detail: What was found (versions, counts, the error).
        fix: What to do about a warn or fail (empty for pass; the reason for a skip).
    """

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        """The JSON form (``camdet doctor --json``)."""
        return {key: str(value) for key, value in asdict(self).items()}


CheckFunction = Callable[[], "Check | list[Check]"]
"""A check to run: returns one outcome or several."""


def passed(name: str, detail: str) -> Check:
    """A pass."""
    return Check(name, Status.PASS, detail)


def warned(name: str, detail: str, fix: str) -> Check:
    """A warning with its fix."""
    return Check(name, Status.WARN, detail, fix)


def failed(name: str, detail: str, fix: str) -> Check:
    """A failure with its fix."""
    return Check(name, Status.FAIL, detail, fix)


def skipped(name: str, reason: str) -> Check:
    """Not applicable here, with the reason."""
    return Check(name, Status.SKIP, "skipped", reason)


def guarded(name: str, check: CheckFunction) -> list[Check]:
    """Run one check; an unexpected exception is a failure of that check, not of doctor."""
    try:
        outcome = check()
    except Exception as error:  # a broken environment is what doctor is for
        return [failed(name, f"{type(error).__name__}: {error}", "see the detail")]
    return outcome if isinstance(outcome, list) else [outcome]


@dataclass(frozen=True)
class DoctorOptions:
    """What ``camdet doctor`` checks.

    Attributes:
        repository: The production model repository.
        url: gRPC ``host:port`` of a running server to check, or None to skip.
        bench_s: Length of the smoke benchmark against ``url``, seconds (0: none).
        tls: Use TLS to the server.
        root_certificates: PEM CA certificates for TLS.
        private_key: PEM client key, for a server that asks for client certificates.
        certificate_chain: PEM client certificate chain, with ``private_key``.
    """

    repository: Path
    url: str | None = None
    bench_s: float = 10.0
    tls: bool = False
    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None
