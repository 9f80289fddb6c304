"""The plausibility gate: no reading outside its point's plausible range is GOOD.

Each device family declares its ranges once, next to its decoding
(`drivers.modbus.cdu_map.PLAUSIBLE`, `SnmpPduDriver.plausible`,
`BmcDriver.plausible`: a `drivers.base.Plausible` per point). Each supervisor
passes every group's readings through its device's gate before the store sees
them, so this is the one place where they are applied. A reading outside is
BAD with the reason (shown in the state payload); the first of a streak of
them is a `point_implausible` event, and each is counted in the device's link
statistics (`implausible`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from drivers.base import Plausible, PlausibleLookup, Point, Quality
from megapodd.events import EventBus, Severity


def _number(point: Point) -> float | None:
    value = point.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class PlausibilityGate:
    def __init__(self, device_id: str, lookup: PlausibleLookup, events: EventBus) -> None:
        self._device_id = device_id
        self._lookup = lookup
        self._events = events
        self._counters: dict[str, tuple[float, float]] = {}  # last good (value, loop time)
        self._streaks: set[str] = set()  # points whose last reading was implausible
        self.implausible = 0  # readings refused, ever

    def forget_counters(self) -> None:
        """After a reconnect the device may have been replaced or reset: a
        counter's next reading starts afresh."""
        self._counters.clear()

    def check(
        self, readings: Mapping[str, Point], now_s: float
    ) -> tuple[dict[str, Point], dict[str, str]]:
        """The readings with every implausible one BAD, and why each is."""
        out = dict(readings)
        reasons: dict[str, str] = {}
        for name, point in readings.items():
            if point.quality is not Quality.GOOD or point.unconfirmed:
                continue
            value = _number(point)
            plausible = self._lookup(name) if value is not None else None
            if value is None or plausible is None:
                continue
            why = self._refuses(name, plausible, value, now_s)
            if why is None:
                self._streaks.discard(name)
                continue
            out[name] = replace(point, quality=Quality.BAD)
            reasons[name] = why
            self.implausible += 1
            if name not in self._streaks:
                self._streaks.add(name)
                self._events.emit(
                    "point_implausible",
                    Severity.WARNING,
                    self._device_id,
                    f"{self._device_id} {name}: {point.value!r} {point.unit} is implausible: {why}",
                    {"point": name, "value": point.value, "reason": why},
                )
        return out, reasons

    def _refuses(self, name: str, plausible: Plausible, value: float, now_s: float) -> str | None:
        if not plausible.counter:
            return plausible.refuses(value, None, 0.0)
        last = self._counters.get(name)
        if last is None:
            why = plausible.refuses(value, None, 0.0)
        else:
            why = plausible.refuses(value, last[0], now_s - last[1])
        if why is None:
            self._counters[name] = (value, now_s)
        return why
