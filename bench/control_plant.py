"""The pod's two CDU loops closed around the simulator's physics, in simulated time.

No sockets, no sleeps: the simulator's physical model (sim_devices.physics.PodModel)
and the simulated CDU's own device logic (register checks, pump ramp, valve
actuator ramp, watchdog; sim_devices.cdu with its placeholder physics off,
wired to the model by sim_devices.wiring.cdu exactly as `megapod-sim` wires it)
are stepped every 0.25 s. The loops see the plant the way the daemon will:

- CDU input registers every 0.25 s: supply temperature in 0.01 C steps;
- PDU device power every 1 s in 10 W steps, summed over the PDUs = IT power;
- BMC GPU temperatures every 2 s in 0.5 C steps (the SDR's resolution);
- writes: facility valve setpoint (register 104, 0.1 %), pump speed setpoint
  (register 102, 0.01 %, the register's 20 % floor) in remote-speed mode
  (register 101 = 0), a heartbeat to 106 every second. A write reaches the
  plant on the next 0.25 s step.

Loops (issue 9, "the pod's loops"), built from megapodd.control:

- supply temperature -> facility valve: a low-pass on the supply temperature,
  a PID (direct acting) with feed-forward from IT power, a write deadband;
- coolant flow -> pump speed: a demand of 1.5 L/min per kW of IT power and a
  PID on the hottest GPU's margin to 87 C (reverse acting, tracking the pump's
  applied speed so it waits below the flow demand without winding down); the
  zone takes the larger, floored at 20 %, slew limited.

``Perturbation`` adds what the simulator lacks (sensor delay and noise, a
different plant time constant, a mis-calibrated feed-forward) for robustness.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from megapodd.control.cascade import ZoneConfig, decide
from megapodd.control.filters import LowPass
from megapodd.control.numeric import slew
from megapodd.control.pid import Direction, FailsafeReturn, Pid, PidConfig, PidMode
from sim_devices.cdu import SimulatedCdu
from sim_devices.physics import PodModel
from sim_devices.physics import constants as k
from sim_devices.profiles import PodLayout
from sim_devices.wiring.cdu import CduLink, cdu_state_for

TICK_S = 0.25  # the simulator's model step and the CDU poll
PDU_POLL_TICKS = 4  # 1 s
BMC_POLL_TICKS = 8  # 2 s
HEARTBEAT_TICKS = 4
REG_CONTROL_MODE, REG_PUMP_SETPOINT, REG_VALVE_SETPOINT, REG_HEARTBEAT = 101, 102, 104, 106
VALVE_REGISTER_MAX = 1_000  # 100.0 %
PUMP_REGISTER_MIN, PUMP_REGISTER_MAX = 2_000, 10_000  # 20.00-100.00 %
SEED = 0
GOOD_READINGS_TO_RESUME = 3  # issue 9: leave failsafe after 3 consecutive good readings


# --- the loops' settings ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SupplyLoop:
    """Supply temperature -> facility valve."""

    pid: PidConfig
    setpoint_c: float = 30.0
    period_s: float = 1.0
    pv_filter_tau_s: float = 5.0  # on every 0.25 s CDU sample
    # Feed-forward: valve % = gain x IT power / rated IT power + bias.
    ff_gain_pct: float = 79.0
    ff_bias_pct: float = -3.7
    ff_enabled: bool = True
    # Write only a change of at least this much; the integrator tracks the
    # applied value, so this costs no accuracy beyond its width.
    write_deadband_pct: float = 0.2
    failsafe_pct: float = 100.0


@dataclass(frozen=True, slots=True)
class PumpLoop:
    """Coolant flow -> pump speed: max(flow demand, GPU thermal trim), floored."""

    thermal: PidConfig
    flow_lpm_per_kw: float = k.DESIGN_FLOW_LPM_PER_KW
    gpu_limit_c: float = 87.0  # Hopper max operating temperature (POD-NUMBERS)
    margin_setpoint_k: float = 12.0  # the trim holds the hottest GPU at or below 75 C
    period_s: float = 1.0  # one PDU poll
    thermal_period_s: float = 2.0  # one BMC poll
    floor_pct: float = 20.0  # register 102's floor on this CDU
    ceiling_pct: float = 100.0
    slew_up_pct_per_s: float | None = 20.0
    slew_down_pct_per_s: float | None = 20.0
    failsafe_pct: float = 100.0


RECOMMENDED_SUPPLY = SupplyLoop(
    PidConfig(
        kp=10.0,  # % valve per K
        ki=0.25,  # % valve per K per s (Ti = 40 s)
        kd=0.0,
        d_filter_tau_s=0.0,
        out_min=0.0,
        out_max=100.0,
        slew_up_per_s=5.0,
        slew_down_per_s=5.0,
        direction=Direction.DIRECT,  # valve opens when supply is above setpoint
        # Leave failsafe from the integrator the plant needed before the fault.
        failsafe_return=FailsafeReturn.RESTORE,
    )
)
RECOMMENDED_PUMP = PumpLoop(
    PidConfig(
        kp=4.0,  # % pump per K of margin
        ki=0.2,  # % pump per K per s (Ti = 20 s)
        out_min=20.0,
        out_max=100.0,
        direction=Direction.REVERSE,  # pump rises as the margin falls below its setpoint
    )
)


@dataclass(frozen=True, slots=True)
class Perturbation:
    """What a real plant may do that the simulator does not (robustness rows)."""

    name: str = "nominal"
    supply_delay_s: float = 0.0  # transport delay from exchanger to sensor
    supply_noise_k: float = 0.0  # standard deviation of the sensor's noise
    supply_tau_scale: float = 1.0  # the 60 s plant time constant, scaled
    ff_gain_scale: float = 1.0  # the valve feed-forward's gain, mis-calibrated


NOMINAL = Perturbation()


# --- the plant as the daemon sees it ---------------------------------------------------
class SampledPlant:
    """The model and the CDU's device logic, read and written as the daemon does."""

    def __init__(self, layout: PodLayout, seed: int = SEED,
                 perturbation: Perturbation = NOMINAL) -> None:  # fmt: skip
        self.layout = layout
        self.perturbation = perturbation
        self.model = PodModel(layout.racks, layout.servers_per_rack, seed)
        self.cdu = SimulatedCdu(cdu_state_for(self.model), physics=False, autostep=False)
        self.link = CduLink(self.cdu, self.model)
        self.rated_it_kw = len(self.model.server_ids) * k.SERVER_PEAK_W / 1000.0
        self.flow_at_full_lpm = self.cdu.state.flow_at_full_speed_lpm
        self.snap = self.model.snapshot()
        self._rng = random.Random(seed)
        delay_ticks = round(perturbation.supply_delay_s / TICK_S)
        self._supply_history: deque[float] = deque(maxlen=delay_ticks + 1)
        self._ticks = 0
        self._pdu_of = {sid: layout.plug(sid).pdu_id for sid in self.model.server_ids}

    def write(self, address: int, value: int) -> None:
        """FC 06, as on the wire; an exception reply is a bug in the study."""
        reply = self.cdu.handle_pdu(self.cdu.unit, struct.pack(">BHH", 0x06, address, value))
        if reply is None or reply[0] & 0x80:
            raise RuntimeError(f"CDU refused {value} at {address}: {reply!r}")

    def settle(self, workload_pct: float, valve_pct: float, pump_pct: float) -> None:
        """Steady state at these settings, as megapod-sim settles before it answers."""
        self.model.set_workload(workload_pct)
        self.write(REG_CONTROL_MODE, 0)  # remote speed: register 102 sets the pump
        self.write(REG_PUMP_SETPOINT, pump_register(pump_pct))
        self.write(REG_VALVE_SETPOINT, valve_register(valve_pct))
        state = self.cdu.state
        state.pump1_speed_pct = self.cdu.target_speed_pct()
        state.facility_valve_position_pct = state.facility_valve_setpoint_pct
        self.link.read_into_model(0.0)
        self.model.step(1_800.0, max_substep_s=10.0)
        self.model.time_s = 0.0
        self._sense()

    def step(self, dt_s: float) -> None:
        self._ticks += 1
        if self._ticks % HEARTBEAT_TICKS == 0:
            self.write(REG_HEARTBEAT, self._ticks & 0xFFFF)
        self.cdu.step(dt_s)
        self.link.read_into_model(dt_s)
        self.model.step(dt_s)
        self._sense()

    def _sense(self) -> None:
        self.snap = self.model.snapshot()
        self.link.write_from(self.snap)
        self._supply_history.append(self.snap.cooling.supply_temp_c)
        p = self.perturbation
        if p.supply_delay_s or p.supply_noise_k:
            # The sensor sees the exchanger's outlet some seconds ago, plus noise.
            seen_c = self._supply_history[0] + self._rng.gauss(0.0, p.supply_noise_k)
            self.cdu.state.supply_temp_c = seen_c

    # Readings, at the wire's resolution.
    def supply_temp_c(self) -> float:
        raw = self.cdu.input_registers()[0]
        return (raw - 0x1_0000 if raw & 0x8000 else raw) / 100.0

    def it_power_kw(self) -> float:
        """Sum of the PDUs' device power (each in 10 W steps)."""
        per_pdu: dict[str, float] = {}
        for server in self.snap.servers:
            pdu = self._pdu_of[server.server]
            per_pdu[pdu] = per_pdu.get(pdu, 0.0) + server.power_w
        return sum(round(w / 10.0) * 10.0 for w in per_pdu.values()) / 1000.0

    def hottest_gpu_c(self) -> float:
        """The hottest GPU as the BMCs report it (0.5 C steps)."""
        return max(round(t * 2.0) / 2.0 for s in self.snap.servers for t in s.gpu_temps_c)


