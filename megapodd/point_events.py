"""Turns changes of certain points into events: outlets switching, breakers
tripping, leaks. The store only says which points changed; this keeps the last
value it saw so an event can say from what to what."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from drivers.base import DeviceKind, PointValue, Quality
from megapodd.events import EventBus, Severity
from megapodd.store import PointStore


def _never(_value: PointValue) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class PointRule:
    kind: DeviceKind
    pattern: re.Pattern[str]
    event_type: str
    # A value for which the event is an alarm; an alarming value already
    # present at the first reading is reported too (a leak at start-up).
    alarming: Callable[[PointValue], bool] = _never


RULES: tuple[PointRule, ...] = (
    PointRule(DeviceKind.PDU, re.compile(r"outlet_\d+_state"), "outlet_state_changed"),
    PointRule(
        DeviceKind.PDU,
        re.compile(r"(phase\d_)?load_state"),
        "pdu_load_state_changed",
        lambda v: v == "overload",
    ),
    PointRule(DeviceKind.CDU, re.compile(r"leak"), "leak_changed", lambda v: v is True),
    PointRule(DeviceKind.CDU, re.compile(r"leak_zones"), "leak_zones_changed", lambda v: v != 0),
    PointRule(DeviceKind.BMC, re.compile(r"chassis_power"), "server_power_changed"),
    PointRule(DeviceKind.BMC, re.compile(r"leak"), "leak_changed", lambda v: v is True),
)


class PointEvents:
    def __init__(self, store: PointStore, events: EventBus) -> None:
        self._store = store
        self._events = events
        self._last: dict[tuple[str, str], PointValue] = {}

    def on_change(self, device_id: str, names: frozenset[str]) -> None:
        """Points that changed (a subscriber of the store, wired at the root)."""
        record = self._store.device(device_id)
        for name in names:
            point = record.points.get(name)
            if point is None or point.quality is not Quality.GOOD:
                continue
            rule = next(
                (r for r in RULES if r.kind == record.kind and r.pattern.fullmatch(name)), None
            )
            if rule is None:
                continue
            key = (device_id, name)
            first_sight = key not in self._last
            old = self._last.get(key)
            self._last[key] = point.value
            alarm = rule.alarming(point.value)
            if old == point.value or (first_sight and not alarm):
                continue  # an ordinary first reading is not a change
            severity = Severity.ALARM if alarm else Severity.INFO
            self._events.emit(
                rule.event_type,
                severity,
                device_id,
                f"{device_id} {name}: {old} -> {point.value}",
                {"point": name, "from": old, "to": point.value},
            )
