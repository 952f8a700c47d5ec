"""Issue #25 item 2: every table reads whole in an 80-column terminal (COLUMNS=80).

The ``camdet ingest`` totals and live view and the ``camdet demo`` results are rendered by
rich at 80 columns with realistic, wide values: no header or value may be cut ("…"), every
header word and every value must be there whole, and no line may be wider than 80.
"""

from __future__ import annotations

import re

import pytest
from camdet.client.accounting import Accounting
from camdet.client.report import COUNTERS, LiveView, totals_table
from rich.console import Console

from camdet.cli.demo import CameraReport, _print

CAMERAS = ("cam0", "gate-12")
SERVERS = {"cam0": "127.0.0.1:8001", "gate-12": None}
CROSSINGS = {"cam0": {"in": 12, "out": 345}}


def _accounting() -> Accounting:
    """Counters in the hundreds of thousands, latencies in the seconds."""
    accounting = Accounting(CAMERAS)
    for camera, answered in zip(CAMERAS, (123_456, 98_765), strict=True):
        for _ in range(answered + 1234):
            accounting.captured(camera)
        for _ in range(answered):
            accounting.answered(camera, 12.345)
        accounting.dropped(camera, 1000)
        for _ in range(200):
            accounting.failed(camera)
        accounting.reconnected(camera)
    return accounting


def _at_80_columns(renderable, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    console = Console(record=True)
    assert console.width == 80
    console.print(renderable)
    return console.export_text()


def _assert_whole(text: str, headers: list[str], values: list[str]) -> None:
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    tokens = set(re.split(r"[\s│┃]+", text))
    missing = [w for h in headers for w in h.split() if w not in tokens]
    assert not missing, (missing, text)
    cut = [v for v in values if v not in tokens]
    assert not cut, (cut, text)


def _values(accounting: Accounting) -> list[str]:
    values = []
    for camera, totals in accounting.snapshot().items():
        values += [camera, "12345", f"{totals.lag_s:.1f}"]
        values += [str(getattr(totals, c.replace(" ", "_"))) for c in COUNTERS]
    return values


def test_ingest_totals_read_whole_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    accounting = _accounting()
    for crossings in (None, CROSSINGS):
        text = _at_80_columns(totals_table(accounting.snapshot(), crossings=crossings), monkeypatch)
        headers = ["camera", "p50 ms", "p99 ms", "lag s", *COUNTERS]
        values = _values(accounting)
        if crossings:
            headers.append("line in/out")
            values.append("12/345")
        _assert_whole(text, headers, values)


def test_live_view_reads_whole_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    accounting = _accounting()
    view = LiveView(accounting, lambda: SERVERS, lambda: CROSSINGS)
    view.render()
    text = _at_80_columns(view.render(), monkeypatch)
    headers = ["camera", "server", "in/s", "out/s", "p50 ms", "p99 ms", "lag s", *COUNTERS]
    values = [*_values(accounting), "127.0.0.1:8001", "none", "up", "12/345"]
    _assert_whole(text, [*headers, "line in/out"], values)
    # Where one table fits, the view stays one table.
    wide = Console(record=True, width=200)
    wide.print(view.render())
    assert wide.export_text().count("camera") == 1


def test_long_camera_names_fold_instead_of_being_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "front-door-parking-lot-east-entrance"
    accounting = Accounting([name])
    accounting.captured(name)
    text = _at_80_columns(totals_table(accounting.snapshot(), crossings=CROSSINGS), monkeypatch)
    assert "…" not in text, text
    body = text.split("─" * 10)[-1].lstrip("─\n")
    assert "".join(line.split()[0] for line in body.splitlines() if line.strip()) == name, text


def test_demo_table_reads_whole_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    reports = [
        CameraReport(
            camera,
            latencies_s=[0.4805] * 47 + [12.0],
            failed=3,
            detections=160,
            truths=165,
            matched=158,
            matched_iou=[0.85] * 158,
            wall_s=24.0,
        )
        for camera in range(12)
    ]
    monkeypatch.setenv("COLUMNS", "80")
    console = Console(record=True)
    _print(console, reports, 24.0)
    text = console.export_text()
    headers = ["camera", "frames ok", "failed", "fps", "p50 ms", "p99 ms", "dets per frame"]
    headers += ["recall @.5 IoU", "precision @.5 IoU", "mean IoU"]
    values = ["cam11", "48", "3", "2.0", "480", "12000", "3.3", "0.958", "0.988", "0.850"]
    _assert_whole(text, headers, values)
