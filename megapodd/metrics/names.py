"""Which metric family a point's value goes into, in which base unit.

Points with a known meaning (the CDU's register map, the PDU's MIB, the BMC's
DCMI and OEM readings) have a family of their own, with what the name encodes
(pump, phase, outlet) as a label. Every other numeric point, such as a
server's SDR sensors whose names come from its firmware, goes into a family
per device kind and unit with the point's name as the `point` label. The set
of family names is therefore fixed (docs/metrics.md lists it), and a device
whose point names change gets new label values, never new families.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from drivers.base import DeviceKind, PointValue


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...] = ()  # beyond pod, device and rack


@dataclass(frozen=True, slots=True)
class PointMetric:
    """Where one point's value goes: a family, its extra label values, a conversion."""

    family: Family
    labels: tuple[str, ...]
    convert: Callable[[float], float]


def _same(value: float) -> float:
    return value


def _percent(value: float) -> float:
    return value / 100.0


def _kpa(value: float) -> float:
    return value * 1000.0


def _lpm(value: float) -> float:
    return value / 60_000.0  # L/min -> m³/s


def _kwh(value: float) -> float:
    return value * 3_600_000.0


# unit (lower case, no degree sign) -> (quantity_unit words of a metric name, conversion)
BASE_UNITS: dict[str, tuple[str, Callable[[float], float]]] = {
    "c": ("temperature_celsius", _same),
    "degc": ("temperature_celsius", _same),
    "w": ("power_watts", _same),
    "a": ("current_amperes", _same),
    "v": ("voltage_volts", _same),
    "%": ("ratio", _percent),
    "rpm": ("fan_speed_rpm", _same),
    "kpa": ("pressure_pascals", _kpa),
    "lpm": ("flow_cubic_meters_per_second", _lpm),
    "l/min": ("flow_cubic_meters_per_second", _lpm),
    "kwh": ("energy_joules", _kwh),
    "s": ("duration_seconds", _same),
}

_KIND_WORD = {DeviceKind.CDU: "cdu", DeviceKind.PDU: "pdu", DeviceKind.BMC: "server"}


def _f(name: str, help_: str, *labels: str) -> Family:
    return Family(f"megapod_{name}", help_, labels)


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: DeviceKind | None  # None: any kind
    pattern: re.Pattern[str]
    family: Family
    convert: Callable[[float], float] = _same


def _r(
    kind: DeviceKind | None, pattern: str, family: Family, convert: Callable[[float], float] = _same
) -> _Rule:
    return _Rule(kind, re.compile(pattern), family, convert)


CDU, PDU, BMC = DeviceKind.CDU, DeviceKind.PDU, DeviceKind.BMC

