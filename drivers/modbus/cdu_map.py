"""The CDU's Modbus register map (DEVICES.md §1) and its pure codec.

Raw register words in, named points with units out, and engineering values to
raw words for writes. No I/O here, so every scale and sign is unit-tested.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from drivers.base import Plausible, Point, Quality
from drivers.errors import FrameError, ValueRejected

# Contiguous blocks, each read in one request.
INPUT_START = 0
INPUT_COUNT = 18
HOLDING_START = 100
HOLDING_COUNT = 10

# Input register addresses.
IR_SUPPLY_TEMP = 0
IR_RETURN_TEMP = 1
IR_FACILITY_SUPPLY_TEMP = 2
IR_FACILITY_RETURN_TEMP = 3
IR_FLOW = 4
IR_SUPPLY_PRESSURE = 5
IR_RETURN_PRESSURE = 6
IR_DIFF_PRESSURE = 7
IR_PUMP1_SPEED = 8
IR_PUMP2_SPEED = 9
IR_RESERVOIR_LEVEL = 10
IR_VALVE_POSITION = 11
IR_HEAT_LOAD_HI = 12
IR_HEAT_LOAD_LO = 13
IR_STATUS = 14
IR_ALARM_CODE = 15
IR_LEAK_ZONES = 16
IR_FIRMWARE = 17

# Holding register addresses.
HR_CONTROL = 100
HR_CONTROL_MODE = 101
HR_PUMP_SPEED_SETPOINT = 102
HR_LEAD_PUMP = 103
HR_VALVE_SETPOINT = 104
HR_WATCHDOG_TIMEOUT = 105
HR_WATCHDOG_HEARTBEAT = 106
HR_FAILSAFE_SPEED = 107
HR_RACK_ISOLATION = 108
HR_LOCAL_DP_SETPOINT = 109

# Holding registers refused with exception 04 while the CDU is in local mode.
LOCAL_MODE_LOCKED = frozenset({100, 101, 102, 103, 104, 108})


class ControlBit(enum.IntFlag):
    REMOTE_ENABLE = 1 << 0
    RUN = 1 << 1
    ALARM_RESET = 1 << 2  # acts on the rising edge


class StatusBit(enum.IntFlag):
    PUMP1_RUNNING = 1 << 0
    PUMP2_RUNNING = 1 << 1
    PUMP1_FAULT = 1 << 2
    PUMP2_FAULT = 1 << 3
    LEAK = 1 << 4
    RESERVOIR_LOW = 1 << 5
    WATCHDOG_EXPIRED = 1 << 6
    LOCAL_MODE = 1 << 7
    FILTER_DP_HIGH = 1 << 8


STATUS_POINTS: tuple[tuple[str, StatusBit], ...] = (
    ("pump1_running", StatusBit.PUMP1_RUNNING),
    ("pump2_running", StatusBit.PUMP2_RUNNING),
    ("pump1_fault", StatusBit.PUMP1_FAULT),
    ("pump2_fault", StatusBit.PUMP2_FAULT),
    ("leak", StatusBit.LEAK),
    ("reservoir_low", StatusBit.RESERVOIR_LOW),
    ("watchdog_expired", StatusBit.WATCHDOG_EXPIRED),
    ("local_mode", StatusBit.LOCAL_MODE),
    ("filter_dp_high", StatusBit.FILTER_DP_HIGH),
)


class ControlMode(enum.Enum):
    REMOTE_SPEED = 0  # the daemon drives the pump speed
    LOCAL_DP = 1  # the CDU holds its own Δp setpoint (its fallback)

    @property
    def label(self) -> str:
        return self.name.lower()


class LeadPump(enum.Enum):
    AUTO = 0
    PUMP1 = 1
    PUMP2 = 2

    @property
    def label(self) -> str:
        return self.name.lower()


E = TypeVar("E", ControlMode, LeadPump)


def _enum_point(cls: type[E], raw: int) -> Point:
    """An enum register as its label; an unknown value is BAD, never an exception."""
    try:
        return Point(cls(raw).label)
    except ValueError:
        return Point(f"unknown({raw})", quality=Quality.BAD)


@dataclass(frozen=True, slots=True)
class Limit:
    """A register's valid range in engineering units, and its scale."""

    name: str
    low: float
    high: float
    unit: str
    scale: float  # engineering value = raw * scale

    def to_raw(self, value: float) -> int:
        """Range-check and scale; raise ValueRejected naming the limit."""
        if not (self.low <= value <= self.high):  # also refuses NaN
            span = f"{self.low:g}–{self.high:g} {self.unit}"
            raise ValueRejected(f"{self.name} {value!r} {self.unit} is outside {span}")
        return round(value / self.scale)


