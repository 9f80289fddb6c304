"""The pod's physical model: energy balance, affinity laws, lags, faults."""

from __future__ import annotations

import itertools

import pytest

from sim_devices.physics import PhysicsInputError, PodModel, ServerId
from sim_devices.physics import constants as k
from sim_devices.plot_step import step_response

SETTLE_S = 3_600.0


def steady(model: PodModel, seconds: float = SETTLE_S) -> None:
    model.step(seconds)


def make(pump_pct: float = 60.0, workload_pct: float = 50.0, seed: int = 0) -> PodModel:
    model = PodModel(racks=2, servers_per_rack=4, seed=seed)
    model.cooling.pump_speed_pct = [pump_pct, 0.0]
    model.set_workload(workload_pct)
    return model


@pytest.mark.parametrize("workload", [0.0, 30.0, 90.0, 100.0])
def test_coolant_carries_electrical_power_minus_air_share(workload: float) -> None:
    model = make(workload_pct=workload)
    steady(model)
    snap = model.snapshot()
    expected_w = snap.total_power_w * k.LIQUID_HEAT_FRACTION
    assert snap.cooling.coolant_heat_w == pytest.approx(expected_w, rel=0.01)
    # ... and the heat exchanger passes the same heat on to facility water.
    assert snap.cooling.hx_heat_w == pytest.approx(expected_w, rel=0.01)
    air_w = sum(s.air_heat_w for s in snap.servers)
    assert air_w + snap.cooling.coolant_heat_w == pytest.approx(snap.total_power_w, rel=0.01)


def test_return_minus_supply_matches_q_over_m_dot_cp() -> None:
    model = make(workload_pct=70.0)
    steady(model)
    c = model.snapshot().cooling
    m_dot_kg_s = c.flow_lpm / 60_000.0 * k.PG25_DENSITY_KG_M3
    q_w = model.snapshot().total_power_w * k.LIQUID_HEAT_FRACTION
    assert c.return_temp_c - c.supply_temp_c == pytest.approx(
        q_w / (m_dot_kg_s * k.PG25_CP_J_KGK), rel=0.01
    )


def test_doubling_flow_halves_coolant_delta_t() -> None:
    slow, fast = make(pump_pct=50.0, workload_pct=80.0), make(pump_pct=100.0, workload_pct=80.0)
    steady(slow)
    steady(fast)
    s, f = slow.snapshot().cooling, fast.snapshot().cooling
    assert f.flow_lpm == pytest.approx(2 * s.flow_lpm, rel=1e-6)
    assert (f.return_temp_c - f.supply_temp_c) == pytest.approx(
        (s.return_temp_c - s.supply_temp_c) / 2, rel=0.01
    )


def test_affinity_laws_for_flow_and_dp() -> None:
    half, full = make(pump_pct=50.0), make(pump_pct=100.0)
    steady(half, 60.0)
    steady(full, 60.0)
    assert full.snapshot().cooling.flow_lpm == pytest.approx(full.design_rack_flow_lpm * 2)
    assert half.diff_pressure_kpa == pytest.approx(full.diff_pressure_kpa / 4, rel=1e-6)
    assert full.diff_pressure_kpa == pytest.approx(k.DESIGN_DP_KPA, rel=1e-6)


def test_design_point_flow_is_one_and_a_half_lpm_per_kw() -> None:
    model = PodModel(racks=8, servers_per_rack=18)
    design_kw = 8 * 18 * k.SERVER_PEAK_W / 1000.0
    assert model.design_rack_flow_lpm * 8 == pytest.approx(1.5 * design_kw)


