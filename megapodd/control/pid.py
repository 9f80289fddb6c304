"""PID controller: pure, clock injected, no I/O.

What it does differently from swampd's (CONTROL.md):

- **Derivative on the measurement**, through a first-order filter, so a
  setpoint step never kicks the D term and sensor steps are smoothed.
- **Anti-windup by back-calculation onto the value actually applied.** Each
  update is told what is on the actuator now (``applied``: our own output after
  the arbiter's clamp, slew or quantisation, or a higher owner's value). The
  integrator is pulled towards that value with the tracking time
  ``tracking_tau_s`` (default Ti = kp/ki): ``I += ki*e*dt + dt/Tt*(applied -
  sum of last terms)``. While the output is held (a clamp, a slew limit, an
  override, another controller winning a max selector) the integrator settles
  where ``I + FF`` equals the applied value, so the output asked for is
  ``applied + P``: it never winds past what can be applied, and it leaves
  saturation on the first update after the error changes sign. With Tt = Ti
  this is Shinskey's external reset, which a controller that loses a max
  selector needs: it waits ``kp*|e|`` below the winner and takes over as its
  error reaches zero. ``tracking_tau_s = 0`` tracks fully on every update (the
  velocity form), which under a selector lets a P kick far from the setpoint
  win.
- **Slew limits** for normal moves; a move to failsafe (``failsafe()``) is
  never rate limited.
- **Bumpless transfer**: after ``track()`` (someone else holds the output) or
  ``failsafe()``, the next ``update()`` initialises the integrator so that its
  output equals the applied value; from there the slew limit ramps it.
  Leaving failsafe can instead restore the integrator it had before the fault
  (``failsafe_return = RESTORE``) and slew from the failsafe value towards what
  that gives: the first output is within one slew step of the failsafe value,
  never a step down, and the loop does not carry the failsafe value's offset
  (the P term at that moment) in its integrator for a whole integral time.
- **Explicit direction**: DIRECT acting (cooling: output rises when the
  measurement is above the setpoint) or REVERSE.

With ``ki == 0`` the integrator still holds the bias that makes the output
continuous (manual reset set from the applied value), so a P or PD controller
is bumpless too.

Inputs must be finite: NaN or infinity raises ``ControllerInputError`` and
leaves every state as it was (the caller treats it as no good reading and
drives failsafe; it never feeds it in).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from megapodd.control.numeric import (
    ControllerConfigError,
    ControllerInputError,
    check_setting,
    clamp,
    finite,
    slew,
)

# Below this, an update carries no derivative information.
_MIN_DERIVATIVE_DT_S = 1e-6

class Direction(enum.StrEnum):
    DIRECT = "direct"  # output rises when the measurement is above setpoint (cooling)
    REVERSE = "reverse"  # output rises when the measurement is below setpoint (heating)

    @property
    def sign(self) -> float:
        return 1.0 if self is Direction.DIRECT else -1.0


class PidMode(enum.StrEnum):
    AUTO = "auto"
    MANUAL = "manual"  # someone else holds the output: the controller tracks it
    FAILSAFE = "failsafe"


class FailsafeReturn(enum.StrEnum):
    """How the first update after ``failsafe()`` starts."""

    BUMPLESS = "bumpless"  # integrator absorbs the gap: output = failsafe value
    RESTORE = "restore"  # integrator from before the fault, slewing from the failsafe value


class Limit(enum.StrEnum):
    """Which limit shaped the last output, if any."""

    NONE = "none"
    MIN = "min"
    MAX = "max"
    SLEW = "slew"


@dataclass(frozen=True, slots=True)
class PidConfig:
    """Gains and limits, in the output's units per unit of the measurement.

    kp: output per unit of error. ki: output per (unit of error x second).
    kd: output per (unit of measurement per second). d_filter_tau_s: time
    constant of the first-order filter on the D term (0 = unfiltered).
    slew_up_per_s / slew_down_per_s: the fastest normal move (None = unlimited).
    tracking_tau_s: how fast the integrator follows the applied value
    (None = Ti = kp/ki; 0 = fully on every update; never longer than Ti).
    failsafe_return: see FailsafeReturn (RESTORE needs both slew limits, else
    the return would be a step).
    """

    kp: float
    ki: float = 0.0
    kd: float = 0.0
    d_filter_tau_s: float = 0.0
    out_min: float = 0.0
    out_max: float = 100.0
    slew_up_per_s: float | None = None
    slew_down_per_s: float | None = None
    direction: Direction = Direction.DIRECT
    tracking_tau_s: float | None = None
    failsafe_return: FailsafeReturn = FailsafeReturn.BUMPLESS

    def __post_init__(self) -> None:
        # The direction is explicit, so a negative gain is always a mistake.
        for name in ("kp", "ki", "kd", "d_filter_tau_s"):
            check_setting(getattr(self, name), name)
        for name in ("out_min", "out_max"):
            value = getattr(self, name)
            check_setting(abs(value), name)  # finite; may be negative
        if not self.out_min < self.out_max:
            raise ControllerConfigError(
                f"out_min must be below out_max, got {self.out_min:g} and {self.out_max:g}"
            )
        for name in ("slew_up_per_s", "slew_down_per_s"):
            value = getattr(self, name)
            if value is not None:
                check_setting(value, name, positive=True)
        if self.tracking_tau_s is not None:
            check_setting(self.tracking_tau_s, "tracking_tau_s")
            if self.ki > 0.0 and self.tracking_tau_s > self.kp / self.ki:
                # Slower tracking than Ti settles with I + FF above the applied value.
                raise ControllerConfigError(
                    f"tracking_tau_s {self.tracking_tau_s:g} is longer than Ti = kp/ki = "
                    f"{self.kp / self.ki:g} s: the integrator would wind past the applied value"
                )
        if not isinstance(self.direction, Direction):
            raise ControllerConfigError(f"direction must be direct or reverse: {self.direction!r}")
        if not isinstance(self.failsafe_return, FailsafeReturn):
            raise ControllerConfigError(
                f"failsafe_return must be bumpless or restore: {self.failsafe_return!r}"
            )
        if self.failsafe_return is FailsafeReturn.RESTORE and (
            self.slew_up_per_s is None or self.slew_down_per_s is None
        ):
            raise ControllerConfigError(
                "failsafe_return = restore needs slew_up_per_s and slew_down_per_s "
                "(without them the return from failsafe would be a step)"
            )

    def tracking_fraction(self, dt_s: float) -> float:
        """Share of the gap to the applied value the integrator closes in dt_s."""
        tau_s = self.tracking_tau_s
        if tau_s is None:
            if self.ki == 0.0:
                return 0.0  # no integral: the bias set at the bumpless start stays
            tau_s = self.kp / self.ki
        if tau_s == 0.0:
            return 1.0
        # Forward Euler, capped: at equilibrium I + FF equals the applied value exactly.
        return min(1.0, dt_s / tau_s)


@dataclass(frozen=True, slots=True)
class PidTerms:
    """One update, as the ``loops`` topic shows it."""

    mode: PidMode
    setpoint: float | None
    measurement: float | None
    error: float | None
    p: float
    i: float
    d: float
    ff: float
    output: float
    limit: Limit


class Pid:
    """One loop's PID state. Call ``update``, ``track`` or ``failsafe`` each period."""

    def __init__(self, config: PidConfig) -> None:
        self.config = config
        self._mode = PidMode.MANUAL  # nothing has run: the first update starts bumpless
        self._now_s: float | None = None
        self._measurement: float | None = None
        self._p = self._i = self._d = self._ff = 0.0
        self._output: float | None = None
        self._last: PidTerms | None = None
        self._i_before_failsafe: float | None = None

    @property
    def mode(self) -> PidMode:
        return self._mode

    @property
    def last(self) -> PidTerms | None:
        """The terms of the last update (None before the first)."""
        return self._last

    @property
    def output(self) -> float | None:
        return self._output

    def update(
        self,
        now_s: float,
        measurement: float,
        setpoint: float,
        *,
        feed_forward: float = 0.0,
        applied: float | None = None,
    ) -> float:
        """The output for this period, in auto.

        ``applied`` is what is on the actuator now (the value the arbiter wrote,
        whoever asked for it); None means our last output was applied as is.
        The first update, and the first after ``track`` or ``failsafe``, returns
        the applied value (bumpless; after ``failsafe`` with RESTORE, one slew
        step from it); if nothing is known of the actuator the first output is
        the clamped P + FF.
        """
        cfg = self.config
        finite(measurement, "measurement")
        finite(setpoint, "setpoint")
        finite(feed_forward, "feed_forward")
        dt_s = self._elapsed(now_s)
        reference = self._reference(applied)
        error = cfg.direction.sign * (measurement - setpoint)
        p = cfg.kp * error
        restore = self._i_before_failsafe
        if (
            self._mode is PidMode.FAILSAFE
            and cfg.failsafe_return is FailsafeReturn.RESTORE
            and (restore is not None)
        ):
            # The integrator as before the fault; _limit slews from the failsafe value.
            d, i = 0.0, restore
        elif self._mode is not PidMode.AUTO or self._measurement is None:
            # Bumpless start: the integrator absorbs the gap so that the output
            # equals what is applied; D restarts from rest.
            d = 0.0
            i = 0.0 if reference is None else reference - p - feed_forward
        else:
            # Back-calculation onto the applied value, then integrate.
            i = self._i
            if reference is not None:
                prev_sum = self._p + self._i + self._d + self._ff
                i += cfg.tracking_fraction(dt_s) * (reference - prev_sum)
            i += cfg.ki * error * dt_s
            d = self._filtered_derivative(measurement, dt_s)
        unlimited = p + i + d + feed_forward
        output, limit = self._limit(unlimited, reference, dt_s)
        self._commit(now_s, measurement, PidMode.AUTO, p, i, d, feed_forward, output)
        self._i_before_failsafe = None
        self._last = PidTerms(
            PidMode.AUTO, setpoint, measurement, error, p, i, d, feed_forward, output, limit
        )
        return output

    def track(self, now_s: float, applied: float, measurement: float | None = None) -> float:
        """Someone else holds the output at ``applied``: follow it without winding up."""
        finite(applied, "applied")
        if measurement is not None:
            finite(measurement, "measurement")
        self._elapsed(now_s)
        self._i_before_failsafe = None  # held by someone else: resume from their value
        self._hold(now_s, PidMode.MANUAL, applied, measurement)
        return applied

    def failsafe(self, now_s: float, value: float) -> float:
        """Drive ``value`` at once (never rate limited) and track it."""
        finite(value, "failsafe value")
        self._elapsed(now_s)
        if self._mode is PidMode.AUTO:
            self._i_before_failsafe = self._i  # what the plant needed before the fault
        self._hold(now_s, PidMode.FAILSAFE, value, None)
        return value

    # --- internals -------------------------------------------------------------
    def _elapsed(self, now_s: float) -> float:
        finite(now_s, "now_s")
        if self._now_s is None:
            return 0.0
        dt_s = now_s - self._now_s
        if dt_s < 0.0:
            raise ControllerInputError(
                f"clock ran backwards: now_s {now_s:g} is before the last update {self._now_s:g}"
            )
        return dt_s

    def _reference(self, applied: float | None) -> float | None:
        """What the actuator holds now: the applied value, else our last output."""
        if applied is not None:
            return finite(applied, "applied")
        return self._output

    def _filtered_derivative(self, measurement: float, dt_s: float) -> float:
        cfg = self.config
        # Two updates within a microsecond say nothing about a rate (and an
        # unfiltered kd * change / dt would overflow to infinity).
        if dt_s < _MIN_DERIVATIVE_DT_S or self._measurement is None:
            return self._d
        # Backward Euler of tau*dD/dt + D = kd*sign*dPV/dt: stable for any dt.
        rise = cfg.direction.sign * (measurement - self._measurement)
        return (cfg.d_filter_tau_s * self._d + cfg.kd * rise) / (cfg.d_filter_tau_s + dt_s)

    def _limit(self, unlimited: float, reference: float | None, dt_s: float) -> tuple[float, Limit]:
        cfg = self.config
        output = clamp(unlimited, cfg.out_min, cfg.out_max)
        limit = Limit.NONE
        if output != unlimited:
            limit = Limit.MAX if unlimited > cfg.out_max else Limit.MIN
        if reference is not None:
            slewed = slew(output, reference, dt_s, cfg.slew_up_per_s, cfg.slew_down_per_s)
            # A reference outside the limits (a higher owner's value): limits win.
            slewed = clamp(slewed, cfg.out_min, cfg.out_max)
            if slewed != output:
                output, limit = slewed, Limit.SLEW
        return output, limit

    def _hold(self, now_s: float, mode: PidMode, value: float, measurement: float | None) -> None:
        self._commit(now_s, measurement, mode, 0.0, value, 0.0, 0.0, value)
        self._last = PidTerms(mode, None, measurement, None, 0.0, value, 0.0, 0.0, value,
                              Limit.NONE)  # fmt: skip

    def _commit(
        self,
        now_s: float,
        measurement: float | None,
        mode: PidMode,
        p: float,
        i: float,
        d: float,
        ff: float,
        output: float,
    ) -> None:
        self._now_s = now_s
        self._measurement = measurement
        self._mode = mode
        self._p, self._i, self._d, self._ff = p, i, d, ff
        self._output = output


__all__ = [
    "ControllerConfigError",
    "ControllerInputError",
    "Direction",
    "FailsafeReturn",
    "Limit",
    "Pid",
    "PidConfig",
    "PidMode",
    "PidTerms",
]
