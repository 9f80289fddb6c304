"""Between the physical model and the simulated BMCs (sim_devices.bmc).

The BMC owns what the daemon sets over IPMI (chassis power, power limit, fan
duty and mode); the model owns what its sensors read. A server that the model
powers off by its own hardware protection (GPU over its shutdown temperature)
shows as chassis off, as a real BMC reports it.
"""

from __future__ import annotations

from sim_devices.bmc import BmcFarm, BmcSpec, BmcState
from sim_devices.faults import FaultError
from sim_devices.physics import PodModel, PodSnapshot, ServerId
from sim_devices.profiles import PortPlan, SimPaths


def bmc_specs(model: PodModel, ports: PortPlan, seed: int) -> list[BmcSpec]:
    specs = []
    for index, sid in enumerate(model.server_ids):
        state = BmcState(placeholder_physics=False)
        specs.append(
            BmcSpec(
                name=sid.name,
                state=state,
                tcp_port=ports.bmc_port(sid) if ports.bmc_tcp else None,
                seed=seed * 100_003 + index,  # each line garbles differently, reproducibly
            )
        )
    return specs


class BmcLink:
    def __init__(self, farm: BmcFarm, model: PodModel, paths: SimPaths) -> None:
        self.farm = farm
        self.model = model
        self.paths = paths
        # Analogue sensors by the point name the daemon's driver derives from
        # their SDRs (`GPU3 Temp` -> `gpu3_temp_c`); every BMC has the same set.
        first = farm[model.server_ids[0].name].bmc
        self.points: dict[str, str] = {
            s.record.point_name: s.record.id_string for s in first.sensors if s.value is not None
        }

    def state(self, sid: ServerId) -> BmcState:
        return self.farm[sid.name].state

    def read_into_model(self, now_s: float) -> None:
        for sid in self.model.server_ids:
            st = self.state(sid)
            st.advance(now_s)
            inputs = self.model.servers[sid]
            inputs.chassis_on = st.chassis_on
            # The model's 0.4 s power lag is the cap's response (99 % in 2 s,
            # DEVICES.md); the BMC's own 1 s step is for when it runs alone.
            cap = st.power_limit_target_w()
            inputs.power_cap_w = None if cap is None else float(cap)
            # Zone 0 (Supermicro's CPU/system zone) drives the chassis fans, as in
            # the BMC sim's own placeholder; zone 1 (peripheral) has none modelled.
            inputs.fan_duty_pct = 100.0 if st.fan_mode == 1 else float(st.fan_duty_pct[0])

    def write_from(self, snap: PodSnapshot) -> None:
        for server in snap.servers:
            st = self.state(server.server)
            if server.thermal_trip and st.chassis_on:
                st.chassis_on = False  # hardware protection cut the power
            st.inlet_temp_c = server.inlet_air_c
            st.outlet_temp_c = server.outlet_air_c
            st.cpu_temp_c = server.cpu_temp_c
            st.gpu_temps_c = list(server.gpu_temps_c)
            st.coolant_in_temp_c = server.coolant_in_c
            st.fan_rpm = list(server.fan_rpm)
            st.psu_power_w = server.power_w
            st.demand_power_w = self.model.demand_power_w(server.server)
            st.leak = server.leak

    def check_pty_links(self) -> list[str]:
        """Links that do not exist (for start-up checks and tests)."""
        return [
            str(self.paths.pty_link(sid))
            for sid in self.model.server_ids
            if not self.paths.pty_link(sid).exists()
        ]

    # --- faults ---------------------------------------------------------------
    def stick(self, sid: ServerId, point: str, value: float) -> None:
        served = self.farm[sid.name]
        id_string = self.points[point]
        record = next(s.record for s in served.bmc.sensors if s.record.id_string == id_string)
        raw = record.encode(value)
        step = abs(record.convert(1) - record.convert(0)) or 1.0
        if abs(record.convert(raw) - value) > step:
            low, high = sorted((record.convert(0), record.convert(255)))
            raise FaultError(
                f"{sid.name} {point}: {value:g} cannot be read from this sensor "
                f"(its raw byte spans {low:g}..{high:g})"
            )
        served.state.stuck_raw[id_string] = raw

    def out_of_range(self, sid: ServerId, point: str) -> None:
        served = self.farm[sid.name]
        id_string = self.points[point]
        served.state.stuck_raw[id_string] = served.bmc.out_of_range_raw(id_string)

    def clear_sensor(self, sid: ServerId, point: str) -> None:
        self.state(sid).stuck_raw.pop(self.points[point], None)