def test_supply_temperature_lags_a_workload_step_and_settles() -> None:
    """The trace plotted in docs/sim-step-response.png (pump fixed at 60 %)."""
    trace = step_response(60.0, sample_s=1.0)
    supply = trace.supply_c
    assert trace.time_s[600] == pytest.approx(600.0)
    start_c, end_c = supply[0], supply[-1]
    rise_k = end_c - start_c
    assert rise_k > 2.0  # a visible rise
    # A lag, not a jump: after 10 s almost nothing, after 60 s well short of done.
    assert supply[10] - start_c < 0.1 * rise_k
    assert supply[60] - start_c < 0.6 * rise_k
    assert supply[600] - start_c > 0.9 * rise_k
    # Settled: the last five minutes move less than 1 % of the rise.
    assert abs(end_c - supply[1_500]) < 0.01 * rise_k
    # Monotonic: no overshoot in an open-loop plant made of first-order lags.
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(supply))


def test_faster_pump_settles_return_and_gpus_lower() -> None:
    """At 100 % pump the loop settles cooler where it matters: return and GPUs.

    The CDU's supply temperature is the hot-side outlet of the heat exchanger.
    With the facility valve fixed, more secondary flow leaves the exchanger
    sooner, so supply settles *higher* (by ~2.6 K here) while the return and
    every GPU settle lower. In closed loop the valve holds supply; see
    docs/simulator.md, "Step response".
    """
    slow, fast = step_response(60.0), step_response(100.0)
    assert fast.return_c[-1] < slow.return_c[-1] - 2.0
    assert fast.gpu_max_c[-1] < slow.gpu_max_c[-1] - 5.0
    assert 0.0 < fast.supply_c[-1] - slow.supply_c[-1] < 3.0
    # Both rise with a lag and settle.
    for trace in (slow, fast):
        assert trace.supply_c[-1] - trace.supply_c[0] > 4.0
        assert abs(trace.supply_c[-1] - trace.supply_c[-60]) < 0.05


def test_opening_the_facility_valve_lowers_supply() -> None:
    half, full = make(workload_pct=80.0), make(workload_pct=80.0)
    full.cooling.valve_pct = 100.0
    steady(half)
    steady(full)
    approach_k = full.snapshot().cooling.supply_temp_c - k.FACILITY_SUPPLY_C
    assert full.snapshot().cooling.supply_temp_c < half.snapshot().cooling.supply_temp_c - 1.0
    assert 2.0 < approach_k < 6.0


def test_full_valve_design_load_gives_design_approach() -> None:
    model = make(pump_pct=100.0, workload_pct=100.0)
    model.cooling.valve_pct = 100.0
    steady(model)
    approach_k = model.snapshot().cooling.supply_temp_c - k.FACILITY_SUPPLY_C
    assert approach_k == pytest.approx(k.DESIGN_APPROACH_K, abs=0.1)


def test_hot_facility_water_raises_supply() -> None:
    model = make(workload_pct=50.0)
    steady(model)
    before = model.snapshot().cooling.supply_temp_c
    model.cooling.facility_supply_c = 35.0
    steady(model)
    assert model.snapshot().cooling.supply_temp_c == pytest.approx(before + 11.0, abs=0.5)


def test_power_follows_workload_between_idle_and_peak() -> None:
    model = make(workload_pct=0.0)
    steady(model, 10.0)
    idle = model.snapshot().servers[0].power_w
    model.set_workload(100.0)
    steady(model, 10.0)
    peak = model.snapshot().servers[0].power_w
    assert idle == pytest.approx(k.SERVER_IDLE_W, rel=k.IDLE_POWER_SPREAD + 0.001)
    assert peak == pytest.approx(k.SERVER_PEAK_W, rel=0.001)


def test_power_cap_takes_effect_within_two_seconds() -> None:
    model = make(workload_pct=100.0)
    steady(model, 10.0)
    sid = ServerId(1, 1)
    model.server(sid).power_cap_w = 6_000.0
    model.step(2.0)
    assert model.snapshot().server(sid).power_w == pytest.approx(6_000.0, rel=0.01)
    # A cap below idle holds the server at idle: a BMC cannot go lower.
    model.server(sid).power_cap_w = 100.0
    model.step(5.0)
    assert model.snapshot().server(sid).power_w > 0.9 * k.SERVER_IDLE_W


