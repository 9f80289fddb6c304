"""What every controller shares: refusing non-finite numbers, clamping, slewing.

A controller never sees NaN or infinity: the caller treats such a reading as
no good reading (the loop goes to failsafe), and a controller handed one
raises ``ControllerInputError`` and keeps its state as it was.
"""

from __future__ import annotations

import math


class ControllerInputError(ValueError):
    """A non-finite input (NaN, inf) or a clock that ran backwards; nothing changed."""


class ControllerConfigError(ValueError):
    """Controller settings that make no sense (the message names the setting)."""


def finite(value: float, what: str) -> float:
    """``value`` if it is a finite number, else ControllerInputError naming ``what``."""
    if not math.isfinite(value):
        raise ControllerInputError(f"{what} is not a finite number: {value!r}")
    return value


def check_setting(value: float, what: str, *, positive: bool = False) -> None:
    """A finite, non-negative (or positive) setting, else ControllerConfigError."""
    if not math.isfinite(value):
        raise ControllerConfigError(f"{what} must be a finite number, got {value!r}")
    if positive and value <= 0.0:
        raise ControllerConfigError(f"{what} must be > 0, got {value:g}")
    if value < 0.0:
        raise ControllerConfigError(f"{what} must be >= 0, got {value:g}")


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def slew(
    target: float, start: float, dt_s: float, up_per_s: float | None, down_per_s: float | None
) -> float:
    """``target`` reached from ``start`` in ``dt_s`` at no more than the given rates.

    None means that direction is not rate limited.
    """
    if target > start and up_per_s is not None:
        return min(target, start + up_per_s * dt_s)
    if target < start and down_per_s is not None:
        return max(target, start - down_per_s * dt_s)
    return target
