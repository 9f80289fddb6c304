"""Turns changes of certain points into events: outlets switching, breakers
tripping, leaks. The store only says which points changed; this keeps the last
value it saw so an event can say from what to what."""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.base import PointValue, Quality
from megapodd.events import EventBus, Severity
from megapodd.store import PointStore


@dataclass(frozen=True, slots=True)
class PointRule:
    kind: str
    pattern: re.Pattern[str]
    event_type: str
    # Severity when the new value is `alarm_value` (if set), else `severity`.
    severity: Severity = Severity.INFO
    alarm_value: PointValue = None


RULES: tuple[PointRule, ...] = (
    PointRule("pdu", re.compile(r"outlet_\d+_state"), "outlet_state_changed"),
    PointRule(
        "pdu",
        re.compile(r"(phase\d_)?load_state"),
        "pdu_load_state_changed",
        Severity.INFO,
        alarm_value="overload",
    ),
    PointRule("cdu", re.compile(r"leak"), "leak_changed", Severity.INFO, alarm_value=True),
    PointRule("bmc", re.compile(r"chassis_power"), "server_power_changed"),
    PointRule("bmc", re.compile(r"leak"), "leak_changed", Severity.INFO, alarm_value=True),
)


class PointEvents:
    def __init__(self, store: PointStore, events: EventBus) -> None:
        self._store = store
        self._events = events
        self._last: dict[tuple[str, str], PointValue] = {}
        store.add_listener(self._on_change)

    def _on_change(self, device_id: str, names: frozenset[str]) -> None:
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
            old = self._last.get(key)
            self._last[key] = point.value
            if old is None or old == point.value:
                continue  # first sight of a point is not a change
            severity = Severity.ALARM if point.value == rule.alarm_value else rule.severity
            self._events.emit(
                rule.event_type,
                severity,
                device_id,
                f"{device_id} {name}: {old} -> {point.value}",
                {"point": name, "from": old, "to": point.value},
            )