def valve_register(pct: float) -> int:
    return max(0, min(VALVE_REGISTER_MAX, round(pct * 10.0)))


def pump_register(pct: float) -> int:
    return max(PUMP_REGISTER_MIN, min(PUMP_REGISTER_MAX, round(pct * 100.0)))


# --- the loops, wired as the daemon will wire them ---------------------------------------
class PodLoops:
    def __init__(self, plant: SampledPlant, supply: SupplyLoop, pump: PumpLoop) -> None:
        self.plant = plant
        self.supply = supply
        self.pump = pump
        self.valve_pid = Pid(supply.pid)
        self.thermal_pid = Pid(pump.thermal)
        self.supply_filter = LowPass(supply.pv_filter_tau_s)
        # Take the outputs over from what the CDU holds (the first updates are bumpless).
        state = plant.cdu.state
        self.valve_written = valve_register(state.facility_valve_setpoint_pct)
        self.pump_written = pump_register(state.pump_speed_setpoint_pct)
        self.valve_writes = 0
        self.supply_sensor_bad = False  # a phase may break the sensor (sensor-range)
        self._good_readings = 0
        self.thermal_demand_pct = pump.floor_pct
        self.zone_winner = ""
        self.supply_meas_c = self.supply_filter.update(0.0, plant.supply_temp_c())
        self.it_kw = plant.it_power_kw()
        self.hottest_c = plant.hottest_gpu_c()

    def valve_ff_pct(self) -> float:
        s = self.supply
        gain_pct = s.ff_gain_pct * self.plant.perturbation.ff_gain_scale
        return gain_pct * self.it_kw / self.plant.rated_it_kw + s.ff_bias_pct

    def flow_demand_pct(self) -> float:
        """1.5 L/min per kW, as % of the flow at full speed (the model's flow ~ speed)."""
        return 100.0 * self.pump.flow_lpm_per_kw * self.it_kw / self.plant.flow_at_full_lpm

    def poll(self, tick: int) -> None:
        now_s = tick * TICK_S
        if self.supply_sensor_bad:
            self.supply_filter.reset()  # no good reading: start the filter afresh
            self._good_readings = 0
        else:
            self.supply_meas_c = self.supply_filter.update(now_s, self.plant.supply_temp_c())
            self._good_readings += 1
        if tick % PDU_POLL_TICKS == 1:
            self.it_kw = self.plant.it_power_kw()
        if tick % BMC_POLL_TICKS == 2:
            self.hottest_c = self.plant.hottest_gpu_c()

    def control(self, tick: int) -> None:
        now_s = tick * TICK_S
        # A bad reading goes to failsafe on this tick, not at the next period.
        if self.supply_sensor_bad or tick % round(self.supply.period_s / TICK_S) == 0:
            self._valve(now_s)
        if tick % round(self.pump.thermal_period_s / TICK_S) == 0:
            self._thermal(now_s)
        if tick % round(self.pump.period_s / TICK_S) == 0:
            self._pump()

    def _valve(self, now_s: float) -> None:
        waiting = self._good_readings < GOOD_READINGS_TO_RESUME
        if self.supply_sensor_bad or (self.valve_pid.mode is PidMode.FAILSAFE and waiting):
            # Failsafe at once, never rate limited; leave after 3 good readings.
            raw = valve_register(self.valve_pid.failsafe(now_s, self.supply.failsafe_pct))
            if raw != self.valve_written:
                self.plant.write(REG_VALVE_SETPOINT, raw)
                self.valve_written = raw
            return
        ff = self.valve_ff_pct() if self.supply.ff_enabled else 0.0
        out = self.valve_pid.update(
            now_s, self.supply_meas_c, self.supply.setpoint_c,
            feed_forward=ff, applied=self.valve_written / 10.0,
        )  # fmt: skip
        raw = valve_register(out)
        if abs(raw - self.valve_written) >= max(1, round(self.supply.write_deadband_pct * 10)):
            self.plant.write(REG_VALVE_SETPOINT, raw)
            self.valve_written = raw
            self.valve_writes += 1

    def _thermal(self, now_s: float) -> None:
        margin_k = self.pump.gpu_limit_c - self.hottest_c
        # Tracks the zone's output (what the pump runs at): while the flow demand
        # wins, the trim waits kp x |error| below it instead of winding down.
        self.thermal_demand_pct = self.thermal_pid.update(
            now_s, margin_k, self.pump.margin_setpoint_k, applied=self.pump_written / 100.0
        )

    def _pump(self) -> None:
        p = self.pump
        zone = decide(
            ZoneConfig(p.floor_pct, p.ceiling_pct),
            {"flow": self.flow_demand_pct(), "gpu_margin": self.thermal_demand_pct},
        )
        self.zone_winner = zone.winner
        out = slew(zone.output, self.pump_written / 100.0, p.period_s, p.slew_up_pct_per_s,
                   p.slew_down_pct_per_s)  # fmt: skip
        raw = pump_register(out)
        if raw != self.pump_written:
            self.plant.write(REG_PUMP_SETPOINT, raw)
            self.pump_written = raw


