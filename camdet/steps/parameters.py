"""The request parameters the ensembles accept, and their per-request validation.

Clients send parameters with each request (``parameters=`` of tritonclient's ``infer``);
Triton hands every step of an ensemble the same parameters. A value that is checked only
where it is used can slip through into batch-wide code (a 31-digit ``max_detections``
once overflowed ``torch.tensor`` and failed every frame batched with it), so each
request's parameters are checked whole, here, by the ensemble's first Python step and by
every step that reads them, before the request joins a batch.

Unknown names are refused, so a typo such as ``confidence_treshold`` is an error rather
than a silently ignored setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_DETECTIONS_LIMIT: int = 30000
"""Largest ``max_detections``: no frame has more NMS candidates than this
(:data:`camdet.steps.postprocess.detections.MAX_NMS_CANDIDATES`, the same value)."""

_SHOWN_CHARS = 40
"""How much of a refused value an error message repeats (a parameter may be megabytes)."""


class RequestParameterError(ValueError):
    """A request parameter that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class NumberRange:
    """An accepted range of a numeric parameter.

    Attributes:
        low: Lower bound.
        high: Upper bound.
        low_open: Whether ``low`` itself is refused.
        high_open: Whether ``high`` itself is refused.
        integer: Whether the value must be a whole number.
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def text(self) -> str:
        """The range as an interval, e.g. ``[0, 1)``."""
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the range."""
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


NUMBER_PARAMETERS: dict[str, NumberRange] = {
    "confidence_threshold": NumberRange(0.0, 1.0, high_open=True),
    "iou_threshold": NumberRange(0.0, 1.0, low_open=True),
    "max_detections": NumberRange(0, MAX_DETECTIONS_LIMIT, integer=True),
}
"""Thresholds of ``postprocess`` (both ensembles); defaults in its config.pbtxt."""

STRING_PARAMETERS: frozenset[str] = frozenset({"codec"})
"""``detect_video``'s codec (its value is checked by :mod:`camdet.steps.video.pool`)."""

KNOWN_PARAMETERS: tuple[str, ...] = tuple(sorted({*NUMBER_PARAMETERS, *STRING_PARAMETERS}))
"""Every parameter of ``detect_video`` (whose steps see all of them)."""

IMAGE_PARAMETERS: tuple[str, ...] = tuple(sorted(NUMBER_PARAMETERS))
"""The parameters of ``detect``: ``codec`` means nothing to a JPEG/PNG frame."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} chars)"


def check_number(name: str, value: Any) -> float | int:
    """Check one numeric parameter against :data:`NUMBER_PARAMETERS`.

    Args:
        name: A key of :data:`NUMBER_PARAMETERS`.
        value: The value as the request carried it (JSON: int, float, str or bool).

    Returns:
        The value, an ``int`` for integer parameters.

    Raises:
        RequestParameterError: If it is not a finite number, not whole where it must be,
            or outside its range.
    """
    accepted = NUMBER_PARAMETERS[name]
    # bool is an int in Python, but True is no threshold a client means to send.
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if accepted.integer else "a number"
        raise RequestParameterError(
            f"{name} must be {kind}, got {type(value).__name__} {_shown(value)}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestParameterError(f"{name} must be a finite number, got {value}")
    if accepted.integer and value != int(value):
        raise RequestParameterError(f"{name} must be an integer, got {value}")
    if not accepted.contains(value):
        raise RequestParameterError(f"{name} must be in {accepted.text()}, got {_shown(value)}")
    return int(value) if accepted.integer else value


def check_request_parameters(
    params: dict[str, Any], known: tuple[str, ...] = KNOWN_PARAMETERS
) -> dict[str, Any]:
    """Check every parameter of one request.

    Args:
        params: A request's parameters, parsed from its JSON.
        known: The names this ensemble takes (:data:`IMAGE_PARAMETERS` for ``detect``).

    Returns:
        The parameters, numbers converted (``max_detections`` an ``int``).

    Raises:
        RequestParameterError: For the first unknown or invalid parameter, saying why.
    """
    checked: dict[str, Any] = {}
    for name, value in sorted(params.items()):
        if name not in known:
            raise RequestParameterError(
                f"unknown request parameter {_shown(name)} (known: {', '.join(known)})"
            )
        if name in NUMBER_PARAMETERS:
            checked[name] = check_number(name, value)
        elif name in STRING_PARAMETERS:
            if not isinstance(value, str):
                raise RequestParameterError(
                    f"{name} must be a string, got {type(value).__name__} {_shown(value)}"
                )
            checked[name] = value
    return checked
