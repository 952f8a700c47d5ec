"""Terminal tables: the live per-camera view while streaming, and the final totals.

Every table reads whole in an 80-column terminal: a :class:`FittingTable` too wide for its
rules drops them and wraps its headers at spaces and its names anywhere, never cutting a
header or a value; a live view too wide even so splits into two tables (rates and latency;
frame counters).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from camdet.client.accounting import Accounting, CameraTotals
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table

NAME_MIN_WIDTH = 6
"""Narrowest camera or server column: longer names fold onto more lines."""

COUNTERS = ("captured", "answered", "dropped", "failed", "in flight", "reconnects")
"""The frame counter columns, in this order, last in the totals (before ``line in/out``)."""


class FittingTable(Table):
    """A table that keeps every header and value whole in a narrow terminal.

    Where it does not fit with its rules it is drawn without vertical rules (columns one
    space apart); where it does not fit even so, headers wrap at spaces and columns added
    with ``overflow="fold"`` (names) fold, down to each column's longest word (names:
    :data:`NAME_MIN_WIDTH`). Other columns never get narrower than their longest word:
    where that is still too wide, the columns are split over several tables, each led by
    the first column.
    """

    def fits(self, console: Console, options: ConsoleOptions) -> bool:
        """Whether the table can be drawn whole within ``options.max_width``."""
        compact = _compact(self)
        ranges = _column_ranges(compact, console, options)
        return sum(low for low, _ in ranges) + _rules(compact) <= options.max_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The table as drawn at ``options.max_width``."""
        ranges = _column_ranges(self, console, options)
        if sum(high for _, high in ranges) + _rules(self) <= options.max_width:
            yield from Table.__rich_console__(self, console, options)
            return
        for part in _split(_compact(self), console, options):
            yield from Table.__rich_console__(_narrowed(part, console, options), console, options)


def _compact(table: Table) -> Table:
    """A copy without vertical rules or cell padding: columns one space apart."""
    compact = copy.copy(table)
    compact.box = box.SIMPLE_HEAD
    compact.show_edge = False
    compact.padding = (0, 0)
    return compact


def _rules(table: Table) -> int:
    """Width of the vertical rules and edges."""
    if table.box is None:
        return 0
    return len(table.columns) - 1 + (2 if table.show_edge else 0)


def _column_ranges(table: Table, console: Console, options: ConsoleOptions) -> list[list[int]]:
    """[narrowest whole, natural] content width of each column, padding included."""
    _, right, _, left = table.padding
    unbounded = options.update(width=10_000)
    ranges = []
    for column in table.columns:
        sizes = [Measurement.get(console, unbounded, c) for c in (column.header, *column.cells)]
        low, high = max(m.minimum for m in sizes), max(m.maximum for m in sizes)
        if column.overflow == "fold":
            header = Measurement.get(console, unbounded, column.header).minimum
            low = min(high, max(NAME_MIN_WIDTH, header))
        ranges.append([low + left + right, high + left + right])
    return ranges


def _split(table: Table, console: Console, options: ConsoleOptions) -> list[Table]:
    """``table`` as consecutive tables that each fit, each led by its first column."""
    ranges = _column_ranges(table, console, options)
    groups: list[list[int]] = [[0]]
    for index in range(1, len(table.columns)):
        width = sum(ranges[i][0] for i in groups[-1]) + ranges[index][0] + len(groups[-1])
        if width > options.max_width and len(groups[-1]) > 1:
            groups.append([0])
        groups[-1].append(index)
    parts = []
    for number, group in enumerate(groups):
        part = copy.copy(table)
        part.columns = [
            replace(table.columns[i], _index=position) for position, i in enumerate(group)
        ]
        if number:
            part.title = None
        parts.append(part)
    return parts


