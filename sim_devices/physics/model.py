"""The pod's physical model: server power, coolant loop, heat exchanger, air.

Pure and deterministic for a seed: no I/O, no clock. The orchestrator writes
the inputs (workloads, caps, chassis and outlet state, fan duty, pump speeds,
valve, facility temperature, isolation valves, leaks), calls ``step(dt_s)`` with
simulated seconds, and reads a frozen ``snapshot()``.

First-order lags are integrated exactly (``1 - exp(-dt/tau)``), so any step
size is stable; long steps are still cut into sub-steps of at most
``MAX_SUBSTEP_S`` because the lags are coupled through the supply temperature.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from sim_devices.physics import constants as k
from sim_devices.physics.types import (
    CoolingSnapshot,
    PodSnapshot,
    ServerId,
    ServerSnapshot,
)

MAX_SUBSTEP_S = 1.0
PUMPS = 2
_EPS_W_K = 1e-6  # a flow's heat capacity rate below this counts as no flow

# Platform share (NVSwitches, NICs, memory, fans, PSU loss) at idle and peak.
_REST_IDLE_W = k.SERVER_IDLE_W - k.GPUS_PER_SERVER * k.GPU_IDLE_W - k.CPUS_PER_SERVER * k.CPU_IDLE_W
_REST_PEAK_W = k.SERVER_PEAK_W - k.GPUS_PER_SERVER * k.GPU_PEAK_W - k.CPUS_PER_SERVER * k.CPU_PEAK_W


class PhysicsInputError(ValueError):
    """An input outside what the model accepts (named in the message)."""


@dataclass(slots=True)
class ServerInputs:
    """What the outside world sets for one server."""

    workload_pct: float = 50.0
    power_cap_w: float | None = None
    chassis_on: bool = True
    outlet_on: bool = True
    fan_duty_pct: float = k.DEFAULT_FAN_DUTY_PCT
    failed_fans: set[int] = field(default_factory=set)  # 1-based: these stand still


@dataclass(slots=True)
class CoolingInputs:
    """What the CDU and the facility set for the coolant loop."""

    pump_speed_pct: list[float] = field(default_factory=lambda: [60.0, 0.0])
    pump_seized: list[bool] = field(default_factory=lambda: [False, False])
    valve_pct: float = 50.0
    facility_supply_c: float = k.FACILITY_SUPPLY_C
    isolated_racks: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _ServerState:
    power_w: float
    gpu_c: list[float]
    cpu_c: float
    outlet_air_c: float
    tripped: bool = False
    idle_w: float = k.SERVER_IDLE_W
    r_scale: float = 1.0


def _lag(alpha_dt_s: float, tau_s: float) -> float:
    """Fraction of the gap a first-order lag closes in one step."""
    return 1.0 - math.exp(-alpha_dt_s / tau_s)


def _counterflow_effectiveness(ntu: float, c_ratio: float) -> float:
    """Effectiveness of a counterflow exchanger (standard epsilon-NTU relation)."""
    if ntu <= 0.0:
        return 0.0
    if abs(1.0 - c_ratio) < 1e-9:
        return ntu / (1.0 + ntu)
    e = math.exp(-ntu * (1.0 - c_ratio))
    return (1.0 - e) / (1.0 - c_ratio * e)


def _counterflow_ntu(effectiveness: float, c_ratio: float) -> float:
    """Inverse of the above, to size the exchanger from the design approach."""
    if abs(1.0 - c_ratio) < 1e-9:
        return effectiveness / (1.0 - effectiveness)
    return math.log((effectiveness - 1.0) / (effectiveness * c_ratio - 1.0)) / (c_ratio - 1.0)


def _clamp_c(temp_c: float) -> float:
    return min(temp_c, k.MAX_REPORTED_C)


class PodModel:
    """Servers in racks on one coolant loop with one heat exchanger."""

    def __init__(self, racks: int, servers_per_rack: int, seed: int = 0) -> None:
        if racks < 1 or servers_per_rack < 1:
            raise PhysicsInputError(
                f"a pod needs at least one rack and one server per rack, "
                f"got racks={racks} servers_per_rack={servers_per_rack}"
            )
        self.racks = racks
        self.servers_per_rack = servers_per_rack
        self.server_ids: tuple[ServerId, ...] = tuple(
            ServerId(r, s) for r in range(1, racks + 1) for s in range(1, servers_per_rack + 1)
        )
        self.servers: dict[ServerId, ServerInputs] = {
            sid: ServerInputs() for sid in self.server_ids
        }
        self.cooling = CoolingInputs()
        self.leak_racks: set[int] = set()  # drip-tray leaks (manifold, not a server)
        self.leak_servers: set[ServerId] = set()
        self.time_s = 0.0

        # Design point: every server at peak, 1.5 L/min per kW, 100 % pump.
        self.design_rack_flow_lpm = (
            servers_per_rack * k.SERVER_PEAK_W / 1000.0 * k.DESIGN_FLOW_LPM_PER_KW
        )
        self.design_server_flow_lpm = self.design_rack_flow_lpm / servers_per_rack
        design_flow_lpm = self.design_rack_flow_lpm * racks
        self._c_sec_design = _capacity_rate(design_flow_lpm, k.PG25_DENSITY_KG_M3, k.PG25_CP_J_KGK)
        self._facility_design_flow_lpm = design_flow_lpm * k.FACILITY_FLOW_RATIO
        c_fac = _capacity_rate(
            self._facility_design_flow_lpm, k.WATER_DENSITY_KG_M3, k.WATER_CP_J_KGK
        )
        # Size UA so that design load at full valve gives the design approach:
        # Q = eps * C_min * (T_ret - T_fac_in) with T_ret - T_fac_in = approach + dT_sec.
        design_q_w = racks * servers_per_rack * k.SERVER_PEAK_W * k.LIQUID_HEAT_FRACTION
        dt_sec = design_q_w / self._c_sec_design
        c_min, c_max = min(self._c_sec_design, c_fac), max(self._c_sec_design, c_fac)
        eps = design_q_w / (c_min * (k.DESIGN_APPROACH_K + dt_sec))
        self._ua_design_w_k = _counterflow_ntu(eps, c_min / c_max) * c_min
        self._rack_heat_capacity_j_k = (
            (k.RACK_MANIFOLD_COOLANT_L + servers_per_rack * k.SERVER_COOLANT_L)
            / 1000.0
            * k.PG25_DENSITY_KG_M3
            * k.PG25_CP_J_KGK
        )

        rng = random.Random(seed)
        start_c = self.cooling.facility_supply_c + k.DESIGN_APPROACH_K
        self._state: dict[ServerId, _ServerState] = {}
        for sid in self.server_ids:
            self._state[sid] = _ServerState(
                power_w=0.0,
                gpu_c=[start_c] * k.GPUS_PER_SERVER,
                cpu_c=start_c,
                outlet_air_c=k.AIR_INLET_C,
                idle_w=k.SERVER_IDLE_W * (1.0 + rng.uniform(-1, 1) * k.IDLE_POWER_SPREAD),
                r_scale=1.0 + rng.uniform(-1, 1) * k.THERMAL_R_SPREAD,
            )
        self._rack_c = dict.fromkeys(range(1, racks + 1), start_c)
        self._supply_c = start_c
        self._return_c = start_c
        self._flow_fraction = 0.0
        self._reservoir_l = k.RESERVOIR_VOLUME_L * k.RESERVOIR_START_PCT / 100.0
        self._hx_q_w = 0.0
        self._facility_return_c = self.cooling.facility_supply_c

    # --- inputs -------------------------------------------------------------
    def server(self, sid: ServerId) -> ServerInputs:
        try:
            return self.servers[sid]
        except KeyError:
            raise PhysicsInputError(f"no server {sid.name} in this pod") from None

    def set_workload(self, pct: float, rack: int | None = None) -> None:
        """Workload of every server (rack None) or of one rack's servers."""
        if not 0.0 <= pct <= 100.0:
            raise PhysicsInputError(f"workload must be 0-100 %, got {pct}")
        if rack is not None and not 1 <= rack <= self.racks:
            raise PhysicsInputError(f"no rack {rack} in this pod (1-{self.racks})")
        for sid, inputs in self.servers.items():
            if rack is None or sid.rack == rack:
                inputs.workload_pct = pct

    # --- model --------------------------------------------------------------
    def demand_power_w(self, sid: ServerId) -> float:
        """What the workload would draw, uncapped, were the server on."""
        inputs, state = self.servers[sid], self._state[sid]
        load = min(max(inputs.workload_pct, 0.0), 100.0) / 100.0
        return state.idle_w + (k.SERVER_PEAK_W - state.idle_w) * load

    def target_power_w(self, sid: ServerId) -> float:
        """Electrical power the server heads for with its present inputs."""
        inputs, state = self.servers[sid], self._state[sid]
        if not (inputs.chassis_on and inputs.outlet_on) or state.tripped:
            return 0.0
        demand_w = self.demand_power_w(sid)
        if inputs.power_cap_w is not None:
            # A DCMI limit cannot push a server below its idle draw.
            demand_w = min(demand_w, max(inputs.power_cap_w, state.idle_w))
        return demand_w

    def step(self, dt_s: float, max_substep_s: float = MAX_SUBSTEP_S) -> None:
        """Advance the model by dt_s simulated seconds.

        A coarser ``max_substep_s`` is fine for settling to a steady state (every
        lag is integrated exactly; only the coupling is approximate).
        """
        if not math.isfinite(dt_s) or dt_s < 0.0:
            raise PhysicsInputError(f"step must be a finite non-negative time, got {dt_s}")
        if not max_substep_s > 0.0:
            raise PhysicsInputError(f"sub-step must be positive, got {max_substep_s}")
        remaining = dt_s
        while remaining > 0.0:
            sub = min(remaining, max_substep_s)
            self._substep(sub)
            remaining -= sub

    def _substep(self, dt_s: float) -> None:
        cool = self.cooling
        self.time_s += dt_s
        a_power = _lag(dt_s, k.SERVER_POWER_TAU_S)
        a_pump = _lag(dt_s, k.PUMP_FLOW_TAU_S)
        a_chip = _lag(dt_s, k.CHIP_TAU_S)
        a_air = _lag(dt_s, k.AIR_TAU_S)
        a_supply = _lag(dt_s, k.SUPPLY_TAU_S)

        # Servers' electrical power.
        rack_q_w = dict.fromkeys(self._rack_c, 0.0)
        for sid in self.server_ids:
            st = self._state[sid]
            target_w = self.target_power_w(sid)
            st.power_w += (target_w - st.power_w) * a_power
            if target_w == 0.0 and st.power_w < 0.5:
                st.power_w = 0.0  # PSU output collapses; no exponential tail
            rack_q_w[sid.rack] += st.power_w * k.LIQUID_HEAT_FRACTION

        # Pumps: flow from the fastest running pump (affinity: flow ~ speed).
        speed = max(
            (
                min(max(s, 0.0), 100.0)
                for s, seized in zip(cool.pump_speed_pct, cool.pump_seized, strict=True)
                if not seized
            ),
            default=0.0,
        )
        if self.reservoir_level_pct <= k.RESERVOIR_CAVITATION_PCT:
            speed = 0.0  # the pump draws air: no flow
        self._flow_fraction += (speed / 100.0 - self._flow_fraction) * a_pump
        rack_flow_lpm = self.design_rack_flow_lpm * self._flow_fraction

        # Rack nodes: coolant in the plates and manifolds, fed at supply temp.
        weighted_c = 0.0
        total_c_w_k = 0.0
        for rack in self._rack_c:
            c_flow = (
                0.0
                if rack in cool.isolated_racks
                else _capacity_rate(rack_flow_lpm, k.PG25_DENSITY_KG_M3, k.PG25_CP_J_KGK)
            )
            q = rack_q_w[rack]
            if c_flow > _EPS_W_K:
                eq_c = self._supply_c + q / c_flow
                decay = math.exp(-dt_s * c_flow / self._rack_heat_capacity_j_k)
                self._rack_c[rack] = eq_c + (self._rack_c[rack] - eq_c) * decay
                weighted_c += c_flow * self._rack_c[rack]
                total_c_w_k += c_flow
            else:  # stagnant: the heat warms the trapped coolant
                self._rack_c[rack] += q * dt_s / self._rack_heat_capacity_j_k
        if total_c_w_k > _EPS_W_K:
            self._return_c = weighted_c / total_c_w_k

        # Heat exchanger: epsilon-NTU with UA from both films (~flow^0.8 each).
        valve = min(max(cool.valve_pct, 0.0), 100.0) / 100.0
        c_fac = _capacity_rate(
            self._facility_design_flow_lpm * valve, k.WATER_DENSITY_KG_M3, k.WATER_CP_J_KGK
        )
        self._hx_q_w = 0.0
        if total_c_w_k > _EPS_W_K and c_fac > _EPS_W_K:
            ua = self._ua(total_c_w_k / self._c_sec_design, valve)
            c_min, c_max = min(total_c_w_k, c_fac), max(total_c_w_k, c_fac)
            eps = _counterflow_effectiveness(ua / c_min, c_min / c_max)
            self._hx_q_w = eps * c_min * (self._return_c - cool.facility_supply_c)
        if total_c_w_k > _EPS_W_K:
            target_c = self._return_c - self._hx_q_w / total_c_w_k
            self._supply_c += (target_c - self._supply_c) * a_supply
        self._facility_return_c = (
            cool.facility_supply_c + self._hx_q_w / c_fac
            if c_fac > _EPS_W_K
            else cool.facility_supply_c
        )

        # Chips and air, per server.
        for sid in self.server_ids:
            self._step_server(sid, a_chip, a_air)

        # Reservoir: leaks in racks whose supply is open, orifice flow ~ sqrt(p).
        p_ratio = self.supply_pressure_kpa / (k.STATIC_PRESSURE_KPA + k.DESIGN_DP_KPA)
        leaks = sum(1 for r in self.leak_racks if r not in cool.isolated_racks)
        leaks += sum(1 for s in self.leak_servers if s.rack not in cool.isolated_racks)
        loss_l = leaks * k.LEAK_RATE_LPM * math.sqrt(max(p_ratio, 0.0)) * dt_s / 60.0
        self._reservoir_l = max(self._reservoir_l - loss_l, 0.0)

    def _step_server(self, sid: ServerId, a_chip: float, a_air: float) -> None:
        st, inputs = self._state[sid], self.servers[sid]
        isolated = sid.rack in self.cooling.isolated_racks
        coolant_in_c = self._rack_c[sid.rack] if isolated else self._supply_c
        flow_fraction = 0.0 if isolated else self._flow_fraction
        conv = math.pow(max(flow_fraction, k.MIN_FLOW_FRACTION), -k.CONVECTION_EXPONENT)
        r_gpu = (k.GPU_R_COND_K_W + k.GPU_R_CONV_DESIGN_K_W * conv) * st.r_scale
        r_cpu = (k.CPU_R_COND_K_W + k.CPU_R_CONV_DESIGN_K_W * conv) * st.r_scale
        gpu_w, cpu_w = self._chip_power_w(st)
        gpu_target = coolant_in_c + gpu_w * r_gpu
        for i in range(k.GPUS_PER_SERVER):
            # Slightly different plates: GPUs further down the loop run warmer.
            target = gpu_target + 0.3 * i
            st.gpu_c[i] += (target - st.gpu_c[i]) * a_chip
        st.cpu_c += (coolant_in_c + cpu_w * r_cpu - st.cpu_c) * a_chip
        if max(st.gpu_c) > k.GPU_SHUTDOWN_C and st.power_w > 0.0:
            st.tripped = True
        if not (inputs.chassis_on and inputs.outlet_on):
            st.tripped = False  # a power cycle re-arms the protection
        # The chassis fans share the airflow; a stopped fan moves nothing.
        running = (k.FANS_PER_SERVER - len(inputs.failed_fans)) / k.FANS_PER_SERVER
        duty = max(min(inputs.fan_duty_pct, 100.0) / 100.0 * running, k.MIN_FAN_DUTY_FRACTION)
        air_c_w_k = k.AIR_FLOW_DESIGN_M3_S * duty * k.AIR_DENSITY_KG_M3 * k.AIR_CP_J_KGK
        air_target = k.AIR_INLET_C + st.power_w * (1.0 - k.LIQUID_HEAT_FRACTION) / air_c_w_k
        st.outlet_air_c += (air_target - st.outlet_air_c) * a_air

    @staticmethod
    def _chip_power_w(st: _ServerState) -> tuple[float, float]:
        """Per-GPU and per-CPU power: both scale with the server's utilisation."""
        if st.power_w <= 0.0:
            return 0.0, 0.0
        span = k.SERVER_PEAK_W - st.idle_w
        util = min(max((st.power_w - st.idle_w) / span, 0.0), 1.0) if span > 0 else 0.0
        scale = min(st.power_w / st.idle_w, 1.0)  # below idle: still powering up
        gpu = (k.GPU_IDLE_W + util * (k.GPU_PEAK_W - k.GPU_IDLE_W)) * scale
        cpu = (k.CPU_IDLE_W + util * (k.CPU_PEAK_W - k.CPU_IDLE_W)) * scale
        return gpu, cpu

    def _ua(self, sec_fraction: float, fac_fraction: float) -> float:
        """UA from two film conductances in series, equal at the design point."""
        ha_design = 2.0 * self._ua_design_w_k
        ha_sec = ha_design * math.pow(sec_fraction, k.CONVECTION_EXPONENT)
        ha_fac = ha_design * math.pow(fac_fraction, k.CONVECTION_EXPONENT)
        return 1.0 / (1.0 / ha_sec + 1.0 / ha_fac)

    # --- outputs ------------------------------------------------------------
    @property
    def flow_lpm(self) -> float:
        open_racks = self.racks - len(self.cooling.isolated_racks & set(self._rack_c))
        return self.design_rack_flow_lpm * self._flow_fraction * open_racks

    @property
    def diff_pressure_kpa(self) -> float:
        # Affinity law: dp ~ speed^2 (parallel branches with balancing valves,
        # so closing one rack leaves the others' flow and the dp unchanged).
        return k.DESIGN_DP_KPA * self._flow_fraction**2

    @property
    def supply_pressure_kpa(self) -> float:
        return k.STATIC_PRESSURE_KPA + self.diff_pressure_kpa

    @property
    def reservoir_level_pct(self) -> float:
        return 100.0 * self._reservoir_l / k.RESERVOIR_VOLUME_L

    def snapshot(self) -> PodSnapshot:
        cool = self.cooling
        flow_lpm = self.flow_lpm
        c_sec = _capacity_rate(flow_lpm, k.PG25_DENSITY_KG_M3, k.PG25_CP_J_KGK)
        leak_racks = set(self.leak_racks) | {s.rack for s in self.leak_servers}
        cooling = CoolingSnapshot(
            supply_temp_c=_clamp_c(self._supply_c),
            return_temp_c=_clamp_c(self._return_c),
            facility_supply_temp_c=cool.facility_supply_c,
            facility_return_temp_c=_clamp_c(self._facility_return_c),
            flow_lpm=flow_lpm,
            supply_pressure_kpa=self.supply_pressure_kpa,
            return_pressure_kpa=k.STATIC_PRESSURE_KPA,
            diff_pressure_kpa=self.diff_pressure_kpa,
            pump_speed_pct=tuple(
                0.0 if seized else s
                for s, seized in zip(cool.pump_speed_pct, cool.pump_seized, strict=True)
            ),
            reservoir_level_pct=self.reservoir_level_pct,
            facility_valve_pct=cool.valve_pct,
            coolant_heat_w=c_sec * (self._return_c - self._supply_c),
            hx_heat_w=self._hx_q_w,
            leak_racks=frozenset(leak_racks),
            isolated_racks=frozenset(cool.isolated_racks),
        )
        servers = tuple(self._server_snapshot(sid) for sid in self.server_ids)
        return PodSnapshot(
            time_s=self.time_s,
            cooling=cooling,
            servers=servers,
            total_power_w=sum(s.power_w for s in servers),
        )

    def _server_snapshot(self, sid: ServerId) -> ServerSnapshot:
        st, inputs = self._state[sid], self.servers[sid]
        isolated = sid.rack in self.cooling.isolated_racks
        duty = min(max(inputs.fan_duty_pct, 0.0), 100.0)
        powered = inputs.chassis_on and inputs.outlet_on and not st.tripped
        rpm = k.FAN_MAX_RPM * duty / 100.0 if powered else 0.0
        fan_rpm = tuple(
            0.0 if fan in inputs.failed_fans else rpm for fan in range(1, k.FANS_PER_SERVER + 1)
        )
        return ServerSnapshot(
            server=sid,
            powered=powered,
            power_w=st.power_w,
            liquid_heat_w=st.power_w * k.LIQUID_HEAT_FRACTION,
            air_heat_w=st.power_w * (1.0 - k.LIQUID_HEAT_FRACTION),
            gpu_temps_c=tuple(_clamp_c(t) for t in st.gpu_c),
            cpu_temp_c=_clamp_c(st.cpu_c),
            coolant_in_c=_clamp_c(self._rack_c[sid.rack] if isolated else self._supply_c),
            coolant_flow_lpm=0.0 if isolated else self.design_server_flow_lpm * self._flow_fraction,
            inlet_air_c=k.AIR_INLET_C,
            outlet_air_c=_clamp_c(st.outlet_air_c),
            fan_duty_pct=duty,
            fan_rpm=fan_rpm,
            failed_fans=tuple(sorted(inputs.failed_fans)),
            leak=sid in self.leak_servers,
            thermal_trip=st.tripped,
        )


def _capacity_rate(flow_lpm: float, density_kg_m3: float, cp_j_kgk: float) -> float:
    """Heat capacity rate m_dot * c_p in W/K of a volumetric flow in L/min."""
    return max(flow_lpm, 0.0) / 60_000.0 * density_kg_m3 * cp_j_kgk
