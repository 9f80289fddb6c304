"""First-order low-pass for a loop's input (pure, clock injected).

A sensor's noise through a PID's P term moves the actuator on every update
(valve wear, a Modbus write each period); a short low-pass on the
measurement, well below the plant's time constant, removes it for the cost of
a small lag. Integrated exactly (``1 - exp(-dt/tau)``), so any period is
stable. Non-finite input raises ControllerInputError and changes nothing.
"""

from __future__ import annotations

import math

from megapodd.control.numeric import ControllerInputError, check_setting, finite


class LowPass:
    def __init__(self, tau_s: float) -> None:
        check_setting(tau_s, "tau_s")
        self.tau_s = tau_s
        self._value: float | None = None
        self._now_s: float | None = None

    @property
    def value(self) -> float | None:
        return self._value

    def update(self, now_s: float, x: float) -> float:
        finite(x, "filter input")
        finite(now_s, "now_s")
        if self._value is None or self._now_s is None or self.tau_s == 0.0:
            self._value, self._now_s = x, now_s
            return x
        dt_s = now_s - self._now_s
        if dt_s < 0.0:
            raise ControllerInputError(f"clock ran backwards: {now_s:g} < {self._now_s:g}")
        self._value += (x - self._value) * (1.0 - math.exp(-dt_s / self.tau_s))
        self._now_s = now_s
        return self._value

    def reset(self) -> None:
        """Forget the history (after a gap in good readings: restart from the next one)."""
        self._value = self._now_s = None
