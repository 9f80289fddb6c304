"""Property tests: whatever a device sends, no value outside its point's
plausible range comes out of the decoding and the gate as good, for each
family (CDU registers, PDU varbinds, BMC SDRs and readings), and an energy
counter taken as good never runs backwards except a reset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Plausible, Point, Quality
from drivers.ipmi.bmc import sensor_plausible, sensor_point
from drivers.ipmi.commands import SensorReading
from drivers.ipmi.sdr import (
    AnalogFormat,
    FullRecordSpec,
    Unit,
    build_full_record,
    parse_sensor_record,
)
from drivers.modbus.cdu_map import (
    HOLDING_COUNT,
    INPUT_COUNT,
    PLAUSIBLE,
    decode_holding_block,
    decode_input_block,
)
from drivers.snmp.protocol_pdu import Tag, VarBind
from drivers.snmp.rack_pdu import _fast_plan, _slow_plan, plausible_ranges
from megapodd.events import EventBus
from megapodd.plausibility import PlausibilityGate

pytestmark = pytest.mark.fuzz

# CDU points that are codes or bit masks: any word is a value.
CDU_UNRANGED = {"alarm_code", "leak_zones", "rack_isolation_mask"}


def _good_numbers(points: dict[str, Point]) -> dict[str, float]:
    return {
        name: float(p.value)
        for name, p in points.items()
        if p.quality is Quality.GOOD
        and isinstance(p.value, int | float)
        and not isinstance(p.value, bool)
    }


def _gated(points: dict[str, Point], lookup: dict[str, Plausible]) -> dict[str, Point]:
    gate = PlausibilityGate("dev", lookup.get, EventBus())
    checked, reasons = gate.check(points, 0.0)
    assert set(reasons) == {n for n, p in checked.items() if p.quality is not points[n].quality}
    return checked


words = st.integers(0, 0xFFFF)


@given(st.lists(words, min_size=INPUT_COUNT, max_size=INPUT_COUNT),
       st.lists(words, min_size=HOLDING_COUNT, max_size=HOLDING_COUNT))  # fmt: skip
def test_cdu_registers_never_give_a_good_value_outside_its_range(
    inputs: list[int], holding: list[int]
) -> None:
    points = {**decode_input_block(inputs), **decode_holding_block(holding)}
    for name, value in _good_numbers(_gated(points, dict(PLAUSIBLE))).items():
        if name in CDU_UNRANGED:
            continue
        plausible = PLAUSIBLE[name]  # every other number has a range
        assert plausible.low <= value <= plausible.high, (name, value)


int32 = st.integers(-(2**31), 2**31 - 1)
varbind_values = st.one_of(
    st.tuples(st.just(Tag.INTEGER), int32 | st.sampled_from([-1, 0, 2**31 - 1, -(2**31)])),
    st.tuples(st.sampled_from([Tag.OCTET_STRING]), st.binary(max_size=4)),
    st.tuples(st.sampled_from([Tag.NULL, Tag.NO_SUCH_OBJECT, Tag.NO_SUCH_INSTANCE]), st.none()),
)
OUTLETS = 6
PLAN = (*_fast_plan(), *_slow_plan(OUTLETS))


@given(st.lists(varbind_values, min_size=len(PLAN), max_size=len(PLAN)),
       st.floats(1.0, 400.0), st.floats(100.0, 1000.0))  # fmt: skip
def test_pdu_varbinds_never_give_a_good_value_outside_its_range(
    answers: list[tuple[Tag, object]], breaker_a: float, supply_v_max: float
) -> None:
    ranges = plausible_ranges(OUTLETS, breaker_a, supply_v_max)
    points = {
        name: convert(VarBind(oid, tag, value))  # type: ignore[arg-type]
        for (oid, name, convert), (tag, value) in zip(PLAN, answers, strict=True)
    }
    for name, value in _good_numbers(_gated(points, ranges)).items():
        plausible = ranges[name]  # every number a PDU meters has a range
        assert plausible.low <= value <= plausible.high, (name, value)


@given(st.lists(st.tuples(st.floats(-1e9, 1e9), st.floats(0.0, 600.0)), max_size=30))
def test_an_energy_counter_taken_as_good_never_runs_backwards_except_a_reset(
    readings: list[tuple[float, float]],
) -> None:
    ranges = plausible_ranges(OUTLETS, 32.0)
    energy = ranges["energy_kwh"]
    gate = PlausibilityGate("pdu", ranges.get, EventBus())
    now_s, last = 0.0, None
    for value, dt in readings:
        now_s += dt
        checked, _ = gate.check({"energy_kwh": Point(value, "kWh")}, now_s)
        if checked["energy_kwh"].quality is not Quality.GOOD:
            continue
        assert energy.low <= value <= energy.high
        if last is not None:
            last_value, last_s = last
            assert value >= last_value or value <= energy.reset_below
            rise = energy.max_rise_per_s * (now_s - last_s) + energy.resolution
            assert value - last_value <= rise * (1 + 1e-9)
        last = (value, now_s)


@given(
    fmt=st.sampled_from([AnalogFormat.UNSIGNED, AnalogFormat.TWOS_COMPLEMENT,
                         AnalogFormat.ONES_COMPLEMENT]),
    unit=st.sampled_from(list(Unit)),
    m=st.integers(-512, 511), b=st.integers(-512, 511),
    k1=st.integers(-8, 7), k2=st.integers(-8, 7),
    bounds=st.tuples(st.integers(0, 255), st.integers(0, 255)),
    raw=st.integers(0, 255),
    unavailable=st.booleans(),
)  # fmt: skip
def test_bmc_readings_never_give_a_good_value_outside_its_range(
    fmt: AnalogFormat, unit: Unit, m: int, b: int, k1: int, k2: int,
    bounds: tuple[int, int], raw: int, unavailable: bool,
) -> None:  # fmt: skip
    spec = FullRecordSpec(1, 1, "Probe", 0x01, unit, m, b, k1, k2, fmt,
                          sensor_min_raw=bounds[0], sensor_max_raw=bounds[1])  # fmt: skip
    record = parse_sensor_record(build_full_record(spec))
    assert record is not None
    plausible, step = sensor_plausible(record)
    point = sensor_point(record, SensorReading(raw, True, True, unavailable, 0))
    checked = _gated({"probe": point}, {"probe": plausible})
    for value in _good_numbers(checked).values():
        assert plausible.low <= value <= plausible.high
        assert record.valid_min <= value <= record.valid_max  # within the SDR's own range
    assert step is None or step > 0