# --- scenarios ----------------------------------------------------------------------
@dataclass(slots=True)
class Trace:
    t_s: list[float] = field(default_factory=list)
    supply_c: list[float] = field(default_factory=list)
    valve_pct: list[float] = field(default_factory=list)
    pump_pct: list[float] = field(default_factory=list)
    gpu_c: list[float] = field(default_factory=list)
    it_kw: list[float] = field(default_factory=list)
    valve_i_plus_ff_pct: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Phase:
    """Hold these conditions for ``duration_s`` (None: leave as they were)."""

    duration_s: float
    workload_pct: float | None = None
    facility_supply_c: float | None = None
    supply_sensor_bad: bool = False  # the CDU's supply sensor reads out of range
    measured: bool = True  # a window the results report


@dataclass(frozen=True, slots=True)
class Window:
    label: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class WindowResult:
    label: str
    max_dev_k: float
    settle_s: float | None  # None: still outside the band at the window's end
    peak_gpu_c: float
    valve_pct: tuple[float, float]
    pump_pct: tuple[float, float]
    peak_supply_c: float
    min_dev_k: float
    valve_moves_per_min: float


def workload_steps(low_pct: float = 30.0, high_pct: float = 90.0, hold_s: float = 600.0,
                   warmup_s: float = 600.0) -> list[Phase]:  # fmt: skip
    return [
        Phase(warmup_s, workload_pct=low_pct, measured=False),
        Phase(hold_s, workload_pct=high_pct),
        Phase(hold_s, workload_pct=low_pct),
    ]


