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

    def as_json(self) -> dict[str, object]:
        return {
            "value": self.value,
            "unit": self.unit,
            "quality": self.quality.value,
            "ts": self.ts,
        }


@dataclass(slots=True)
class DeviceRecord:
    id: str
    kind: str  # a DeviceKind
    state: DeviceState = DeviceState.OFFLINE
    reason: str = "not yet polled"
    points: dict[str, StoredPoint] = field(default_factory=dict)

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
        self, device_id: str, readings: Mapping[str, Point], ts: float, mono_s: float
    ) -> None:
        """Record a group's readings; a bad reading keeps the last good one's mono_s."""
        record = self._devices[device_id]
        changed: set[str] = set()
        for name, raw in readings.items():
            reading = _finite(raw)
            old = record.points.get(name)
            last_good = (
                mono_s
                if reading.quality is Quality.GOOD
                else (old.mono_s if old is not None else float("-inf"))
            )
            new = StoredPoint(reading.value, reading.unit, reading.quality, ts, last_good)
            record.points[name] = new
            if old is None or old.value != new.value or old.quality != new.quality:
                changed.add(name)
        if changed:
            self._notify(device_id, frozenset(changed))
        if self.readings and readings:
            self.readings.notify(device_id, frozenset(readings))

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
