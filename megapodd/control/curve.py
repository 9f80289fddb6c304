"""Stepwise/curve controller with hysteresis (fscd's linear table, for fan zones).

The table maps an input (a temperature) to an output (a fan duty) by linear
interpolation between points, flat beyond the first and last point. Outputs
never fall as the input rises (a fan curve), which is what makes the
hysteresis well defined.

Hysteresis is a play (backlash) band ``hysteresis`` wide in input units: the
output rises with the curve at once, and falls only once the input has dropped
``hysteresis`` below the input at which the curve gives the present output.
Between the two it holds. A constant input therefore gives a constant output
from its second update on, and an actuator that quantises its steps (fscd's
2.5 % PWM) cannot make it oscillate.

No clock: the output is a function of the input history only. Rate limits, if
wanted, belong to the loop that writes the output (``numeric.slew``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from megapodd.control.numeric import ControllerConfigError, check_setting, finite


@dataclass(frozen=True, slots=True)
class CurveConfig:
    """Points ``(input, output)`` with strictly rising inputs and non-falling outputs."""

    points: tuple[tuple[float, float], ...]
    hysteresis: float = 0.0

    def __post_init__(self) -> None:
        if len(self.points) < 1:
            raise ControllerConfigError("a curve needs at least one point")
        for x, y in self.points:
            check_setting(abs(x), "curve input")
            check_setting(abs(y), "curve output")
        for (x0, y0), (x1, y1) in zip(self.points, self.points[1:], strict=False):
            if not x1 > x0:
                raise ControllerConfigError(
                    f"curve inputs must rise strictly: {x1:g} follows {x0:g}"
                )
            if y1 < y0:
                raise ControllerConfigError(
                    f"curve outputs must not fall as the input rises: {y1:g} at {x1:g} "
                    f"follows {y0:g} at {x0:g}"
                )
        check_setting(self.hysteresis, "hysteresis")

    @classmethod
    def of(cls, points: Sequence[tuple[float, float]], hysteresis: float = 0.0) -> CurveConfig:
        return cls(tuple((float(x), float(y)) for x, y in points), float(hysteresis))

    def value(self, x: float) -> float:
        """The curve at ``x``, without hysteresis."""
        xs = [p[0] for p in self.points]
        if x <= xs[0]:
            return self.points[0][1]
        if x >= xs[-1]:
            return self.points[-1][1]
        right = bisect.bisect_right(xs, x)
        (x0, y0), (x1, y1) = self.points[right - 1], self.points[right]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True, slots=True)
class CurveStep:
    input: float
    output: float
    held: bool  # True while the hysteresis band holds the output above the curve


class CurveController:
    def __init__(self, config: CurveConfig) -> None:
        self.config = config
        self._output: float | None = None
        self._last: CurveStep | None = None

    @property
    def output(self) -> float | None:
        return self._output

    @property
    def last(self) -> CurveStep | None:
        return self._last

    def update(self, x: float) -> float:
        """The output for input ``x`` (finite, else ControllerInputError, state kept)."""
        finite(x, "curve input")
        cfg = self.config
        rising = cfg.value(x)
        falling = cfg.value(x + cfg.hysteresis)
        held = self._output
        if held is None or rising >= held:
            output = rising
        elif falling < held:
            output = falling
        else:
            output = held
        self._output = output
        self._last = CurveStep(x, output, output > rising)
        return output

    def reset(self, output: float | None = None) -> None:
        """Forget the history (``output``: start from this value, e.g. after a boost)."""
        if output is not None:
            finite(output, "curve output")
        self._output = output
        self._last = None
