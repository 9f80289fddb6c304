"""Issue 9's step-response targets, closed loop in simulated time (bench/control_plant.py).

The recommended CDU loops against the simulator's model and CDU logic at the
daemon's sample rates: `workload all 30 -> 90` and back, shorter holds than
the bench. Deterministic (seed 0), about a second of CPU per run.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.control_plant import (
    RECOMMENDED_PUMP,
    RECOMMENDED_SUPPLY,
    Phase,
    WindowResult,
    measure,
    run,
    workload_steps,
)
from sim_devices.profiles import PROFILES, Profile

SMALL = PROFILES[Profile.SMALL]


def step_response(ff: bool) -> list[WindowResult]:
    supply = replace(RECOMMENDED_SUPPLY, ff_enabled=ff)
    result = run(SMALL, supply, RECOMMENDED_PUMP, workload_steps(hold_s=300.0, warmup_s=300.0))
    return [measure(result, w, supply.setpoint_c) for w in result.windows]


@pytest.fixture(scope="module")
def with_ff() -> list[WindowResult]:
    return step_response(ff=True)


@pytest.fixture(scope="module")
def without_ff() -> list[WindowResult]:
    return step_response(ff=False)


def test_step_response_meets_the_targets(with_ff: list[WindowResult]) -> None:
    assert [r.label for r in with_ff] == ["30 % -> 90 %", "90 % -> 30 %"]
    for r in with_ff:
        assert abs(r.max_dev_k) <= 1.5, r
        assert r.settle_s is not None and r.settle_s <= 120.0, r
        assert r.peak_gpu_c < 80.0, r
        assert r.pump_pct[1] > 85.0 and r.valve_pct[1] > 60.0  # the loops did move


def test_without_feed_forward_it_is_measurably_worse(
    with_ff: list[WindowResult], without_ff: list[WindowResult]
) -> None:
    for on, off in zip(with_ff, without_ff, strict=True):
        assert abs(off.max_dev_k) > 3.0 * abs(on.max_dev_k), (on, off)
        assert off.settle_s is None or (on.settle_s is not None and off.settle_s > on.settle_s)


def test_a_saturated_valve_does_not_wind_up() -> None:
    """Facility water too warm to hold 30 C: the valve sits at 100 % with I + FF = 100 %."""
    phases = [
        Phase(300.0, workload_pct=90.0, measured=False),
        Phase(600.0, facility_supply_c=40.0),
        Phase(300.0, facility_supply_c=24.0),
    ]
    result = run(SMALL, RECOMMENDED_SUPPLY, RECOMMENDED_PUMP, phases)
    hot_window, back_window = result.windows
    tr = result.trace
    assert tr.valve_pct[hot_window.end - 1] == 100.0
    assert tr.valve_i_plus_ff_pct[hot_window.end - 1] == pytest.approx(100.0, abs=0.5)
    crossed = next(i for i in range(back_window.start, back_window.end) if tr.supply_c[i] <= 30.0)
    left = next(i for i in range(back_window.start, back_window.end) if tr.valve_pct[i] < 99.95)
    assert (left - crossed) * 0.25 <= 10.0  # leaves saturation as soon as the error turns
    assert max(tr.gpu_c[hot_window.start : hot_window.end]) < 80.0
