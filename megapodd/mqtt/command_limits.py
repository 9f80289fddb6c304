"""How much the fleet may ask of a pod over MQTT at once.

Commands are taken at `rate_per_s` on average with bursts of up to `burst`
(a token bucket on the loop clock), each at most MAX_COMMAND_BYTES, and at
most `burst` of them wait while one runs. The rest are refused at once with
a reply, so a flood from the fleet can neither queue up without bound nor
hold back the commands that follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The largest fleet command is a few hundred bytes; the local API allows 64 KiB.
MAX_COMMAND_BYTES = 4096


class RateLimit:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at_s: float | None = None

    def take(self, now_s: float) -> bool:
        """One command may go now (and is counted), or not."""
        if self._at_s is not None:
            self._tokens = min(self.burst, self._tokens + (now_s - self._at_s) * self.rate_per_s)
        self._at_s = now_s
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(slots=True)
class FleetStats:
    """What became of the commands (read by the metrics)."""

    results: dict[str, int] = field(default_factory=dict)  # "ok" / "refused", with an answer
    refusals: dict[str, int] = field(default_factory=dict)  # refused before running, by reason
    unanswered: int = 0  # refusals that had no usable response topic

    def result(self, ok: bool) -> None:
        key = "ok" if ok else "refused"
        self.results[key] = self.results.get(key, 0) + 1

    def refusal(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