@contextlib.contextmanager
def _supply_tau(scale: float) -> Iterator[None]:
    """The model reads its constants at every step: scale the plant's time constant."""
    saved = k.SUPPLY_TAU_S
    k.SUPPLY_TAU_S = saved * scale
    try:
        yield
    finally:
        k.SUPPLY_TAU_S = saved


@dataclass(slots=True)
class Run:
    windows: list[Window]
    trace: Trace
    loops: PodLoops


def run(layout: PodLayout, supply: SupplyLoop, pump: PumpLoop, phases: list[Phase],
        perturbation: Perturbation = NOMINAL, seed: int = SEED) -> Run:  # fmt: skip
    """Settle at the first phase's conditions, then play every phase with the loops on."""
    with _supply_tau(perturbation.supply_tau_scale):
        return _run(layout, supply, pump, phases, perturbation, seed)


def _run(layout: PodLayout, supply: SupplyLoop, pump: PumpLoop, phases: list[Phase],
         perturbation: Perturbation, seed: int) -> Run:  # fmt: skip
    plant = SampledPlant(layout, seed, perturbation)
    first = phases[0].workload_pct if phases[0].workload_pct is not None else 50.0
    # Start near that load's steady state (the feed-forward's guesses); the
    # first phase lets the loops settle the rest.
    probe = PodModel(layout.racks, layout.servers_per_rack, seed)
    probe.set_workload(first)
    probe.step(5.0)
    it_kw = probe.snapshot().total_power_w / 1000.0
    valve0 = supply.ff_gain_pct * it_kw / plant.rated_it_kw + supply.ff_bias_pct
    pump0 = 100.0 * pump.flow_lpm_per_kw * it_kw / plant.flow_at_full_lpm
    plant.settle(first, valve0, pump0)
    loops = PodLoops(plant, supply, pump)
    trace = Trace()
    windows: list[Window] = []
    tick = 0
    previous = ""
    for phase in phases:
        if phase.workload_pct is not None:
            plant.model.set_workload(phase.workload_pct)
        if phase.facility_supply_c is not None:
            plant.model.cooling.facility_supply_c = phase.facility_supply_c
        loops.supply_sensor_bad = phase.supply_sensor_bad
        label = _label(phase, previous)
        previous = label.split(" -> ")[-1]
        ticks = round(phase.duration_s / TICK_S)
        if phase.measured:
            windows.append(Window(label, tick, tick + ticks))
        for _ in range(ticks):
            loops.poll(tick)
            loops.control(tick)
            plant.step(TICK_S)
            _record(trace, tick, plant, loops)
            tick += 1
    return Run(windows, trace, loops)


