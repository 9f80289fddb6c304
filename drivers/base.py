"""What every device driver offers the daemon's supervisors.

Drivers turn bytes into typed readings and commands into bytes; they never
import the daemon. A supervisor owns the schedule, timeouts, backoff and the
online/stale/offline state; a driver only connects, reads a group of points and
writes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
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
