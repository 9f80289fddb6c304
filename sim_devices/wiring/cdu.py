"""Between the physical model and the simulated CDU (sim_devices.cdu).

The CDU runs its own device logic (watchdog, lead/lag, pump ramps) with its
placeholder physics off; this link hands it the plant's state each tick and
takes back what the plant needs from it: pump speeds, seized pumps, the
facility valve and the rack isolation valves.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim_devices.cdu import CduState, SimulatedCdu
from sim_devices.faults import FaultError
from sim_devices.physics import PodModel, PodSnapshot
from sim_devices.physics import constants as k


@dataclass(frozen=True, slots=True)
class InputRegister:
    """Where a CDU point lives on the wire: address, scale, signedness."""

    address: int
    scale: float
    signed: bool

    def raw(self, value: float) -> int:
        raw = round(value / self.scale)
        low, high = (-0x8000, 0x7FFF) if self.signed else (0, 0xFFFF)
        if not low <= raw <= high:
            raise FaultError(
                f"{value:g} does not fit input register {self.address} "
                f"({low * self.scale:g}..{high * self.scale:g})"
            )
        return raw & 0xFFFF

    @property
    def out_of_range_raw(self) -> int:
        # What a broken transmitter reports: the top of the word (327.67 C, 0xFFFF).
        return 0x7FFF if self.signed else 0xFFFF


# DEVICES.md section 1, named as the daemon's driver names them.
CDU_POINTS: dict[str, InputRegister] = {
    "supply_temp_c": InputRegister(0, 0.01, signed=True),
    "return_temp_c": InputRegister(1, 0.01, signed=True),
    "facility_supply_temp_c": InputRegister(2, 0.01, signed=True),
    "facility_return_temp_c": InputRegister(3, 0.01, signed=True),
    "flow_lpm": InputRegister(4, 0.1, signed=False),
    "supply_pressure_kpa": InputRegister(5, 0.1, signed=False),
    "return_pressure_kpa": InputRegister(6, 0.1, signed=False),
    "diff_pressure_kpa": InputRegister(7, 0.1, signed=False),
    "pump1_speed_pct": InputRegister(8, 0.01, signed=False),
    "pump2_speed_pct": InputRegister(9, 0.01, signed=False),
    "reservoir_level_pct": InputRegister(10, 0.1, signed=False),
    "facility_valve_position_pct": InputRegister(11, 0.1, signed=False),
}


def cdu_state_for(model: PodModel) -> CduState:
    """A CDU whose pump curve and pressures match the model's design point."""
    return CduState(
        flow_at_full_speed_lpm=model.design_rack_flow_lpm * model.racks,
        dp_at_full_speed_kpa=k.DESIGN_DP_KPA,
        static_pressure_kpa=k.STATIC_PRESSURE_KPA,
        facility_supply_temp_c=model.cooling.facility_supply_c,
        reservoir_level_pct=model.reservoir_level_pct,
    )


class CduLink:
    def __init__(self, sim: SimulatedCdu, model: PodModel) -> None:
        self.sim = sim
        self.model = model

    def read_into_model(self, dt_s: float) -> None:
        """CDU actuators -> plant inputs."""
        state, cooling = self.sim.state, self.model.cooling
        # The valve actuator moves at its own rate (the CDU's placeholder
        # physics, which would do this, is off).
        gap = state.facility_valve_setpoint_pct - state.facility_valve_position_pct
        step = state.valve_ramp_pct_per_s * dt_s
        state.facility_valve_position_pct += max(-step, min(step, gap))
        cooling.valve_pct = state.facility_valve_position_pct
        cooling.pump_speed_pct = [state.pump1_speed_pct, state.pump2_speed_pct]
        cooling.pump_seized = [state.pump1_seized, state.pump2_seized]
        mask = state.rack_isolation_mask
        cooling.isolated_racks = {r for r in range(1, self.model.racks + 1) if mask >> (r - 1) & 1}

    def write_from(self, snap: PodSnapshot) -> None:
        """Plant state -> what the CDU's sensors read."""
        state, c = self.sim.state, snap.cooling
        state.supply_temp_c = c.supply_temp_c
        state.return_temp_c = c.return_temp_c
        state.facility_supply_temp_c = c.facility_supply_temp_c
        state.facility_return_temp_c = c.facility_return_temp_c
        state.flow_lpm = c.flow_lpm
        state.supply_pressure_kpa = c.supply_pressure_kpa
        state.return_pressure_kpa = c.return_pressure_kpa
        state.reservoir_level_pct = c.reservoir_level_pct
        state.heat_load_w = max(0, round(c.coolant_heat_w))
        state.leak_zones = sum(1 << (r - 1) for r in c.leak_racks)

    # --- faults ---------------------------------------------------------------
    def stick(self, point: str, value: float) -> None:
        reg = CDU_POINTS[point]
        self.sim.override_input(reg.address, reg.raw(value))

    def out_of_range(self, point: str) -> None:
        reg = CDU_POINTS[point]
        self.sim.override_input(reg.address, reg.out_of_range_raw)

    def clear_sensor(self, point: str) -> None:
        self.sim.clear_override(CDU_POINTS[point].address)

    def unseize(self, pump: int) -> None:
        """The rotor is freed (the fault stays latched until an alarm reset)."""
        if pump == 1:
            self.sim.state.pump1_seized = False
        else:
            self.sim.state.pump2_seized = False
