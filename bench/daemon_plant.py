"""The daemon's own loops, supervisors, store and arbiter closed around the
simulator's physics, in simulated time (the loop clock, with looptime).

Where bench/control_plant.py re-implements the loops to study their tuning,
this runs the real thing: the recommended loops as `megapod-sim` writes them,
compiled from the config, run by megapodd's LoopEngine from a 100 ms tick;
their outputs go through the arbiter and the output catalog to device
supervisors, whose drivers are adapters onto the simulator's CDU device logic
(register checks, pump ramp, valve actuator) and physical model. Readings come
the other way at the daemon's poll rates and resolutions: the CDU's registers
every 0.25 s (decoded by the real register map), PDU device power every 1 s,
BMC temperatures every 2 s and fans every 5 s. No sockets and no wall clock:
the scenario runs as fast as the CPU allows, and the same every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import tomllib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from drivers.base import DeviceKind, Point, PollGroup
from drivers.modbus import cdu_map
from megapodd.config import Config, parse_config
from megapodd.control.arbiter import OutputArbiter
from megapodd.control.loop_specs import compile_loops
from megapodd.control.loops import LoopEngine
from megapodd.events import EventBus
from megapodd.outputs.catalog import device_outputs
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, SupervisorSettings
from sim_devices.cdu import SimulatedCdu
from sim_devices.config_writer import DaemonConfigSpec, render_config
from sim_devices.physics import PodModel
from sim_devices.physics.types import ServerId
from sim_devices.profiles import PodLayout, PortPlan, SimPaths
from sim_devices.wiring.cdu import CduLink, cdu_state_for

STEP_S = 0.25  # the simulator's model step
TICK_S = 0.1  # the daemon's control tick
HEARTBEAT_S = 2.5


class _Plant:
    """The model and the simulated CDU, stepped on the loop clock."""

    def __init__(self, layout: PodLayout, workload_pct: float, seed: int = 0) -> None:
        self.layout = layout
        self.model = PodModel(layout.racks, layout.servers_per_rack, seed)
        self.model.set_workload(workload_pct)
        self.cdu = SimulatedCdu(cdu_state_for(self.model), physics=False, autostep=False)
        self.link = CduLink(self.cdu, self.model)
        state = self.cdu.state
        state.pump1_speed_pct = self.cdu.target_speed_pct()
        state.facility_valve_position_pct = state.facility_valve_setpoint_pct
        self.link.read_into_model(0.0)
        self.model.step(1_800.0, max_substep_s=10.0)  # settled, as megapod-sim starts
        self.model.time_s = 0.0
        self.snap = self.model.snapshot()
        self.link.write_from(self.snap)
        self.trace: list[tuple[float, float, float]] = []  # (t, supply, hottest GPU)

    def write(self, address: int, value: int) -> None:
        """FC 06, as on the wire: the CDU's own checks apply."""
        reply = self.cdu.handle_pdu(self.cdu.unit, struct.pack(">BHH", 0x06, address, value))
        if reply is None or reply[0] & 0x80:
            raise ValueError(f"the CDU refused {value} at register {address}")

    def step(self, now_s: float) -> None:
        self.cdu.step(STEP_S)
        self.link.read_into_model(STEP_S)
        self.model.step(STEP_S)
        self.snap = self.model.snapshot()
        self.link.write_from(self.snap)
        hottest = max(t for s in self.snap.servers for t in s.gpu_temps_c)
        self.trace.append((now_s, self.snap.cooling.supply_temp_c, hottest))


P = TypeVar("P")


class PlantAdapter(Generic[P]):
    """A DeviceDriver over a plant (what a real driver reads off the wire)."""

    def __init__(self, plant: P, kind: DeviceKind, groups: Sequence[PollGroup]) -> None:
        self.plant = plant
        self._kind = kind
        self._groups = tuple(groups)

    @property
    def kind(self) -> DeviceKind:
        return self._kind

    def poll_groups(self) -> Sequence[PollGroup]:
        return self._groups

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def link_stats(self) -> Mapping[str, int]:
        return {}


class CduAdapter(PlantAdapter[_Plant]):
    async def read_group(self, group: str) -> Mapping[str, Point]:
        if group == "safety":
            return cdu_map.decode_input_block(self.plant.cdu.input_registers())
        return cdu_map.decode_holding_block(self.plant.cdu.holding_registers())

    async def set_pump_speed_pct(self, pct: float) -> None:
        self.plant.write(cdu_map.HR_PUMP_SPEED_SETPOINT, cdu_map.PUMP_SPEED_LIMIT.to_raw(pct))

    async def set_control_mode(self, mode: cdu_map.ControlMode) -> None:
        self.plant.write(cdu_map.HR_CONTROL_MODE, mode.value)

    async def set_facility_valve_pct(self, pct: float) -> None:
        self.plant.write(cdu_map.HR_VALVE_SETPOINT, cdu_map.VALVE_LIMIT.to_raw(pct))


class PduAdapter(PlantAdapter[_Plant]):
    def __init__(self, plant: _Plant, pdu: str) -> None:
        super().__init__(plant, DeviceKind.PDU, [PollGroup("fast", 1.0)])
        self.pdu = pdu

    async def read_group(self, group: str) -> Mapping[str, Point]:
        watts = sum(
            s.power_w for s in self.plant.snap.servers
            if self.plant.layout.plug(s.server).pdu_id == self.pdu
        )  # fmt: skip
        return {"power_w": Point(round(watts / 10.0) * 10.0, "W")}  # hundredths of a kW


