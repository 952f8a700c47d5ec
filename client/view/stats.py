"""What the page's panels show: per-camera rates and state, and Triton's per-model times.

Both are computed from differences between two samples (one a second apart while a page
is open): fps from the answered counter, queue and compute times from Triton's
cumulative ``nv_inference_*`` counters (microseconds summed over requests).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from camdet.client.accounting import CameraTotals
from prometheus_client.parser import text_string_to_metric_families

DOWN_AFTER_S = 3.0
"""A camera that captured nothing for this long is shown as down."""

_TRITON_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "input_us",
    "nv_inference_compute_infer_duration_us": "infer_us",
    "nv_inference_compute_output_duration_us": "output_us",
    "nv_inference_pending_request_count": "pending",
}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


@dataclass
class CameraRates:
    """Per-camera fps and up/down from successive accounting snapshots."""

    _previous: dict[str, tuple[float, CameraTotals]] = field(default_factory=dict)
    _last_capture: dict[str, float] = field(default_factory=dict)
    _fps: dict[str, float] = field(default_factory=dict)

    def rows(
        self,
        snapshot: Mapping[str, CameraTotals],
        crossings: Mapping[str, Mapping[str, int]],
        errors: Mapping[str, str | None],
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """One JSON-ready row per camera, in the snapshot's order."""
        now = time.monotonic() if now is None else now
        rows = []
        for camera_id, totals in snapshot.items():
            before = self._previous.get(camera_id)
            if before is None or totals.captured > before[1].captured:
                self._last_capture[camera_id] = now
            if before is not None and now - before[0] >= 0.5:
                self._fps[camera_id] = (totals.answered - before[1].answered) / (now - before[0])
            if before is None or now - before[0] >= 0.5:
                self._previous[camera_id] = (now, totals)
            quiet = now - self._last_capture.get(camera_id, now)
            up = totals.captured > 0 and quiet < DOWN_AFTER_S
            rows.append(
                {
                    "id": camera_id,
                    "up": up,
                    "error": None if up else errors.get(camera_id),
                    "fps": round(self._fps.get(camera_id, 0.0), 1),
                    "p50_ms": _ms(totals.latency_p50_s),
                    "p99_ms": _ms(totals.latency_p99_s),
                    "lag_ms": _ms(totals.lag_s),
                    "captured": totals.captured,
                    "answered": totals.answered,
                    "dropped": totals.dropped,
                    "failed": totals.failed,
                    "in_flight": totals.in_flight,
                    "reconnects": totals.reconnects,
                    "counts": dict(crossings.get(camera_id, {})),
                }
            )
        return rows


def parse_triton_metrics(text: str) -> dict[str, dict[str, float]]:
    """Triton's ``nv_inference_*`` counters per model (summed over versions)."""
    models: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = _TRITON_COUNTERS.get(sample.name.removesuffix("_total"))
            model = sample.labels.get("model")
            if name is None or model is None:
                continue
            values = models.setdefault(model, {})
            values[name] = values.get(name, 0.0) + sample.value
    return models


@dataclass
class TritonRates:
    """Per-model request rate and mean queue/compute time between two scrapes."""

    _previous: tuple[float, dict[str, dict[str, float]]] | None = None
    _rows: list[dict[str, Any]] = field(default_factory=list)

    def update(self, text: str, now: float | None = None) -> list[dict[str, Any]]:
        """Take one scrape; rows per model with ``rps``, ``queue_ms``, ``compute_ms``."""
        now = time.monotonic() if now is None else now
        models = parse_triton_metrics(text)
        if self._previous is not None and now > self._previous[0]:
            then, before = self._previous
            self._rows = [
                _model_row(model, values, before.get(model, {}), now - then)
                for model, values in sorted(models.items())
            ]
        elif not self._rows:
            self._rows = [_model_row(m, v, {}, 0.0) for m, v in sorted(models.items())]
        self._previous = (now, models)
        return self._rows


def _model_row(
    model: str, now: Mapping[str, float], before: Mapping[str, float], seconds: float
) -> dict[str, Any]:
    def delta(name: str) -> float:
        return now.get(name, 0.0) - before.get(name, 0.0)

    requests = delta("success")
    compute = delta("input_us") + delta("infer_us") + delta("output_us")
    return {
        "model": model,
        "rps": round(requests / seconds, 1) if seconds else None,
        "queue_ms": round(delta("queue_us") / requests / 1000.0, 2) if requests else None,
        "compute_ms": round(compute / requests / 1000.0, 2) if requests else None,
        "failed": int(now.get("failure", 0.0)),
        "pending": int(now.get("pending", 0.0)),
        "requests": int(now.get("success", 0.0)),
    }
