"""PointStore: the latest value of every point of every device.

Supervisors write into it; the safety engine, the loops, the point events, the
MQTT telemetry and the local API read from it. Consumers are told through
subscribers (megapodd/subscribers.py), wired at the composition root: of
changes (`changes`) or of every reading, changed or not (`readings`: the
interlocks count agreeing reads). A consumer that fails is an alarm, never a
device taken offline.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from drivers.base import Point, PointValue, Quality
from megapodd.events import EventBus
from megapodd.selectors import point_matches
from megapodd.subscribers import Subscribers


class DeviceState(enum.StrEnum):
    ONLINE = "online"  # the last poll of every group succeeded
    STALE = "stale"  # reachable, but some reading failed and data is aging
    OFFLINE = "offline"  # no link, or failures beyond the supervisor's threshold


@dataclass(frozen=True, slots=True)
class StoredPoint:
    value: PointValue
    unit: str
    quality: Quality
    ts: float  # wall clock (epoch s) of the reading, for people and subscribers
    mono_s: float  # loop clock of the last good reading, for staleness
    reason: str | None = None  # why a reading is BAD, when the plausibility gate knows
    # The last reading moved further than credible and was not confirmed: the
    # value is still the last good one (drivers.base.Point.unconfirmed).
    unconfirmed: bool = False

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "value": self.value,
            "unit": self.unit,
            "quality": self.quality.value,
            "ts": self.ts,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.unconfirmed:
            out["unconfirmed"] = True
        return out


@dataclass(slots=True)
class DeviceRecord:
    id: str
    kind: str  # a DeviceKind
    state: DeviceState = DeviceState.OFFLINE
    reason: str = "not yet polled"
    points: dict[str, StoredPoint] = field(default_factory=dict)
    # How many of `points` are not GOOD, kept by the store as it writes them:
    # the interlocks' per-tick stale check skips a device with none.
    not_good: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state.value,
            "reason": self.reason,
            "points": {name: p.as_json() for name, p in sorted(self.points.items())},
        }


def _finite(reading: Point) -> Point:
    """A NaN or infinite value is no reading at all: keep it out of JSON and logic."""
    if isinstance(reading.value, float) and not math.isfinite(reading.value):
        return Point(None, reading.unit, Quality.BAD)
    return reading


class PointStore:
    def __init__(self, events: EventBus | None = None) -> None:
        self._devices: dict[str, DeviceRecord] = {}
        # (device, glob) -> (how many points the device had, the names matching).
        self._matching: dict[tuple[str, str], tuple[int, list[str]]] = {}
        # Told of the points (or "state") that changed.
        self.changes = Subscribers(events)
        # Told of every reading, changed or not.
        self.readings = Subscribers(events)

    def add_device(self, device_id: str, kind: str) -> None:
        if device_id in self._devices:
            raise ValueError(f"device {device_id!r} is already registered")
        self._devices[device_id] = DeviceRecord(id=device_id, kind=kind)

    def device(self, device_id: str) -> DeviceRecord:
        return self._devices[device_id]

    def devices(self) -> Iterable[DeviceRecord]:
        return self._devices.values()

    def get(self, device_id: str, point: str) -> StoredPoint | None:
        return self._devices[device_id].points.get(point)

    def matching(self, device_id: str, pattern: str) -> list[str]:
        """The device's point names that match a glob, in the order first read.

        The loops ask this of every input on every read (a PDU has ~300 points);
        the answer is kept until the device gains a point: points are never
        removed from a record, so an unchanged count is an unchanged set."""
        points = self._devices[device_id].points
        key = (device_id, pattern)
        cached = self._matching.get(key)
        if cached is not None and cached[0] == len(points):
            return cached[1]
        names = [name for name in points if point_matches(pattern, name)]
        self._matching[key] = (len(points), names)
        return names

    def update(
        self,
        device_id: str,
        readings: Mapping[str, Point],
        ts: float,
        mono_s: float,
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        """Record a group's readings; a bad reading keeps the last good one's mono_s.

        An unconfirmed reading changes nothing but the flag: the point keeps its
        last good value (and ages as it would without a reading), and it is no
        reading for the `readings` subscribers (the interlocks count reads)."""
        record = self._devices[device_id]
        changed: set[str] = set()
        read: set[str] = set()
        for name, raw in readings.items():
            old = record.points.get(name)
            if raw.unconfirmed:
                if old is not None and not old.unconfirmed:
                    record.points[name] = replace(old, unconfirmed=True)
                    changed.add(name)
                continue
            read.add(name)
            reading = _finite(raw)
            last_good = (
                mono_s
                if reading.quality is Quality.GOOD
                else (old.mono_s if old is not None else float("-inf"))
            )
            reason = reasons.get(name) if reasons else None
            new = StoredPoint(reading.value, reading.unit, reading.quality, ts, last_good, reason)
            record.points[name] = new
            record.not_good += (new.quality is not Quality.GOOD) - (
                old is not None and old.quality is not Quality.GOOD
            )
            if (
                old is None
                or old.value != new.value
                or old.quality != new.quality
                or old.unconfirmed
                or old.reason != new.reason
            ):
                changed.add(name)
        if changed:
            self._notify(device_id, frozenset(changed))
        if self.readings and read:
            self.readings.notify(device_id, frozenset(read))

    def mark_stale(
        self, device_id: str, names: Iterable[str], now_mono_s: float, stale_after_s: float
    ) -> int:
        """Points with no good reading for stale_after_s become STALE (invariant 2)."""
        record = self._devices[device_id]
        changed: set[str] = set()
        for name in names:
            point = record.points.get(name)
            # Only good values age: a BAD one is still being read, and turning
            # it STALE would flap it between the two on every poll.
            if point is None or point.quality is not Quality.GOOD:
                continue
            if now_mono_s - point.mono_s >= stale_after_s:
                record.points[name] = replace(point, quality=Quality.STALE)
                record.not_good += 1
                changed.add(name)
        if changed:
            self._notify(device_id, frozenset(changed))
        return len(changed)

    def set_state(self, device_id: str, state: DeviceState, reason: str) -> DeviceState:
        """Set a device's state; returns the previous one."""
        record = self._devices[device_id]
        previous = record.state
        record.state, record.reason = state, reason
        if previous is not state:
            self._notify(device_id, frozenset({"state"}))
        return previous

    def _notify(self, device_id: str, names: frozenset[str]) -> None:
        self.changes.notify(device_id, names)