PUMP_SPEED_LIMIT = Limit("pump speed setpoint", 20.0, 100.0, "%", 0.01)
FAILSAFE_SPEED_LIMIT = Limit("failsafe pump speed", 20.0, 100.0, "%", 0.01)
VALVE_LIMIT = Limit("facility valve setpoint", 0.0, 100.0, "%", 0.1)
WATCHDOG_LIMIT = Limit("comm watchdog timeout", 0, 600, "s", 1)
RACK_MASK_MAX = 0xFFFF

# Unit strings follow the rest of megapodd: C, lpm, kPa, %, W, s.

# Raw values at the ends of int16/uint16 are what a broken transmitter reports.
_TEMP_VALID_C = (-50.0, 150.0)


# What each point can physically read (applied by the daemon's plausibility
# gate). Coolant temperatures: the transmitter's band above. A pod CDU moves
# at most a few thousand L/min (1.5 L/min per kW of a 1.2 MW pod is 1,800);
# its piping is PN16 (1,600 kPa); a pod's heat load stays below 5 MW.
_PERCENT = Plausible(0.0, 100.0)
_PRESSURE_KPA = Plausible(0.0, 1600.0)
PLAUSIBLE: Mapping[str, Plausible] = {
    **{name: Plausible(*_TEMP_VALID_C) for name in (
        "supply_temp_c", "return_temp_c", "facility_supply_temp_c", "facility_return_temp_c")},
    "flow_lpm": Plausible(0.0, 3000.0),
    "supply_pressure_kpa": _PRESSURE_KPA,
    "return_pressure_kpa": _PRESSURE_KPA,
    "diff_pressure_kpa": _PRESSURE_KPA,
    "local_dp_setpoint_kpa": _PRESSURE_KPA,
    **{name: _PERCENT for name in (
        "pump1_speed_pct", "pump2_speed_pct", "reservoir_level_pct", "facility_valve_position_pct",
        "pump_speed_setpoint_pct", "facility_valve_setpoint_pct", "failsafe_speed_pct")},
    "heat_load_w": Plausible(0.0, 5_000_000.0),
    "watchdog_timeout_s": Plausible(WATCHDOG_LIMIT.low, WATCHDOG_LIMIT.high),
}


