"""Curve controller with hysteresis, the max-of-demands zone, the input low-pass."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from megapodd.control.cascade import FLOOR, ZoneConfig, decide
from megapodd.control.curve import CurveConfig, CurveController
from megapodd.control.filters import LowPass
from megapodd.control.numeric import ControllerConfigError, ControllerInputError

temps = st.floats(-20.0, 150.0, allow_nan=False)


@st.composite
def curves(draw: st.DrawFn) -> CurveConfig:
    xs = sorted(draw(st.sets(st.integers(0, 120), min_size=1, max_size=6)))
    rises = draw(st.lists(st.floats(0.0, 30.0), min_size=len(xs), max_size=len(xs)))
    ys, y = [], draw(st.floats(0.0, 40.0))
    for rise in rises:
        y += rise
        ys.append(y)
    return CurveConfig.of(list(zip(xs, ys, strict=True)), draw(st.floats(0.0, 10.0)))


FAN = CurveConfig.of([(30.0, 20.0), (40.0, 40.0), (50.0, 100.0)], hysteresis=3.0)


@given(curves(), st.lists(temps, max_size=30), temps, st.integers(2, 10))
def test_a_constant_input_never_oscillates(
    config: CurveConfig, history: list[float], x: float, repeats: int
) -> None:
    curve = CurveController(config)
    for h in history:
        curve.update(h)
    first = curve.update(x)
    assert all(curve.update(x) == first for _ in range(repeats))


@given(curves(), st.lists(temps, min_size=1, max_size=40))
def test_output_stays_in_the_hysteresis_band(config: CurveConfig, inputs: list[float]) -> None:
    curve = CurveController(config)
    for x in inputs:
        out = curve.update(x)
        assert config.value(x) <= out <= config.value(x + config.hysteresis)


@given(curves(), st.lists(temps, min_size=1, max_size=20), temps)
def test_a_rise_is_followed_at_once(config: CurveConfig, history: list[float], x: float) -> None:
    curve = CurveController(config)
    for h in history:
        curve.update(h)
    before = curve.output
    assert before is not None
    out = curve.update(x)
    if config.value(x) >= before:
        assert out == config.value(x)


def test_fan_curve_falls_only_after_the_margin() -> None:
    curve = CurveController(FAN)
    assert curve.update(45.0) == pytest.approx(70.0)  # rose with the curve
    assert curve.update(43.0) == pytest.approx(70.0)  # within 3 K below: held
    assert curve.last is not None and curve.last.held
    assert curve.update(42.0) == pytest.approx(70.0)  # exactly 3 K below: still held
    assert curve.update(41.0) == pytest.approx(64.0)  # past the margin: curve(41 + 3)
    assert curve.update(46.0) == pytest.approx(76.0)  # rises at once again
    assert curve.update(10.0) == 20.0  # flat below the first point
    assert curve.update(99.0) == 100.0  # and above the last


def test_curve_refuses_nan_and_keeps_its_state() -> None:
    curve = CurveController(FAN)
    curve.update(45.0)
    with pytest.raises(ControllerInputError, match="curve input"):
        curve.update(math.nan)
    assert curve.output == pytest.approx(70.0)
    assert curve.update(43.0) == pytest.approx(70.0)  # the hysteresis still remembers 45


def test_reset_starts_again_from_a_given_output() -> None:
    curve = CurveController(FAN)
    curve.update(35.0)
    curve.reset(100.0)  # after a fan-failure boost
    assert curve.update(35.0) == pytest.approx(FAN.value(38.0))  # falls through the band


@pytest.mark.parametrize(
    ("points", "hysteresis", "message"),
    [
        ([], 0.0, "at least one point"),
        ([(30, 20), (30, 40)], 0.0, "inputs must rise strictly"),
        ([(30, 40), (40, 20)], 0.0, "must not fall"),
        ([(30, 20)], -1.0, "hysteresis must be >= 0"),
        ([(30, math.nan)], 0.0, "finite"),
    ],
)
def test_bad_curves_are_refused(
    points: list[tuple[float, float]], hysteresis: float, message: str
) -> None:
    with pytest.raises(ControllerConfigError, match=message):
        CurveConfig.of(points, hysteresis)


# --- zone -------------------------------------------------------------------------
@given(
    st.dictionaries(st.text(min_size=1, max_size=5), st.floats(-50.0, 200.0), min_size=1),
    st.floats(0.0, 50.0),
    st.floats(50.0, 100.0),
)
def test_zone_takes_the_largest_demand_floored_and_capped(
    demands: dict[str, float], floor: float, ceiling: float
) -> None:
    decision = decide(ZoneConfig(floor, ceiling), demands)
    assert decision.output == min(max(*demands.values(), floor), ceiling)
    if decision.winner != FLOOR:
        assert demands[decision.winner] == max(demands.values())


def test_zone_names_the_winner() -> None:
    zone = ZoneConfig(20.0, 100.0)
    assert decide(zone, {"flow": 36.9, "gpu_margin": 12.0}).winner == "flow"
    assert decide(zone, {"flow": 36.9, "gpu_margin": 80.0}).winner == "gpu_margin"
    floored = decide(zone, {"flow": 5.0})
    assert (floored.output, floored.winner) == (20.0, FLOOR)


def test_zone_refuses_no_demands_and_nan() -> None:
    zone = ZoneConfig(20.0, 100.0)
    with pytest.raises(ControllerInputError, match="at least one demand"):
        decide(zone, {})
    with pytest.raises(ControllerInputError, match="gpu"):
        decide(zone, {"flow": 50.0, "gpu": math.nan})
    with pytest.raises(ControllerConfigError, match="above its ceiling"):
        ZoneConfig(60.0, 50.0)


# --- low-pass -----------------------------------------------------------------------
@given(st.floats(0.0, 60.0), st.floats(-50.0, 50.0), st.floats(-50.0, 50.0),
       st.lists(st.floats(0.01, 5.0), min_size=1, max_size=30))  # fmt: skip
def test_low_pass_moves_monotonically_towards_a_step(
    tau_s: float, start: float, target: float, dts: list[float]
) -> None:
    low_pass, now_s = LowPass(tau_s), 0.0
    previous = low_pass.update(now_s, start)
    for dt_s in dts:
        now_s += dt_s
        value = low_pass.update(now_s, target)
        assert min(previous, target) - 1e-9 <= value <= max(previous, target) + 1e-9
        previous = value


def test_low_pass_time_constant_and_nan() -> None:
    low_pass = LowPass(5.0)
    low_pass.update(0.0, 0.0)
    assert low_pass.update(5.0, 1.0) == pytest.approx(1.0 - math.exp(-1.0))
    with pytest.raises(ControllerInputError):
        low_pass.update(6.0, math.inf)
    with pytest.raises(ControllerInputError, match="backwards"):
        low_pass.update(4.0, 1.0)
    assert low_pass.value == pytest.approx(1.0 - math.exp(-1.0))
    low_pass.reset()
    assert low_pass.update(7.0, 3.0) == 3.0  # restarts from the next good reading