class BmcAdapter(PlantAdapter[_Plant]):
    def __init__(self, plant: _Plant, server: ServerId) -> None:
        groups = [PollGroup("sensors", 2.0), PollGroup("slow", 5.0)]
        super().__init__(plant, DeviceKind.BMC, groups)
        self.server = server
        self.fan_zones = (0,)

    async def read_group(self, group: str) -> Mapping[str, Point]:
        snap = next(s for s in self.plant.snap.servers if s.server == self.server)
        if group == "slow":
            return {f"fan{n + 1}_rpm": Point(round(rpm, -2), "RPM")
                    for n, rpm in enumerate(snap.fan_rpm)}  # fmt: skip
        points = {f"gpu{n + 1}_temp_c": Point(round(t * 2.0) / 2.0, "C")
                  for n, t in enumerate(snap.gpu_temps_c)}  # fmt: skip
        points["outlet_temp_c"] = Point(float(round(snap.outlet_air_c)), "C")
        return points

    async def set_fan_duty_pct(self, zone: int, pct: int) -> None:
        self.plant.model.server(self.server).fan_duty_pct = float(pct)


def pod_config(layout: PodLayout, without_feed_forward: bool = False) -> Config:
    """The config `megapod-sim run --write-config` writes for this layout."""
    spec = DaemonConfigSpec(layout, PortPlan(15_020, layout), SimPaths(Path("/nonexistent")))
    text = render_config(spec)
    if without_feed_forward:
        text = "\n".join(
            line for line in text.splitlines() if not line.startswith("feed_forward = ")
        )
    return parse_config(tomllib.loads(text), Path("<megapod-sim config>"))


@dataclass
class DaemonPlant:
    plant: _Plant
    loops: LoopEngine
    arbiter: OutputArbiter
    events: EventBus
    store: PointStore
    drivers: dict[str, PlantAdapter[_Plant]] = field(default_factory=dict)

    def set_workload(self, pct: float) -> None:
        self.plant.model.set_workload(pct)


@contextlib.asynccontextmanager
async def daemon_plant(
    layout: PodLayout, workload_pct: float, without_feed_forward: bool = False
) -> AsyncIterator[DaemonPlant]:
    """The daemon's loop machinery around the plant; run it with looptime."""
    config = pod_config(layout, without_feed_forward)
    plant = _Plant(layout, workload_pct)
    events = EventBus("plant")
    store = PointStore(events)
    arbiter = OutputArbiter(events, lambda: asyncio.get_running_loop().time())
    drivers: dict[str, PlantAdapter[_Plant]] = {
        "cdu1": CduAdapter(
            plant, DeviceKind.CDU, [PollGroup("safety", 0.25), PollGroup("settings", 1.25)]
        )
    }
    for pdu in layout.pdu_ids():
        drivers[pdu] = PduAdapter(plant, pdu)
    for server in layout.server_ids():
        drivers[server.name] = BmcAdapter(plant, server)
    settings = SupervisorSettings(1.0, 1.0, 1.0)
    supervisors: list[DeviceSupervisor[Any]] = []
    for device_id, driver in drivers.items():
        supervisor: DeviceSupervisor[Any] = DeviceSupervisor(
            device_id, driver, store, events, settings
        )
        supervisors.append(supervisor)
        for output in device_outputs(device_id, driver.kind, racks=config.racks()):
            arbiter.add(output, supervisor)
    loop_specs, zone_specs = compile_loops(config)
    loops = LoopEngine(
        loop_specs, zone_specs, store, arbiter, events,
        lambda: asyncio.get_running_loop().time(),
    )  # fmt: skip
    store.readings.add("control loops", loops.on_readings)

    async def plant_steps() -> None:
        clock = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STEP_S)
            plant.step(clock.time())

    async def ticks() -> None:
        while True:
            loops.tick()
            arbiter.tick()
            await asyncio.sleep(TICK_S)

    tasks = [asyncio.create_task(s.run(), name=f"supervisor:{s.device_id}") for s in supervisors]
    tasks += [asyncio.create_task(plant_steps()), asyncio.create_task(ticks())]
    try:
        yield DaemonPlant(plant, loops, arbiter, events, store, drivers)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class StepResult:
    label: str
    max_deviation_k: float  # largest |supply - setpoint| after the step
    settled_after_s: float  # until it stays within ±band
    hottest_gpu_c: float


def measure(
    trace: Sequence[tuple[float, float, float]],
    start_s: float,
    end_s: float,
    setpoint_c: float,
    label: str,
    band_k: float = 0.5,
) -> StepResult:
    window = [row for row in trace if start_s <= row[0] < end_s]
    deviations = [supply - setpoint_c for _, supply, _ in window]
    worst = max(deviations, key=abs)
    outside = [t for t, supply, _ in window if abs(supply - setpoint_c) > band_k]
    settled = (max(outside) - start_s) if outside else 0.0
    return StepResult(label, worst, settled, max(g for _, _, g in window))
