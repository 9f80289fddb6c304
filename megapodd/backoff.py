"""Capped exponential backoff with full jitter.

Jitter keeps 144 BMC supervisors (or a fleet of daemons reconnecting to one
broker) from retrying in lock-step after a shared outage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 3.0
    factor: float = 2.0
    jitter: float = 0.2  # +/- this fraction of the delay
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay_s(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return max(0.0, base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self._attempt = 0
