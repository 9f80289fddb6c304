"""CDU register codec: raw words -> named points with units, and the write range checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Quality
from drivers.errors import FrameError, ValueRejected
from drivers.modbus import cdu_map as m
from drivers.modbus.cdu_map import ControlMode, LeadPump


def input_block(**overrides: int) -> list[int]:
    regs = [0] * m.INPUT_COUNT
    for name, raw in overrides.items():
        regs[getattr(m, f"IR_{name.upper()}")] = raw
    return regs


def holding_block(**overrides: int) -> list[int]:
    regs = [3, 1, 6000, 0, 500, 10, 0, 10000, 0, 1500]
    for name, raw in overrides.items():
        regs[getattr(m, f"HR_{name.upper()}") - m.HOLDING_START] = raw
    return regs


def test_temperatures_are_signed_hundredths() -> None:
    points = m.decode_input_block(
        input_block(
            supply_temp=0xFDF3,  # -525 -> -5.25 °C
            return_temp=4512,
            facility_supply_temp=0xFFFF,  # -1 -> -0.01 °C
            facility_return_temp=0x8000,  # -327.68: a broken transmitter
        )
    )
    assert points["supply_temp_c"].value == -5.25
    assert points["supply_temp_c"].unit == "C"
    assert points["supply_temp_c"].quality is Quality.GOOD
    assert points["return_temp_c"].value == 45.12
    assert points["facility_supply_temp_c"].value == -0.01
    assert points["facility_return_temp_c"].value == -327.68
    assert points["facility_return_temp_c"].quality is Quality.BAD


def test_scaled_analogues_and_units() -> None:
    points = m.decode_input_block(
        input_block(
            flow=6123,
            supply_pressure=2501,
            return_pressure=1000,
            diff_pressure=1501,
            pump1_speed=7071,
            pump2_speed=10000,
            reservoir_level=805,
            valve_position=1000,
        )
    )
    expected = {
        "flow_lpm": (612.3, "lpm"),
        "supply_pressure_kpa": (250.1, "kPa"),
        "return_pressure_kpa": (100.0, "kPa"),
        "diff_pressure_kpa": (150.1, "kPa"),
        "pump1_speed_pct": (70.71, "%"),
        "pump2_speed_pct": (100.0, "%"),
        "reservoir_level_pct": (80.5, "%"),
        "facility_valve_position_pct": (100.0, "%"),
    }
    for name, (value, unit) in expected.items():
        assert points[name].value == pytest.approx(value), name
        assert points[name].unit == unit
        assert points[name].quality is Quality.GOOD


def test_percent_above_full_scale_is_bad() -> None:
    points = m.decode_input_block(input_block(pump1_speed=10001, reservoir_level=1001))
    assert points["pump1_speed_pct"].quality is Quality.BAD
    assert points["reservoir_level_pct"].quality is Quality.BAD


def test_heat_load_is_uint32_high_word_first() -> None:
    points = m.decode_input_block(input_block(heat_load_hi=0x0006, heat_load_lo=0x1A80))
    assert points["heat_load_w"].value == 400_000
    assert points["heat_load_w"].unit == "W"
    points = m.decode_input_block(input_block(heat_load_hi=0xFFFF, heat_load_lo=0xFFFF))
    assert points["heat_load_w"].value == 0xFFFF_FFFF


@pytest.mark.parametrize(
    ("bit", "name"),
    [
        (0, "pump1_running"),
        (1, "pump2_running"),
        (2, "pump1_fault"),
        (3, "pump2_fault"),
        (4, "leak"),
        (5, "reservoir_low"),
        (6, "watchdog_expired"),
        (7, "local_mode"),
        (8, "filter_dp_high"),
    ],
)
def test_each_status_bit_maps_to_its_own_flag(bit: int, name: str) -> None:
    points = m.decode_input_block(input_block(status=1 << bit))
    flags = {n: points[n].value for n, _ in m.STATUS_POINTS}
    assert flags == {n: n == name for n in flags}


def test_alarm_leak_zones_firmware() -> None:
    points = m.decode_input_block(input_block(alarm_code=20, leak_zones=0b1010, firmware=0x0207))
    assert points["alarm_code"].value == 20
    assert points["leak_zones"].value == 0b1010
    assert points["firmware_version"].value == "2.7"


def test_input_block_has_every_documented_point() -> None:
    names = set(m.decode_input_block(input_block()))
    assert names == {
        "supply_temp_c", "return_temp_c", "facility_supply_temp_c", "facility_return_temp_c",
        "flow_lpm", "supply_pressure_kpa", "return_pressure_kpa", "diff_pressure_kpa",
        "pump1_speed_pct", "pump2_speed_pct", "reservoir_level_pct",
        "facility_valve_position_pct", "heat_load_w", "pump1_running", "pump2_running",
        "pump1_fault", "pump2_fault", "leak", "reservoir_low", "watchdog_expired",
        "local_mode", "filter_dp_high", "alarm_code", "leak_zones", "firmware_version",
    }  # fmt: skip


def test_holding_block_defaults() -> None:
    points = m.decode_holding_block(holding_block())
    values = {name: p.value for name, p in points.items()}
    assert values == {
        "remote_enable": True,
        "run": True,
        "control_mode": "local_dp",
        "pump_speed_setpoint_pct": 60.0,
        "lead_pump": "auto",
        "facility_valve_setpoint_pct": 50.0,
        "watchdog_timeout_s": 10,
        "failsafe_speed_pct": 100.0,
        "rack_isolation_mask": 0,
        "local_dp_setpoint_kpa": 150.0,
    }
    assert points["watchdog_timeout_s"].unit == "s"
    assert points["local_dp_setpoint_kpa"].unit == "kPa"


def test_holding_control_bits_and_enums() -> None:
    points = m.decode_holding_block(holding_block(control=0b10, control_mode=0, lead_pump=2))
    assert points["remote_enable"].value is False
    assert points["run"].value is True
    assert points["control_mode"].value == "remote_speed"
    assert points["lead_pump"].value == "pump2"


def test_unknown_enum_values_are_bad_not_errors() -> None:
    points = m.decode_holding_block(holding_block(control_mode=7, lead_pump=0xFFFF))
    assert points["control_mode"].value == "unknown(7)"
    assert points["control_mode"].quality is Quality.BAD
    assert points["lead_pump"].quality is Quality.BAD


@pytest.mark.parametrize("count", [0, 17, 19])
def test_wrong_block_length_is_a_frame_error(count: int) -> None:
    with pytest.raises(FrameError, match=f"expected 18 registers, got {count}"):
        m.decode_input_block([0] * count)


def test_non_word_register_is_a_frame_error() -> None:
    regs = holding_block()
    regs[3] = 0x10000
    with pytest.raises(FrameError, match="not a 16-bit word"):
        m.decode_holding_block(regs)


@given(st.lists(st.integers(0, 0xFFFF), min_size=18, max_size=18))
def test_any_input_block_decodes(regs: list[int]) -> None:
    points = m.decode_input_block(regs)
    assert len(points) == 25
    low = -327.68 <= float(points["supply_temp_c"].value or 0) <= 327.67
    assert low


@pytest.mark.parametrize(
    ("limit", "value", "raw"),
    [
        (m.PUMP_SPEED_LIMIT, 20.0, 2000),
        (m.PUMP_SPEED_LIMIT, 100.0, 10000),
        (m.PUMP_SPEED_LIMIT, 75.55, 7555),
        (m.VALVE_LIMIT, 0.0, 0),
        (m.VALVE_LIMIT, 42.3, 423),
        (m.WATCHDOG_LIMIT, 600, 600),
    ],
)
def test_limits_scale_values_inside(limit: m.Limit, value: float, raw: int) -> None:
    assert limit.to_raw(value) == raw


@pytest.mark.parametrize(
    ("limit", "value", "message"),
    [
        (m.PUMP_SPEED_LIMIT, 15.0, "pump speed setpoint 15.0 % is outside 20–100 %"),
        (m.PUMP_SPEED_LIMIT, 100.01, "outside 20–100 %"),
        (m.PUMP_SPEED_LIMIT, math.nan, "outside 20–100 %"),
        (m.FAILSAFE_SPEED_LIMIT, 19.99, "failsafe pump speed"),
        (m.VALVE_LIMIT, -0.1, "facility valve setpoint -0.1 % is outside 0–100 %"),
        (m.WATCHDOG_LIMIT, 601, "comm watchdog timeout 601 s is outside 0–600 s"),
    ],
)
def test_limits_refuse_values_outside(limit: m.Limit, value: float, message: str) -> None:
    with pytest.raises(ValueRejected, match=message):
        limit.to_raw(value)


def test_parse_enum_accepts_labels_members_and_wire_values() -> None:
    assert m.parse_enum(ControlMode, "remote_speed") is ControlMode.REMOTE_SPEED
    assert m.parse_enum(ControlMode, "LOCAL_DP") is ControlMode.LOCAL_DP
    assert m.parse_enum(LeadPump, LeadPump.PUMP2) is LeadPump.PUMP2
    assert m.parse_enum(LeadPump, 1) is LeadPump.PUMP1
    with pytest.raises(ValueRejected, match="'pump3' is not one of auto, pump1, pump2"):
        m.parse_enum(LeadPump, "pump3")
    with pytest.raises(ValueRejected, match="ControlMode 2"):
        m.parse_enum(ControlMode, 2)
    with pytest.raises(ValueRejected):
        m.parse_enum(ControlMode, True)
