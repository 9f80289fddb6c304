"""When a change of a reading is worth publishing."""

from __future__ import annotations

from drivers.base import PointValue

# Absolute deadband by unit: below the sensors' own resolution or noise.
# Keys are lower case without a degree sign, so "°C", "C" and "c" agree.
_DEADBAND_BY_UNIT: dict[str, float] = {
    "c": 0.1,
    "degc": 0.1,
    "lpm": 0.5,
    "l/min": 0.5,
    "kpa": 0.5,
    "%": 0.5,
    "w": 10.0,
    "a": 0.1,
    "v": 1.0,
    "kwh": 0.1,
    "rpm": 50.0,
}


def changed_beyond_deadband(old: PointValue, new: PointValue, unit: str) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return old != new
    if isinstance(old, int | float) and isinstance(new, int | float):
        return (
            abs(new - old) >= _DEADBAND_BY_UNIT.get(unit.lower().replace("°", ""), 0.0)
            and new != old
        )
    return old != new