@pytest.mark.parametrize("what", ["chassis_on", "outlet_on"])
def test_server_off_draws_nothing_and_stops_its_fans(what: str) -> None:
    model = make(workload_pct=80.0)
    steady(model, 10.0)
    sid = ServerId(2, 3)
    setattr(model.server(sid), what, False)
    model.step(5.0)
    snap = model.snapshot().server(sid)
    assert snap.power_w < 1.0
    assert not snap.powered
    model.step(5.0)
    assert model.snapshot().server(sid).fan_rpm == (0.0,) * k.FANS_PER_SERVER


def test_a_failed_fan_stands_still_and_the_others_carry_less_air() -> None:
    healthy, broken = make(workload_pct=80.0), make(workload_pct=80.0)
    sid = ServerId(1, 2)
    broken.server(sid).failed_fans.add(3)
    steady(healthy, 120.0)
    steady(broken, 120.0)
    good, bad = healthy.snapshot().server(sid), broken.snapshot().server(sid)
    duty = k.DEFAULT_FAN_DUTY_PCT
    assert bad.fan_rpm == (k.FAN_MAX_RPM * duty / 100, k.FAN_MAX_RPM * duty / 100, 0.0,
                           k.FAN_MAX_RPM * duty / 100)  # fmt: skip
    assert (bad.fan_duty_pct, bad.failed_fans) == (duty, (3,))
    # Three fans of four move 3/4 of the air: the air's temperature rise is 4/3.
    assert bad.outlet_air_c - bad.inlet_air_c == pytest.approx(
        4 / 3 * (good.outlet_air_c - good.inlet_air_c), rel=0.02
    )
    assert broken.snapshot().server(ServerId(1, 1)).fan_rpm == good.fan_rpm  # only that server
    broken.server(sid).failed_fans.discard(3)
    broken.step(1.0)
    assert broken.snapshot().server(sid).fan_rpm == good.fan_rpm


def test_gpus_run_cooler_with_more_flow() -> None:
    slow, fast = make(pump_pct=40.0, workload_pct=80.0), make(pump_pct=100.0, workload_pct=80.0)
    steady(slow)
    steady(fast)
    slow_rise = max(slow.snapshot().servers[0].gpu_temps_c) - slow.snapshot().cooling.supply_temp_c
    fast_rise = max(fast.snapshot().servers[0].gpu_temps_c) - fast.snapshot().cooling.supply_temp_c
    # Convective part ~ flow^-0.8: 40 % flow -> 2.08x the design convective R.
    assert slow_rise > 1.4 * fast_rise


def test_air_outlet_cools_with_fan_duty_and_rpm_follows_duty() -> None:
    low, high = make(workload_pct=80.0), make(workload_pct=80.0)
    for sid in high.server_ids:
        high.server(sid).fan_duty_pct = 100.0
    for sid in low.server_ids:
        low.server(sid).fan_duty_pct = 25.0
    steady(low, 120.0)
    steady(high, 120.0)
    lo, hi = low.snapshot().servers[0], high.snapshot().servers[0]
    assert hi.outlet_air_c < lo.outlet_air_c
    assert (lo.outlet_air_c - lo.inlet_air_c) == pytest.approx(
        4 * (hi.outlet_air_c - hi.inlet_air_c), rel=0.02
    )
    assert hi.fan_rpm[0] == pytest.approx(k.FAN_MAX_RPM)
    assert lo.fan_rpm[0] == pytest.approx(k.FAN_MAX_RPM / 4)


def test_seized_pump_gives_no_flow_and_the_other_pump_restores_it() -> None:
    model = make(pump_pct=80.0)
    steady(model, 30.0)
    model.cooling.pump_seized[0] = True
    model.step(15.0)
    assert model.snapshot().cooling.flow_lpm < 0.01 * model.design_rack_flow_lpm
    model.cooling.pump_speed_pct[1] = 80.0  # the CDU's lag pump takes over
    model.step(15.0)
    assert model.snapshot().cooling.flow_lpm == pytest.approx(
        0.8 * 2 * model.design_rack_flow_lpm, rel=0.01
    )


