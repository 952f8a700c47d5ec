"""Terminal tables: the live per-camera view while streaming, and the final totals."""

from __future__ import annotations

import time
from collections.abc import Callable

from camdet.client.accounting import Accounting, CameraTotals
from rich.table import Table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def totals_table(
    snapshot: dict[str, CameraTotals],
    assignment: dict[str, str | None] | None = None,
    rates: dict[str, tuple[float, float]] | None = None,
    title: str = "camdet ingest: per-camera totals",
    crossings: dict[str, dict[str, int]] | None = None,
) -> Table:
    """A table of per-camera counters.

    Args:
        snapshot: Counters per camera.
        assignment: Server URL per camera (column left out when None).
        rates: ``(frames in/s, frames out/s)`` per camera (columns left out when None).
        title: Table title.
        crossings: Count-line crossings per camera and direction (column left out when
            empty or None).
    """
    table = Table(title=title)
    table.add_column("camera")
    if assignment is not None:
        table.add_column("server")
    if rates is not None:
        table.add_column("in/s", justify="right")
        table.add_column("out/s", justify="right")
    for column in (
        "p50 ms",
        "p99 ms",
        "lag s",
        "captured",
        "answered",
        "dropped",
        "failed",
        "in flight",
    ):
        table.add_column(column, justify="right")
    table.add_column("reconnects", justify="right")
    if crossings:
        table.add_column("line in/out", justify="right")
    for camera, totals in snapshot.items():
        row = [camera]
        if assignment is not None:
            row.append(assignment.get(camera) or "[red]none up[/]")
        if rates is not None:
            frames_in, frames_out = rates.get(camera, (0.0, 0.0))
            row += [f"{frames_in:.1f}", f"{frames_out:.1f}"]
        row += [
            _ms(totals.latency_p50_s),
            _ms(totals.latency_p99_s),
            "-" if totals.lag_s is None else f"{totals.lag_s:.1f}",
            str(totals.captured),
            str(totals.answered),
            str(totals.dropped),
            str(totals.failed),
            str(totals.in_flight),
            str(totals.reconnects),
        ]
        if crossings:
            counts = crossings.get(camera, {})
            row.append(f"{counts.get('in', 0)}/{counts.get('out', 0)}")
        table.add_row(*row)
    return table


class LiveView:
    """Renders the live table: rates from the change since the previous render.

    Pass :meth:`render` as ``get_renderable`` of a ``rich.live.Live``.
    """

    def __init__(
        self,
        accounting: Accounting,
        assignment: Callable[[], dict[str, str | None]],
        crossings: Callable[[], dict[str, dict[str, int]]] = dict,
    ) -> None:
        self.accounting = accounting
        self.assignment = assignment
        self.crossings = crossings
        self._previous: tuple[float, dict[str, CameraTotals]] | None = None

    def render(self) -> Table:
        """The table now."""
        now, snapshot = time.monotonic(), self.accounting.snapshot()
        rates: dict[str, tuple[float, float]] = {}
        if self._previous is not None and now > self._previous[0]:
            elapsed = now - self._previous[0]
            for camera, totals in snapshot.items():
                before = self._previous[1].get(camera, CameraTotals())
                rates[camera] = (
                    (totals.captured - before.captured) / elapsed,
                    (totals.answered - before.answered) / elapsed,
                )
        self._previous = (now, snapshot)
        title = "camdet ingest (Ctrl-C stops)"
        return totals_table(snapshot, self.assignment(), rates, title, self.crossings())