def _narrowed(table: Table, console: Console, options: ConsoleOptions) -> Table:
    """``table`` with fixed column widths that fit ``options.max_width`` if they can.

    Headers wrap first, names fold only then: the widest column that can still shrink
    gives up one character at a time.
    """
    ranges = _column_ranges(table, console, options)
    widths = [high for _, high in ranges]
    excess = sum(widths) + _rules(table) - options.max_width
    for names in (False, True):
        shrinkable = [i for i, c in enumerate(table.columns) if (c.overflow == "fold") == names]
        while excess > 0:
            room = [i for i in shrinkable if widths[i] > ranges[i][0]]
            if not room:
                break
            widths[max(room, key=lambda i: widths[i])] -= 1
            excess -= 1
    narrowed = copy.copy(table)
    narrowed.columns = [
        replace(column, width=width) for column, width in zip(table.columns, widths, strict=True)
    ]
    return narrowed


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


Cell = Callable[[str, CameraTotals], str]
"""A column's text for one camera and its totals."""


def totals_table(
    snapshot: dict[str, CameraTotals],
    assignment: dict[str, str | None] | None = None,
    rates: dict[str, tuple[float, float]] | None = None,
    title: str = "camdet ingest: per-camera totals",
    crossings: dict[str, dict[str, int]] | None = None,
    parts: tuple[str, ...] = ("rates", "counters"),
) -> FittingTable:
    """A table of per-camera counters.

    Args:
        snapshot: Counters per camera.
        assignment: Server URL per camera (column left out when None).
        rates: ``(frames in/s, frames out/s)`` per camera (columns left out when None).
        title: Table title.
        crossings: Count-line crossings per camera and direction (column left out when
            empty or None).
        parts: ``"rates"``: server, rates, latency and lag; ``"counters"``: the frame
            counters. Crossings come last either way.
    """
    columns: list[tuple[str, Cell]] = [("camera", lambda camera, _: camera)]
    if "rates" in parts:
        columns += _rate_columns(assignment, rates)
    if "counters" in parts:
        columns += [
            (header, lambda _, totals, name=header: str(getattr(totals, name.replace(" ", "_"))))
            for header in COUNTERS
        ]
    if crossings:
        columns.append(("line in/out", lambda camera, _: _crossed(crossings.get(camera, {}))))
    table = FittingTable(title=title)
    for header, _ in columns:
        if header in ("camera", "server"):
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right")
    for camera, totals in snapshot.items():
        table.add_row(*(cell(camera, totals) for _, cell in columns))
    return table


def _rate_columns(
    assignment: dict[str, str | None] | None, rates: dict[str, tuple[float, float]] | None
) -> list[tuple[str, Cell]]:
    columns: list[tuple[str, Cell]] = []
    if assignment is not None:
        columns.append(("server", lambda camera, _: assignment.get(camera) or "[red]none up[/]"))
    if rates is not None:
        columns += [
            ("in/s", lambda camera, _: f"{rates.get(camera, (0.0, 0.0))[0]:.1f}"),
            ("out/s", lambda camera, _: f"{rates.get(camera, (0.0, 0.0))[1]:.1f}"),
        ]
    return [
        *columns,
        ("p50 ms", lambda _, totals: _ms(totals.latency_p50_s)),
        ("p99 ms", lambda _, totals: _ms(totals.latency_p99_s)),
        ("lag s", lambda _, totals: "-" if totals.lag_s is None else f"{totals.lag_s:.1f}"),
    ]


def _crossed(counts: dict[str, int]) -> str:
    return f"{counts.get('in', 0)}/{counts.get('out', 0)}"


@dataclass
class LiveTables:
    """The live view at one instant: one table where it fits, else two stacked."""

    whole: FittingTable
    split: tuple[FittingTable, FittingTable]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """One table, or rates and latency above the frame counters."""
        if self.whole.fits(console, options):
            yield self.whole
        else:
            yield Group(*self.split)


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

    def render(self) -> LiveTables:
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
        assignment, crossings = self.assignment(), self.crossings()
        return LiveTables(
            totals_table(snapshot, assignment, rates, title, crossings),
            (
                totals_table(snapshot, assignment, rates, title, crossings, ("rates",)),
                totals_table(snapshot, title="frames", parts=("counters",)),
            ),
        )