def test_leak_drains_reservoir_until_isolated() -> None:
    model = make(pump_pct=100.0)
    steady(model, 10.0)
    start = model.reservoir_level_pct
    model.leak_servers.add(ServerId(1, 2))
    model.step(60.0)
    drop = start - model.reservoir_level_pct
    # 2 L/min at design dp from a 100 L reservoir: ~2 % per minute.
    assert drop == pytest.approx(100.0 * k.LEAK_RATE_LPM / k.RESERVOIR_VOLUME_L, rel=0.05)
    assert 1 in model.snapshot().cooling.leak_racks
    assert model.snapshot().server(ServerId(1, 2)).leak
    model.cooling.isolated_racks.add(1)
    level = model.reservoir_level_pct
    model.step(60.0)
    assert model.reservoir_level_pct == pytest.approx(level)


def test_empty_reservoir_stops_flow() -> None:
    model = make(pump_pct=100.0)
    model.leak_racks.update({1, 2})
    model.step(30 * 60.0)
    assert model.reservoir_level_pct <= k.RESERVOIR_CAVITATION_PCT
    model.step(20.0)
    assert model.snapshot().cooling.flow_lpm < 1.0


def test_isolated_rack_overheats_and_trips_its_servers_only() -> None:
    model = make(pump_pct=60.0, workload_pct=60.0)
    steady(model, 600.0)
    model.cooling.isolated_racks.add(1)
    model.step(60.0)
    snap = model.snapshot()
    assert snap.cooling.flow_lpm == pytest.approx(model.design_rack_flow_lpm * 0.6, rel=0.01)
    assert all(s.thermal_trip and not s.powered for s in snap.servers if s.server.rack == 1)
    assert not any(s.thermal_trip for s in snap.servers if s.server.rack == 2)
    # A power cycle re-arms the protection.
    model.cooling.isolated_racks.clear()
    model.step(300.0)
    sid = ServerId(1, 1)
    model.server(sid).chassis_on = False
    model.step(1.0)
    model.server(sid).chassis_on = True
    model.step(10.0)
    assert model.snapshot().server(sid).powered


def test_same_seed_same_pod_other_seed_differs() -> None:
    a, b, c = make(seed=7), make(seed=7), make(seed=8)
    for model in (a, b, c):
        steady(model, 120.0)
    assert a.snapshot() == b.snapshot()
    assert a.snapshot() != c.snapshot()


def test_step_size_does_not_change_the_result_much() -> None:
    fine, coarse = make(workload_pct=70.0), make(workload_pct=70.0)
    for _ in range(1_200):
        fine.step(0.25)
    for _ in range(10):
        coarse.step(30.0)
    assert coarse.snapshot().cooling.supply_temp_c == pytest.approx(
        fine.snapshot().cooling.supply_temp_c, abs=0.05
    )


@pytest.mark.parametrize("dt", [-1.0, float("nan"), float("inf")])
def test_bad_step_is_refused(dt: float) -> None:
    with pytest.raises(PhysicsInputError, match="step"):
        make().step(dt)


def test_bad_inputs_are_named() -> None:
    model = make()
    with pytest.raises(PhysicsInputError, match="workload"):
        model.set_workload(150.0)
    with pytest.raises(PhysicsInputError, match="rack 9"):
        model.set_workload(50.0, rack=9)
    with pytest.raises(PhysicsInputError, match="r3s01"):
        model.server(ServerId(3, 1))
    with pytest.raises(PhysicsInputError, match="at least one rack"):
        PodModel(racks=0, servers_per_rack=4)


def test_server_id_parse_and_name() -> None:
    assert ServerId.parse("r12s07") == ServerId(12, 7)
    assert ServerId(3, 4).name == "r3s04"
    with pytest.raises(ValueError, match="r1s1"):
        ServerId.parse("r1s1")
