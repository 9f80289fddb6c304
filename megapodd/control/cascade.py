"""swampd's cascade: several demands for one output, the largest wins, floored.

Each thermal controller (or a feed-forward) states a demand in the output's
units; the zone takes the maximum, never goes below its floor (a pump's or a
fan's minimum speed) and never above its ceiling. The decision names the
demand that won, for the ``loops`` topic and for events.

Every demand must be present and finite: a loop whose input is bad drives its
failsafe instead of asking the zone (an absent demand would silently lower the
output, the swampd fault CONTROL.md lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from megapodd.control.numeric import (
    ControllerConfigError,
    ControllerInputError,
    check_setting,
    finite,
)

FLOOR = "floor"  # the name in ZoneDecision.winner when the floor holds the output


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    floor: float
    ceiling: float

    def __post_init__(self) -> None:
        check_setting(abs(self.floor), "floor")
        check_setting(abs(self.ceiling), "ceiling")
        if not self.floor <= self.ceiling:
            raise ControllerConfigError(
                f"zone floor {self.floor:g} is above its ceiling {self.ceiling:g}"
            )


@dataclass(frozen=True, slots=True)
class ZoneDecision:
    output: float
    winner: str  # the demand that set the output, or FLOOR
    demands: tuple[tuple[str, float], ...]


def decide(config: ZoneConfig, demands: Mapping[str, float]) -> ZoneDecision:
    """max(demands), floored and capped; ControllerInputError if none or any non-finite."""
    if not demands:
        raise ControllerInputError("a zone needs at least one demand")
    for name, value in demands.items():
        finite(value, f"demand {name!r}")
    winner, top = max(demands.items(), key=lambda item: item[1])
    if top < config.floor:
        winner, output = FLOOR, config.floor
    else:
        output = min(top, config.ceiling)
    return ZoneDecision(output, winner, tuple(demands.items()))
