"""Exponential backoff with jitter, for camera reconnects and server probes."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """How long to wait between attempts.

    Attributes:
        initial_s: First delay, seconds.
        max_s: Largest delay, seconds.
        factor: Growth per failed attempt.
        jitter: Each delay is scaled by a uniform factor in ``[1 - jitter, 1]`` so that
            many cameras losing the same network do not retry in lockstep.
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid backoff policy {self}")


class Backoff:
    """Successive delays of one retry loop; :meth:`reset` after a success."""

    def __init__(self, policy: BackoffPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds (grows until ``max_s``)."""
        ceiling = min(self.policy.max_s, self.policy.initial_s * self.policy.factor**self._attempt)
        if ceiling < self.policy.max_s:
            self._attempt += 1
        return ceiling * (1.0 - self.policy.jitter * self._rng.random())

    def reset(self) -> None:
        """Start again from ``initial_s``."""
        self._attempt = 0
