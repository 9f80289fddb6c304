"""PID controller properties (megapodd.control.pid), by hypothesis and by example."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from megapodd.control.pid import (
    ControllerConfigError,
    ControllerInputError,
    Direction,
    FailsafeReturn,
    Limit,
    Pid,
    PidConfig,
    PidMode,
)

EPS = 1e-9
finite_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
gains = st.floats(0.0, 50.0, allow_nan=False)
directions = st.sampled_from(list(Direction))
slews = st.one_of(st.none(), st.floats(0.1, 50.0))


@st.composite
def configs(draw: st.DrawFn) -> PidConfig:
    kp = draw(gains)
    ki = draw(st.one_of(st.just(0.0), st.floats(0.001, 5.0)))
    low = draw(st.floats(-100.0, 50.0))
    high = low + draw(st.floats(1.0, 200.0))
    tracking: float | None = draw(st.one_of(st.none(), st.just(0.0)))
    if tracking is None and ki > 0.0 and draw(st.booleans()):
        tracking = draw(st.floats(0.0, 1.0)) * kp / ki  # anything up to Ti
    return PidConfig(
        kp=kp, ki=ki, kd=draw(gains), d_filter_tau_s=draw(st.floats(0.0, 20.0)),
        out_min=low, out_max=high, slew_up_per_s=draw(slews), slew_down_per_s=draw(slews),
        direction=draw(directions), tracking_tau_s=tracking,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Step:
    dt_s: float
    measurement: float
    setpoint: float
    feed_forward: float
    applied: float | None  # None: our last output was applied


steps = st.builds(
    Step,
    dt_s=st.floats(0.0, 5.0),
    measurement=finite_floats,
    setpoint=finite_floats,
    feed_forward=finite_floats,
    applied=st.one_of(st.none(), st.floats(-300.0, 300.0)),
)


@given(configs(), st.lists(steps, min_size=1, max_size=40))
def test_output_always_within_limits(config: PidConfig, sequence: list[Step]) -> None:
    pid, now_s = Pid(config), 0.0
    for step in sequence:
        now_s += step.dt_s
        out = pid.update(now_s, step.measurement, step.setpoint,
                         feed_forward=step.feed_forward, applied=step.applied)  # fmt: skip
        assert config.out_min <= out <= config.out_max
        assert pid.last is not None and pid.last.output == out


@given(configs(), st.floats(-50.0, 250.0), st.lists(steps, min_size=1, max_size=40))
def test_slew_limit_holds_in_auto(config: PidConfig, start: float, sequence: list[Step]) -> None:
    pid, now_s = Pid(config), 0.0
    held = min(max(start, config.out_min), config.out_max)
    reference = pid.update(now_s, 0.0, 0.0, applied=held)
    assert reference == pytest.approx(held, abs=EPS)  # bumpless start from the actuator
    for step in sequence:
        now_s += step.dt_s
        applied = step.applied
        if applied is not None:  # a clamp or a quantiser inside the limits
            applied = min(max(applied, config.out_min), config.out_max)
            reference = applied
        out = pid.update(now_s, step.measurement, step.setpoint,
                         feed_forward=step.feed_forward, applied=applied)  # fmt: skip
        if config.slew_up_per_s is not None:
            assert out - reference <= config.slew_up_per_s * step.dt_s + EPS
        if config.slew_down_per_s is not None:
            assert reference - out <= config.slew_down_per_s * step.dt_s + EPS
        reference = out


@given(
    kp=st.floats(0.0, 20.0),
    ti_s=st.floats(1.0, 60.0),
    kd=st.floats(0.0, 20.0),
    d_filter_tau_s=st.floats(0.0, 10.0),
    dt_s=st.floats(0.1, 2.0),
    error=st.floats(0.5, 20.0),
    flipped=st.floats(0.01, 20.0),
    feed_forward=st.floats(-50.0, 50.0),
    direction=directions,
    tracking=st.sampled_from([None, 0.0, 0.5]),
)
@settings(max_examples=60, deadline=None)
def test_long_saturation_never_winds_up(
    kp: float, ti_s: float, kd: float, d_filter_tau_s: float, dt_s: float, error: float,
    flipped: float, feed_forward: float, direction: Direction, tracking: float | None,
) -> None:  # fmt: skip
    ki = kp / ti_s if kp > 0 else 0.5
    tracking_tau_s = None if tracking is None else tracking * (kp / ki)
    config = PidConfig(
        kp=kp, ki=ki, kd=kd, d_filter_tau_s=d_filter_tau_s, out_min=0.0, out_max=100.0,
        direction=direction, tracking_tau_s=tracking_tau_s,
    )  # fmt: skip
    pid, now_s, setpoint = Pid(config), 0.0, 30.0
    hot = setpoint + direction.sign * error  # the output wants to rise
    pid.update(now_s, hot, setpoint, feed_forward=feed_forward, applied=50.0)
    for _ in range(math.ceil(20.0 * max(ti_s, 1.0) / dt_s)):  # many integral times
        now_s += dt_s
        out = pid.update(now_s, hot, setpoint, feed_forward=feed_forward)
    assume(out == 100.0)  # it did saturate
    terms = pid.last
    assert terms is not None
    # Never wound past what can be applied: I + FF sits at the applied value
    # (within one update's integral when a whole update closes the gap).
    assert terms.i + terms.ff <= 100.0 + ki * error * dt_s + 1e-6
    cold = setpoint - direction.sign * flipped
    outs = []
    for _ in range(2):
        now_s += dt_s
        outs.append(pid.update(now_s, cold, setpoint, feed_forward=feed_forward))
    assert min(outs) < 100.0


@given(configs(), st.floats(-300.0, 300.0), st.lists(steps, min_size=1, max_size=10),
       finite_floats, finite_floats, st.floats(0.01, 5.0), finite_floats)  # fmt: skip
def test_manual_to_auto_is_bumpless(
    config: PidConfig, held: float, before: list[Step], measurement: float, setpoint: float,
    dt_s: float, later_measurement: float,
) -> None:  # fmt: skip
    pid, now_s = Pid(config), 0.0
    for step in before:  # some history, then someone else holds the output
        now_s += step.dt_s
        pid.update(now_s, step.measurement, step.setpoint, feed_forward=step.feed_forward,
                   applied=step.applied)  # fmt: skip
    held = min(max(held, config.out_min), config.out_max)
    now_s += dt_s
    assert pid.track(now_s, held, measurement) == held
    assert pid.mode is PidMode.MANUAL
    now_s += dt_s
    first = pid.update(now_s, measurement, setpoint, feed_forward=1.0)
    assert first == pytest.approx(held, abs=1e-6)
    assert pid.last is not None and pid.last.mode is PidMode.AUTO
    p0 = pid.last.p if pid.last else 0.0
    now_s += dt_s
    second = pid.update(now_s, later_measurement, setpoint, feed_forward=1.0)
    terms = pid.last
    assert terms is not None
    # No jump beyond this update's P change, its integral and its (filtered) D.
    error = terms.error if terms.error is not None else 0.0
    bound = abs(terms.p - p0) + abs(config.ki * error * dt_s) + abs(terms.d)
    assert abs(second - first) <= bound + 1e-6 * (1 + abs(second))


@given(configs(), st.lists(finite_floats, min_size=2, max_size=30), finite_floats,
       finite_floats, st.integers(1, 29))  # fmt: skip
def test_setpoint_step_does_not_kick_the_derivative(
    config: PidConfig, measurements: list[float], setpoint: float, stepped: float, at: int
) -> None:
    steady, stepping = Pid(config), Pid(config)
    for n, measurement in enumerate(measurements):
        now_s = n * 0.5
        steady.update(now_s, measurement, setpoint, applied=0.0)
        stepping.update(now_s, measurement, stepped if n >= at else setpoint, applied=0.0)
        assert steady.last is not None and stepping.last is not None
        assert stepping.last.d == steady.last.d


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["measurement", "setpoint", "feed_forward", "applied", "now_s"])
def test_non_finite_input_is_refused_and_changes_nothing(bad: float, where: str) -> None:
    config = PidConfig(kp=2.0, ki=0.5, kd=1.0, d_filter_tau_s=2.0, slew_up_per_s=5.0)
    victim, twin = Pid(config), Pid(config)
    for pid in (victim, twin):
        pid.update(0.0, 31.0, 30.0, applied=40.0)
        pid.update(1.0, 31.5, 30.0, feed_forward=2.0)
    args: dict[str, float] = {"now_s": 2.0, "measurement": 32.0, "setpoint": 30.0,
                              "feed_forward": 2.0, "applied": 41.0}  # fmt: skip
    args[where] = bad
    with pytest.raises(ControllerInputError, match=where.replace("_", "[_ ]")):
        victim.update(args["now_s"], args["measurement"], args["setpoint"],
                      feed_forward=args["feed_forward"], applied=args["applied"])  # fmt: skip
    assert victim.last == twin.last
    assert victim.update(2.0, 32.0, 30.0) == twin.update(2.0, 32.0, 30.0)
    with pytest.raises(ControllerInputError):
        victim.track(3.0, bad)
    with pytest.raises(ControllerInputError):
        victim.failsafe(3.0, bad)
    assert victim.last == twin.last


def test_a_clock_that_runs_backwards_is_refused() -> None:
    pid = Pid(PidConfig(kp=1.0))
    pid.update(10.0, 1.0, 0.0)
    with pytest.raises(ControllerInputError, match="backwards"):
        pid.update(9.0, 1.0, 0.0)


def test_direct_acting_opens_when_hot_and_reverse_when_cold() -> None:
    cooling = Pid(PidConfig(kp=10.0, direction=Direction.DIRECT))
    heating = Pid(PidConfig(kp=10.0, direction=Direction.REVERSE))
    for pid in (cooling, heating):
        pid.update(0.0, 30.0, 30.0, applied=50.0)
    assert cooling.update(1.0, 31.0, 30.0) == pytest.approx(60.0)  # above setpoint: opens
    assert heating.update(1.0, 31.0, 30.0) == pytest.approx(40.0)  # above setpoint: closes


def test_failsafe_is_immediate_and_the_return_ramps_without_a_step() -> None:
    config = PidConfig(kp=10.0, ki=0.25, slew_up_per_s=5.0, slew_down_per_s=5.0)
    pid = Pid(config)
    pid.update(0.0, 30.0, 30.0, applied=40.0)
    assert pid.failsafe(1.0, 100.0) == 100.0  # 60 % in one update: never rate limited
    assert pid.mode is PidMode.FAILSAFE
    assert pid.failsafe(2.0, 100.0) == 100.0
    # Back in auto with the plant overcooled by the open valve and still cooling.
    outs = [pid.update(3.0, 29.0, 30.0)]
    assert outs[0] == 100.0  # bumpless: from the failsafe value, no step down
    for n in range(1, 10):
        outs.append(pid.update(3.0 + n, 29.0 - n, 30.0))
        assert pid.last is not None and pid.last.limit is Limit.SLEW
    steps_down = [a - b for a, b in itertools.pairwise(outs)]
    assert all(step == pytest.approx(5.0) for step in steps_down)  # a ramp, no step


@given(
    before=st.floats(0.0, 100.0),
    error=st.floats(-5.0, 5.0),
    failsafe_pct=st.floats(0.0, 100.0),
    slew=st.floats(0.5, 20.0),
)
def test_restore_leaves_failsafe_by_slewing_from_it(
    before: float, error: float, failsafe_pct: float, slew: float
) -> None:
    config = PidConfig(kp=10.0, ki=0.25, slew_up_per_s=slew, slew_down_per_s=slew,
                       failsafe_return=FailsafeReturn.RESTORE)  # fmt: skip
    pid = Pid(config)
    pid.update(0.0, 30.0, 30.0, feed_forward=20.0, applied=before)
    integrator = pid.last.i if pid.last else 0.0
    pid.failsafe(1.0, failsafe_pct)
    wanted = min(max(10.0 * error + integrator + 20.0, 0.0), 100.0)
    out = pid.update(2.0, 30.0 + error, 30.0, feed_forward=20.0)
    assert abs(out - failsafe_pct) <= slew + EPS  # within one slew step: never a step
    assert min(failsafe_pct, wanted) - EPS <= out <= max(failsafe_pct, wanted) + EPS
    assert pid.last is not None and pid.last.i == integrator + 0.0  # restored, not rebuilt


def test_restore_needs_slew_limits_and_is_not_used_after_a_hold() -> None:
    with pytest.raises(ControllerConfigError, match="needs slew_up_per_s and slew_down_per_s"):
        PidConfig(kp=1.0, slew_up_per_s=1.0, failsafe_return=FailsafeReturn.RESTORE)
    config = PidConfig(kp=10.0, ki=0.25, slew_up_per_s=5.0, slew_down_per_s=5.0,
                       failsafe_return=FailsafeReturn.RESTORE)  # fmt: skip
    pid = Pid(config)
    pid.update(0.0, 30.0, 30.0, applied=40.0)
    pid.track(1.0, 70.0)  # an override, then the fault
    pid.failsafe(2.0, 100.0)
    assert pid.update(3.0, 31.0, 30.0) == pytest.approx(100.0)  # bumpless: no auto state to restore


def test_an_override_never_winds_it_up() -> None:
    """Held at 100 % by an interlock for an hour with a big error: resumes at once."""
    pid = Pid(PidConfig(kp=10.0, ki=0.25, slew_up_per_s=5.0, slew_down_per_s=5.0))
    pid.update(0.0, 30.0, 30.0, applied=50.0)
    for n in range(1, 3600):
        pid.update(float(n), 40.0, 30.0, applied=100.0)  # asks for more; held at 100
    terms = pid.last
    assert terms is not None and terms.i + terms.ff == pytest.approx(100.0)
    assert pid.update(3600.0, 29.9, 30.0, applied=100.0) < 100.0


def test_terms_are_exposed() -> None:
    pid = Pid(PidConfig(kp=2.0, ki=0.5, kd=4.0, d_filter_tau_s=0.0))
    pid.update(0.0, 30.0, 30.0, feed_forward=10.0, applied=10.0)
    out = pid.update(1.0, 31.0, 30.0, feed_forward=12.0)
    t = pid.last
    assert t is not None
    assert (t.mode, t.setpoint, t.measurement, t.error) == (PidMode.AUTO, 30.0, 31.0, 1.0)
    assert (t.p, t.d, t.ff) == (2.0, 4.0, 12.0)
    assert t.i == pytest.approx(0.5)  # 0 from the bumpless start (10 = 0 + FF), plus ki x 1 K s
    assert out == pytest.approx(t.p + t.i + t.d + t.ff) == pytest.approx(18.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kp": -1.0}, "kp must be >= 0"),
        ({"kp": 1.0, "ki": -0.1}, "ki must be >= 0"),
        ({"kp": 1.0, "kd": math.nan}, "kd must be a finite number"),
        ({"kp": 1.0, "out_min": 10.0, "out_max": 10.0}, "out_min must be below out_max"),
        ({"kp": 1.0, "slew_up_per_s": 0.0}, "slew_up_per_s must be > 0"),
        ({"kp": 1.0, "ki": 0.1, "tracking_tau_s": 11.0}, "longer than Ti"),
        ({"kp": 1.0, "direction": "up"}, "direction must be direct or reverse"),
    ],
)
def test_settings_that_make_no_sense_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ControllerConfigError, match=message):
        PidConfig(**kwargs)  # type: ignore[arg-type]


def test_updates_a_sliver_of_time_apart_never_make_the_output_nan() -> None:
    """Found by hypothesis: kd with no filter and a subnormal dt overflowed to inf."""
    pid = Pid(PidConfig(kp=0.0, ki=0.0, kd=1.0, out_min=0.0, out_max=1.0, slew_up_per_s=1.0))
    pid.update(0.0, 0.0, 0.0, applied=0.0)
    first = pid.update(2.2250738585e-313, 1.0, 0.0)
    second = pid.update(2.2250738585e-313, 0.0, 0.0)
    assert 0.0 <= first <= 1.0 and 0.0 <= second <= 1.0
