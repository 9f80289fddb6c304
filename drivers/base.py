"""What every device driver offers the daemon's supervisors.

Drivers turn bytes into typed readings and commands into bytes; they never
import the daemon. A supervisor owns the schedule, timeouts, backoff and the
online/stale/offline state; a driver only connects, reads a group of points and
writes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

PointValue = float | int | str | bool | None


class DeviceKind(enum.StrEnum):
    """The device families of a pod (DEVICES.md)."""

    CDU = "cdu"
    PDU = "pdu"
    BMC = "bmc"


class Quality(enum.StrEnum):
    """How far a reading can be trusted."""

    GOOD = "good"
    BAD = "bad"  # read, but out of range, flagged unavailable, or unconfirmed
    STALE = "stale"  # no good reading for the point's stale_after


@dataclass(frozen=True, slots=True)
class Point:
    """One reading as a driver returns it (the daemon adds the timestamp)."""

    value: PointValue
    unit: str = ""
    quality: Quality = Quality.GOOD
    # A reading that moved further than its sensor can credibly move and was
    # not confirmed by the reads after it (BMCs: drivers/ipmi/bmc.py): the
    # daemon keeps the point's last good value and marks it unconfirmed.
    unconfirmed: bool = False


@dataclass(frozen=True, slots=True)
class Plausible:
    """The values a point can physically take, declared once per device family
    next to the point's decoding; the supervisor's gate (megapodd/plausibility.py)
    makes a reading outside them BAD, with the reason.

    A counter (energy) never runs backwards, except a reset: a reading at or
    below `reset_below` after a higher one. It rises no faster than
    `max_rise_per_s` (the device's largest power) plus one `resolution`.
    """

    low: float
    high: float
    counter: bool = False
    reset_below: float = 0.0
    max_rise_per_s: float = float("inf")
    resolution: float = 0.0

    def refuses(self, value: float, last: float | None, elapsed_s: float) -> str | None:
        """Why `value` cannot be true (None: it can); `last` is the last good
        reading of a counter, `elapsed_s` the time since it."""
        if not self.low <= value <= self.high:  # also refuses NaN
            return f"{value!r} outside the plausible {self.low:g}..{self.high:g}"
        if not self.counter or last is None:
            return None
        if value < last:
            if value <= self.reset_below:
                return None  # a reset to zero
            return f"counter ran backwards from {last!r} to {value!r}"
        rise_limit = self.max_rise_per_s * max(elapsed_s, 0.0) + self.resolution
        if value - last > rise_limit * (1 + 1e-9):  # not binary noise of the scale
            rise = value - last
            return f"counter rose by {rise:.6g} in {elapsed_s:.3g} s (at most {rise_limit:.6g})"
        return None


# Looks up a point's plausible range by name (None: not a number, or unchecked).
PlausibleLookup = Callable[[str], "Plausible | None"]


@dataclass(frozen=True, slots=True)
class PollGroup:
    """Points read together in one go, at their own rate."""

    name: str
    period_s: float


class DeviceDriver(Protocol):
    """The contract between a driver and its supervisor."""

    @property
    def kind(self) -> DeviceKind:
        """Which family of device this driver speaks to."""
        ...

    def poll_groups(self) -> Sequence[PollGroup]:
        """The groups to poll and their periods."""
        ...

    async def connect(self) -> None:
        """Open the link. Raises TransportError or ConfigurationError."""
        ...

    async def close(self) -> None:
        """Close the link; safe to call when not connected."""
        ...

    async def read_group(self, group: str) -> Mapping[str, Point]:
        """Read one group. Raises TransportError, DeviceError or ConfigurationError."""
        ...

    def link_stats(self) -> Mapping[str, int]:
        """Monotonic counters of the link, never reset. Every driver reports at
        least LINK_STAT_KEYS (the fleet's metrics count them alike for every
        device); it may add its own."""
        ...


# The counters every driver's link_stats() carries.
LINK_STAT_KEYS = ("requests", "retries", "timeouts", "frame_errors", "device_errors")