def _int16(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


def _scaled(raw: int, scale: float, unit: str, high: float | None = None) -> Point:
    value = round(raw * scale, 4)
    quality = Quality.BAD if raw == 0xFFFF or (high is not None and value > high) else Quality.GOOD
    return Point(value, unit, quality)


def _temp(raw: int) -> Point:
    value = round(_int16(raw) * 0.01, 2)
    low, high = _TEMP_VALID_C
    quality = Quality.GOOD if low <= value <= high else Quality.BAD
    return Point(value, "C", quality)


def _check_block(name: str, registers: Sequence[int], count: int) -> None:
    if len(registers) != count:
        raise FrameError(f"{name} block: expected {count} registers, got {len(registers)}")
    for word in registers:
        if not 0 <= word <= 0xFFFF:
            raise FrameError(f"{name} block: register value {word!r} is not a 16-bit word")


def decode_input_block(registers: Sequence[int]) -> dict[str, Point]:
    """Input registers 0–17 as named points (the `safety` group)."""
    _check_block("input", registers, INPUT_COUNT)
    r = registers
    points: dict[str, Point] = {
        "supply_temp_c": _temp(r[IR_SUPPLY_TEMP]),
        "return_temp_c": _temp(r[IR_RETURN_TEMP]),
        "facility_supply_temp_c": _temp(r[IR_FACILITY_SUPPLY_TEMP]),
        "facility_return_temp_c": _temp(r[IR_FACILITY_RETURN_TEMP]),
        "flow_lpm": _scaled(r[IR_FLOW], 0.1, "lpm"),
        "supply_pressure_kpa": _scaled(r[IR_SUPPLY_PRESSURE], 0.1, "kPa"),
        "return_pressure_kpa": _scaled(r[IR_RETURN_PRESSURE], 0.1, "kPa"),
        "diff_pressure_kpa": _scaled(r[IR_DIFF_PRESSURE], 0.1, "kPa"),
        "pump1_speed_pct": _scaled(r[IR_PUMP1_SPEED], 0.01, "%", high=100.0),
        "pump2_speed_pct": _scaled(r[IR_PUMP2_SPEED], 0.01, "%", high=100.0),
        "reservoir_level_pct": _scaled(r[IR_RESERVOIR_LEVEL], 0.1, "%", high=100.0),
        "facility_valve_position_pct": _scaled(r[IR_VALVE_POSITION], 0.1, "%", high=100.0),
        "heat_load_w": Point((r[IR_HEAT_LOAD_HI] << 16) | r[IR_HEAT_LOAD_LO], "W"),
    }
    status = r[IR_STATUS]
    for name, bit in STATUS_POINTS:
        points[name] = Point(bool(status & bit))
    points["alarm_code"] = Point(r[IR_ALARM_CODE])
    points["leak_zones"] = Point(r[IR_LEAK_ZONES])
    firmware = r[IR_FIRMWARE]
    points["firmware_version"] = Point(f"{firmware >> 8}.{firmware & 0xFF}")
    return points


def decode_holding_block(registers: Sequence[int]) -> dict[str, Point]:
    """Holding registers 100–109 as named points (the `settings` group)."""
    _check_block("holding", registers, HOLDING_COUNT)

    def at(address: int) -> int:
        return registers[address - HOLDING_START]

    control = at(HR_CONTROL)
    return {
        "remote_enable": Point(bool(control & ControlBit.REMOTE_ENABLE)),
        "run": Point(bool(control & ControlBit.RUN)),
        "control_mode": _enum_point(ControlMode, at(HR_CONTROL_MODE)),
        "pump_speed_setpoint_pct": _scaled(at(HR_PUMP_SPEED_SETPOINT), 0.01, "%", high=100.0),
        "lead_pump": _enum_point(LeadPump, at(HR_LEAD_PUMP)),
        "facility_valve_setpoint_pct": _scaled(at(HR_VALVE_SETPOINT), 0.1, "%", high=100.0),
        "watchdog_timeout_s": Point(at(HR_WATCHDOG_TIMEOUT), "s"),
        "failsafe_speed_pct": _scaled(at(HR_FAILSAFE_SPEED), 0.01, "%", high=100.0),
        "rack_isolation_mask": Point(at(HR_RACK_ISOLATION)),
        "local_dp_setpoint_kpa": _scaled(at(HR_LOCAL_DP_SETPOINT), 0.1, "kPa"),
    }


def parse_enum(cls: type[E], value: E | str | int) -> E:
    """Accept the enum, its label ("remote_speed") or its wire value; ValueRejected otherwise."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        for member in cls:
            if member.label == value.lower():
                return member
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return cls(value)
        except ValueError:
            pass
    choices = ", ".join(m.label for m in cls)
    raise ValueRejected(f"{cls.__name__} {value!r} is not one of {choices}")


def status_names(points: Mapping[str, Point]) -> list[str]:
    """The status flags that are set (for logs)."""
    return [name for name, _ in STATUS_POINTS if points.get(name, Point(False)).value is True]


def point_names() -> list[str]:
    """Every point the CDU reports (both blocks)."""
    zero_input, zero_holding = [0] * INPUT_COUNT, [0] * HOLDING_COUNT
    return [*decode_input_block(zero_input), *decode_holding_block(zero_holding)]