def _label(phase: Phase, previous: str) -> str:
    if phase.supply_sensor_bad:
        now = "supply sensor bad"
    elif phase.workload_pct is not None:
        now = f"{phase.workload_pct:g} %"
    else:
        now = f"facility {phase.facility_supply_c:g} C"
    return f"{previous} -> {now}" if previous else now


def _record(trace: Trace, tick: int, plant: SampledPlant, loops: PodLoops) -> None:
    snap = plant.snap
    trace.t_s.append(tick * TICK_S)
    trace.supply_c.append(snap.cooling.supply_temp_c)
    trace.valve_pct.append(snap.cooling.facility_valve_pct)
    trace.pump_pct.append(max(snap.cooling.pump_speed_pct))
    trace.gpu_c.append(max(max(s.gpu_temps_c) for s in snap.servers))
    trace.it_kw.append(snap.total_power_w / 1000.0)
    terms = loops.valve_pid.last
    trace.valve_i_plus_ff_pct.append(terms.i + terms.ff if terms is not None else float("nan"))


def measure(result: Run, window: Window, setpoint_c: float, band_k: float = 0.5) -> WindowResult:
    tr = result.trace
    span = range(window.start, window.end)
    devs = [tr.supply_c[i] - setpoint_c for i in span]
    outside = [n for n, d in enumerate(devs) if abs(d) > band_k]
    settle_s: float | None
    if not outside:
        settle_s = 0.0
    elif outside[-1] == len(devs) - 1:
        settle_s = None
    else:
        settle_s = (outside[-1] + 1) * TICK_S
    moves = sum(1 for i in span[1:] if tr.valve_pct[i] != tr.valve_pct[i - 1])
    return WindowResult(
        window.label,
        max(devs, key=abs),
        settle_s,
        max(tr.gpu_c[i] for i in span),
        (min(tr.valve_pct[i] for i in span), max(tr.valve_pct[i] for i in span)),
        (min(tr.pump_pct[i] for i in span), max(tr.pump_pct[i] for i in span)),
        max(tr.supply_c[i] for i in span),
        min(devs),
        60.0 * moves / (len(span) * TICK_S),
    )
