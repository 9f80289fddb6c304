"""The daemon's power budget (megapodd/power/) closed around the simulator's
physics, in simulated time (the loop clock, with looptime), like
bench/daemon_plant.py does for the cooling loops.

The config is the one `megapod-sim run --write-config` writes (breakers and
feed sized by `--oversubscribe`), with the budget set by the caller. The
PowerController runs from a 100 ms tick; its caps go through the arbiter and
the output catalog's `power_limit_w` to BMC supervisors whose drivers are
adapters onto the physical model, with the simulator's timing: a new limit
goes to the model at once and its 0.4 s power lag is the response (99 % in
2 s, DEVICES.md); `cap_delay_s` adds a BMC that waits that long before it
acts (the old limit holding meanwhile). Readings
come back at the daemon's poll rates and the simulated PDU's resolutions:
phase current (0.1 A), voltage and power (10 W) every second, outlet power
every 10 s, each BMC's DCMI power every 5 s. A phase at or above its breaker
rating trips (counted, and its servers lose power, as in the simulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.daemon_plant import PlantAdapter
from drivers.base import DeviceKind, Point, PollGroup
from megapodd.config import Config, parse_config
from megapodd.control.arbiter import OutputArbiter
from megapodd.events import EventBus
from megapodd.outputs.catalog import device_outputs
from megapodd.power.controller import PowerController
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, SupervisorSettings
from sim_devices.config_writer import DaemonConfigSpec, render_config
from sim_devices.pdu import PHASE_VOLTAGE_V
from sim_devices.physics import PodModel
from sim_devices.physics.types import ServerId
from sim_devices.profiles import PodLayout, PortPlan, SimPaths

STEP_S = 0.25  # the model step
TICK_S = 0.1  # the daemon's control tick


@dataclass
class _Limit:
    """A BMC's DCMI power limit as the simulated BMC keeps it."""

    delay_s: float = 0.0
    watts: float | None = None
    set_s: float = 0.0
    previous: float | None = None

    def set(self, watts: float | None, now_s: float) -> None:
        self.previous = self.in_force(now_s) if watts is not None else None
        self.watts, self.set_s = watts, now_s

    def in_force(self, now_s: float) -> float | None:
        if self.watts is None:
            return None
        return self.watts if now_s >= self.set_s + self.delay_s else self.previous


@dataclass
class PowerPlantState:
    layout: PodLayout
    model: PodModel
    breaker_a: dict[str, float]
    limits: dict[ServerId, _Limit] = field(default_factory=dict)
    tripped: set[tuple[str, int]] = field(default_factory=set)
    trips: list[tuple[float, str, int, float]] = field(default_factory=list)
    # (t, pod power, uncapped demand, caps in force) every model step
    trace: list[tuple[float, float, float, int]] = field(default_factory=list)
    phase_peak_a: dict[tuple[str, int], float] = field(default_factory=dict)
    server_power_w: dict[ServerId, float] = field(default_factory=dict)  # the last step's

    def phase_of(self, server: ServerId) -> tuple[str, int]:
        plug = self.layout.plug(server)
        return plug.pdu_id, plug.phase

    def step(self, now_s: float) -> None:
        for sid, limit in self.limits.items():
            cap = limit.in_force(now_s)
            self.model.servers[sid].power_cap_w = cap
        for sid in self.model.server_ids:
            self.model.servers[sid].outlet_on = self.phase_of(sid) not in self.tripped
        self.model.step(STEP_S)
        snap = self.model.snapshot()
        self.server_power_w = {s.server: s.power_w for s in snap.servers}
        amps: dict[tuple[str, int], float] = {}
        for sid, watts in self.server_power_w.items():
            key = self.phase_of(sid)
            amps[key] = amps.get(key, 0.0) + watts / PHASE_VOLTAGE_V
        for key, current in amps.items():
            self.phase_peak_a[key] = max(self.phase_peak_a.get(key, 0.0), current)
            if key not in self.tripped and current >= self.breaker_a[key[0]]:
                self.tripped.add(key)
                self.trips.append((now_s, key[0], key[1], current))
        demand = sum(self.model.demand_power_w(sid) for sid in self.model.server_ids)
        capped = sum(1 for limit in self.limits.values() if limit.in_force(now_s) is not None)
        self.trace.append((now_s, snap.total_power_w, demand, capped))