_RULES: tuple[_Rule, ...] = (
    # CDU safety block (drivers/modbus/cdu_map.py)
    _r(
        CDU,
        r"supply_temp_c",
        _f("coolant_supply_temperature_celsius", "Coolant supply temperature"),
    ),
    _r(
        CDU,
        r"return_temp_c",
        _f("coolant_return_temperature_celsius", "Coolant return temperature"),
    ),
    _r(
        CDU,
        r"facility_supply_temp_c",
        _f("facility_water_supply_temperature_celsius", "Facility water supply temperature"),
    ),
    _r(
        CDU,
        r"facility_return_temp_c",
        _f("facility_water_return_temperature_celsius", "Facility water return temperature"),
    ),
    _r(CDU, r"flow_lpm", _f("coolant_flow_cubic_meters_per_second", "Coolant flow"), _lpm),
    _r(
        CDU,
        r"supply_pressure_kpa",
        _f("coolant_supply_pressure_pascals", "Coolant supply pressure"),
        _kpa,
    ),
    _r(
        CDU,
        r"return_pressure_kpa",
        _f("coolant_return_pressure_pascals", "Coolant return pressure"),
        _kpa,
    ),
    _r(
        CDU,
        r"diff_pressure_kpa",
        _f("coolant_differential_pressure_pascals", "Coolant differential pressure"),
        _kpa,
    ),
    _r(CDU, r"pump(\d+)_speed_pct", _f("pump_speed_ratio", "Pump speed (0-1)", "pump"), _percent),
    _r(CDU, r"pump(\d+)_running", _f("pump_running", "1 if the pump runs", "pump")),
    _r(CDU, r"pump(\d+)_fault", _f("pump_fault", "1 if the pump reports a fault", "pump")),
    _r(
        CDU,
        r"reservoir_level_pct",
        _f("coolant_reservoir_level_ratio", "Coolant reservoir level (0-1)"),
        _percent,
    ),
    _r(CDU, r"reservoir_low", _f("coolant_reservoir_low", "1 if the reservoir reads low")),
    _r(
        CDU,
        r"facility_valve_position_pct",
        _f("facility_valve_position_ratio", "Facility valve position (0-1)"),
        _percent,
    ),
    _r(CDU, r"heat_load_w", _f("cdu_heat_load_watts", "Heat the CDU moves to facility water")),
    _r(CDU, r"watchdog_expired", _f("cdu_watchdog_expired", "1 if the CDU comm watchdog expired")),
    _r(CDU, r"local_mode", _f("cdu_local_mode", "1 if the CDU is in local (front panel) mode")),
    _r(
        CDU,
        r"filter_dp_high",
        _f("cdu_filter_pressure_high", "1 if the filter's differential pressure is high"),
    ),
    _r(CDU, r"alarm_code", _f("cdu_alarm_code", "The CDU's alarm code (0: none)")),
    _r(CDU, r"leak_zones", _f("cdu_leak_zones", "Leak zone bit mask (bit n: rack n+1)")),
    # CDU settings block
    _r(CDU, r"remote_enable", _f("cdu_remote_enabled", "1 if remote control is enabled")),
    _r(CDU, r"run", _f("cdu_run", "1 if the CDU's run bit is set")),
    _r(
        CDU,
        r"pump_speed_setpoint_pct",
        _f("pump_speed_setpoint_ratio", "Pump speed setpoint (0-1)"),
        _percent,
    ),
    _r(
        CDU,
        r"facility_valve_setpoint_pct",
        _f("facility_valve_setpoint_ratio", "Facility valve setpoint (0-1)"),
        _percent,
    ),
    _r(CDU, r"watchdog_timeout_s", _f("cdu_watchdog_timeout_seconds", "CDU comm watchdog timeout")),
    _r(
        CDU,
        r"failsafe_speed_pct",
        _f("pump_failsafe_speed_ratio", "The CDU's own failsafe pump speed (0-1)"),
        _percent,
    ),
    _r(
        CDU,
        r"rack_isolation_mask",
        _f("cdu_rack_isolation_mask", "Rack isolation bit mask (bit n: rack n+1 closed)"),
    ),
    _r(
        CDU,
        r"local_dp_setpoint_kpa",
        _f(
            "coolant_differential_pressure_setpoint_pascals",
            "Differential pressure setpoint of the CDU's local mode",
        ),
        _kpa,
    ),
    # PDU (drivers/snmp/rack_pdu.py)
    _r(PDU, r"power_w", _f("pdu_power_watts", "PDU total power")),
    _r(PDU, r"energy_kwh", _f("pdu_energy_joules", "PDU energy meter"), _kwh),
    _r(PDU, r"phase(\d+)_current_a", _f("pdu_phase_current_amperes", "PDU phase current", "phase")),
    _r(PDU, r"phase(\d+)_voltage_v", _f("pdu_phase_voltage_volts", "PDU phase voltage", "phase")),
    _r(PDU, r"phase(\d+)_power_w", _f("pdu_phase_power_watts", "PDU phase power", "phase")),
    _r(
        PDU,
        r"outlet_(\d+)_current_a",
        _f("pdu_outlet_current_amperes", "PDU outlet current", "outlet"),
    ),
    _r(PDU, r"outlet_(\d+)_power_w", _f("pdu_outlet_power_watts", "PDU outlet power", "outlet")),
    _r(PDU, r"outlet_(\d+)_state", _f("pdu_outlet_on", "1 if the outlet is on", "outlet")),
    # BMC: DCMI and OEM readings (drivers/ipmi/bmc.py)
    _r(BMC, r"power_w", _f("server_power_watts", "Server power (DCMI)")),
    _r(BMC, r"power_limit_w", _f("server_power_limit_watts", "Server power limit (DCMI)")),
    _r(BMC, r"power_limit_active", _f("server_power_limit_active", "1 if the power limit is on")),
    _r(BMC, r"fan_duty_pct", _f("server_fan_duty_ratio", "Server fan duty (0-1)"), _percent),
    _r(BMC, r"chassis_power", _f("server_power_on", "1 if the chassis is powered on")),
    # Both kinds
    _r(None, r"leak", _f("leak_detected", "1 if the device reports a leak")),
)

# Curated families, then one per kind and unit for every other point.
CURATED: tuple[Family, ...] = tuple(dict.fromkeys(rule.family for rule in _RULES))
GENERIC: dict[tuple[str, str], Family] = {
    (kind, words): _f(
        f"{_KIND_WORD[kind]}_sensor_{words}",
        f"Other {_KIND_WORD[kind]} readings in base units, by point name",
        "point",
    )
    for kind in DeviceKind
    for words, _ in dict.fromkeys(BASE_UNITS.values())
}
VALUE_FAMILIES: dict[DeviceKind, Family] = {
    kind: _f(
        f"{_KIND_WORD[kind]}_sensor_value",
        f"Other numeric {_KIND_WORD[kind]} readings without a base unit, by point name and unit",
        "point",
        "unit",
    )
    for kind in DeviceKind
}

# Strings that are states: "on" is 1. Other strings are not exported.
_ON_OFF = {"on": 1.0, "off": 0.0}


def point_metric(kind: str, name: str, unit: str) -> PointMetric:
    """The family a point of a device of `kind` goes into (the same for every reading)."""
    for rule in _RULES:
        if rule.kind is not None and rule.kind != kind:
            continue
        match = rule.pattern.fullmatch(name)
        if match is not None:
            labels = tuple(str(int(group)) for group in match.groups())
            return PointMetric(rule.family, labels, rule.convert)
    device_kind = DeviceKind(kind)
    base = BASE_UNITS.get(unit.lower().replace("°", ""))
    if base is not None:
        words, convert = base
        return PointMetric(GENERIC[(device_kind, words)], (name,), convert)
    return PointMetric(VALUE_FAMILIES[device_kind], (name, unit), _same)


def numeric(value: PointValue) -> float | None:
    """A point's value as a number, if it is one (booleans 1/0, on/off states 1/0)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _ON_OFF.get(value)
    return None


def all_point_families() -> list[Family]:
    return [*CURATED, *GENERIC.values(), *VALUE_FAMILIES.values()]
