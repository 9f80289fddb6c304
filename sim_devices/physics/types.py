"""Values the physical model hands out: frozen snapshots and server ids."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SERVER_RE = re.compile(r"^r(\d+)s(\d{2})$")


@dataclass(frozen=True, slots=True, order=True)
class ServerId:
    """A server by rack and slot, both 1-based; its device id is ``r<rack>s<nn>``."""

    rack: int
    slot: int

    @property
    def name(self) -> str:
        return f"r{self.rack}s{self.slot:02d}"

    @classmethod
    def parse(cls, text: str) -> ServerId:
        match = _SERVER_RE.match(text)
        if match is None:
            raise ValueError(f"not a server id (want r<rack>s<nn>, e.g. r1s01): {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class CoolingSnapshot:
    supply_temp_c: float
    return_temp_c: float
    facility_supply_temp_c: float
    facility_return_temp_c: float
    flow_lpm: float
    supply_pressure_kpa: float
    return_pressure_kpa: float
    diff_pressure_kpa: float
    pump_speed_pct: tuple[float, ...]
    reservoir_level_pct: float
    facility_valve_pct: float
    coolant_heat_w: float  # m_dot * c_p * (return - supply): what a CDU meters
    hx_heat_w: float  # heat passed to facility water
    leak_racks: frozenset[int]
    isolated_racks: frozenset[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "supply_temp_c": self.supply_temp_c,
            "return_temp_c": self.return_temp_c,
            "facility_supply_temp_c": self.facility_supply_temp_c,
            "facility_return_temp_c": self.facility_return_temp_c,
            "flow_lpm": self.flow_lpm,
            "supply_pressure_kpa": self.supply_pressure_kpa,
            "return_pressure_kpa": self.return_pressure_kpa,
            "diff_pressure_kpa": self.diff_pressure_kpa,
            "pump_speed_pct": list(self.pump_speed_pct),
            "reservoir_level_pct": self.reservoir_level_pct,
            "facility_valve_pct": self.facility_valve_pct,
            "coolant_heat_w": self.coolant_heat_w,
            "hx_heat_w": self.hx_heat_w,
            "leak_racks": sorted(self.leak_racks),
            "isolated_racks": sorted(self.isolated_racks),
        }


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    server: ServerId
    powered: bool
    power_w: float
    liquid_heat_w: float
    air_heat_w: float
    gpu_temps_c: tuple[float, ...]
    cpu_temp_c: float
    coolant_in_c: float
    coolant_flow_lpm: float
    inlet_air_c: float
    outlet_air_c: float
    fan_duty_pct: float  # what drives the chassis fans (the BMC's zone 0, 100 in full mode)
    fan_rpm: tuple[float, ...]  # per fan, 1..4
    failed_fans: tuple[int, ...]  # 1-based numbers of fans that stand still
    leak: bool
    thermal_trip: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.server.name,
            "powered": self.powered,
            "power_w": self.power_w,
            "liquid_heat_w": self.liquid_heat_w,
            "air_heat_w": self.air_heat_w,
            "gpu_temps_c": list(self.gpu_temps_c),
            "cpu_temp_c": self.cpu_temp_c,
            "coolant_in_c": self.coolant_in_c,
            "coolant_flow_lpm": self.coolant_flow_lpm,
            "inlet_air_c": self.inlet_air_c,
            "outlet_air_c": self.outlet_air_c,
            "fan_duty_pct": self.fan_duty_pct,
            "fan_rpm": list(self.fan_rpm),
            "failed_fans": list(self.failed_fans),
            "leak": self.leak,
            "thermal_trip": self.thermal_trip,
        }


@dataclass(frozen=True, slots=True)
class PodSnapshot:
    time_s: float
    cooling: CoolingSnapshot
    servers: tuple[ServerSnapshot, ...]
    total_power_w: float

    def server(self, sid: ServerId) -> ServerSnapshot:
        for snap in self.servers:
            if snap.server == sid:
                return snap
        raise KeyError(sid.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "total_power_w": self.total_power_w,
            "cooling": self.cooling.to_json(),
            "servers": [s.to_json() for s in self.servers],
        }