class PduAdapter(PlantAdapter[PowerPlantState]):
    def __init__(self, plant: PowerPlantState, pdu: str) -> None:
        super().__init__(plant, DeviceKind.PDU, [PollGroup("fast", 1.0), PollGroup("slow", 10.0)])
        self.pdu = pdu
        self.servers = [s for s in plant.model.server_ids if plant.layout.plug(s).pdu_id == pdu]

    async def read_group(self, group: str) -> Mapping[str, Point]:
        power = self.plant.server_power_w
        if group == "slow":
            return {
                f"outlet_{self.plant.layout.plug(s).outlet:02d}_power_w": Point(
                    round(power.get(s, 0.0)), "W"
                )
                for s in self.servers
            }
        points: dict[str, Point] = {}
        total = 0.0
        for p in (1, 2, 3):
            watts = sum(power.get(s, 0.0) for s in self.servers if self.plant.phase_of(s)[1] == p)
            total += watts
            points[f"phase{p}_current_a"] = Point(round(watts / PHASE_VOLTAGE_V, 1), "A")
            points[f"phase{p}_voltage_v"] = Point(round(PHASE_VOLTAGE_V), "V")
            points[f"phase{p}_power_w"] = Point(round(watts / 10.0) * 10.0, "W")
        points["power_w"] = Point(round(total / 10.0) * 10.0, "W")
        return points


class BmcAdapter(PlantAdapter[PowerPlantState]):
    def __init__(self, plant: PowerPlantState, server: ServerId, cap_delay_s: float) -> None:
        super().__init__(plant, DeviceKind.BMC, [PollGroup("slow", 5.0)])
        self.server = server
        plant.limits[server] = _Limit(cap_delay_s)

    async def read_group(self, group: str) -> Mapping[str, Point]:
        watts = self.plant.server_power_w.get(self.server, 0.0)
        limit = self.plant.limits[self.server].watts
        return {"power_w": Point(round(watts), "W"), "power_limit_w": Point(limit, "W")}

    async def set_power_limit_w(self, watts: int | None) -> None:
        now = asyncio.get_running_loop().time()
        self.plant.limits[self.server].set(None if watts is None else float(watts), now)


def power_config(
    layout: PodLayout, budget_w: float, oversubscribe: float, release_s: float = 60.0
) -> Config:
    """The config megapod-sim writes, with this budget."""
    spec = DaemonConfigSpec(
        layout, PortPlan(15_020, layout), SimPaths(Path("/nonexistent")),
        oversubscribe=oversubscribe,
    )  # fmt: skip
    text = render_config(spec)
    text = re.sub(r"^budget_w = .*$", f"budget_w = {budget_w:.0f}", text, flags=re.M)
    text = re.sub(r"^release_s = .*$", f"release_s = {release_s:g}", text, flags=re.M)
    return parse_config(tomllib.loads(text), Path("<megapod-sim config>"))


@dataclass
class PowerPlant:
    plant: PowerPlantState
    controller: PowerController
    arbiter: OutputArbiter
    events: EventBus
    store: PointStore

    def set_workload(self, pct: float, rack: int | None = None) -> None:
        self.plant.model.set_workload(pct, rack)


@contextlib.asynccontextmanager
async def power_plant(
    layout: PodLayout,
    workload_pct: float,
    budget_w: float,
    oversubscribe: float = 1.0,
    release_s: float = 60.0,
    seed: int = 0,
    cap_delay_s: float = 0.0,
) -> AsyncIterator[PowerPlant]:
    """The daemon's power budget around the plant; run it with looptime."""
    config = power_config(layout, budget_w, oversubscribe, release_s)
    model = PodModel(layout.racks, layout.servers_per_rack, seed)
    model.set_workload(workload_pct)
    model.step(5.0)
    model.time_s = 0.0
    plant = PowerPlantState(layout, model, {p.id: p.breaker_a for p in config.pdu})
    plant.server_power_w = {s.server: s.power_w for s in model.snapshot().servers}
    events = EventBus("power-plant")
    store = PointStore(events)
    clock = asyncio.get_running_loop().time
    arbiter = OutputArbiter(events, clock)
    drivers: dict[str, Any] = {pdu: PduAdapter(plant, pdu) for pdu in layout.pdu_ids()}
    for server in layout.server_ids():
        drivers[server.name] = BmcAdapter(plant, server, cap_delay_s)
    settings = SupervisorSettings(1.0, 1.0, 1.0)
    supervisors: list[DeviceSupervisor[Any]] = []
    for device_id, driver in drivers.items():
        supervisor: DeviceSupervisor[Any] = DeviceSupervisor(
            device_id, driver, store, events, settings
        )
        supervisors.append(supervisor)
        if driver.kind is DeviceKind.BMC:
            for output in device_outputs(device_id, DeviceKind.BMC):
                if output.spec.name == "power_limit_w":
                    arbiter.add(output, supervisor)
    controller = PowerController(config, store, arbiter, events, clock)

    async def plant_steps() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STEP_S)
            plant.step(loop.time())

    async def ticks() -> None:
        while True:
            controller.tick()
            arbiter.tick()
            await asyncio.sleep(TICK_S)

    tasks = [asyncio.create_task(s.run(), name=f"supervisor:{s.device_id}") for s in supervisors]
    tasks += [asyncio.create_task(plant_steps()), asyncio.create_task(ticks())]
    try:
        yield PowerPlant(plant, controller, arbiter, events, store)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
