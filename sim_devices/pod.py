"""The simulated pod: one physical model driving the CDU, PDU and BMC simulators.

Every tick (``tick_s`` of loop time) the orchestrator reads what the devices
were told to do (pump speeds, valves, outlets, chassis power, power caps, fan
duty), advances the model by ``tick_s * speed`` simulated seconds, and writes
what the devices' sensors should read. Device logic (the CDU's watchdog and
lead/lag, PDU switching, BMC shutdown timers) runs on the loop clock, so
``speed`` speeds up the plant only, never the protocol timing the daemon sees.

Faults arrive on the control socket (sim_devices.control) and are applied here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sim_devices import faults as f
from sim_devices.bmc import serve_bmcs
from sim_devices.cdu import SimulatedCdu
from sim_devices.config_writer import DaemonConfigSpec, render_config, write_config
from sim_devices.control import ControlServer
from sim_devices.pdu import serve_pdus
from sim_devices.physics import PodModel, ServerId
from sim_devices.physics import constants as k
from sim_devices.profiles import (
    CDU_ID,
    PodLayout,
    PortPlan,
    SimPaths,
    check_oversubscribe,
    feed_w,
)
from sim_devices.wiring.bmc import BmcLink, bmc_specs
from sim_devices.wiring.cdu import CDU_POINTS, CduLink, cdu_state_for
from sim_devices.wiring.pdu import PDU_POINTS, PduLink, pdu_specs

log = structlog.get_logger(__name__)

DEFAULT_TICK_S = 0.25  # the CDU's safety block is polled at 100-250 ms
DEFAULT_WORKLOAD_PCT = 50.0
SETTLE_S = 1_800.0  # 30 supply time constants: steady to well under 0.1 K
SETTLE_SUBSTEP_S = 10.0


@dataclass(frozen=True, slots=True)
class PodOptions:
    layout: PodLayout
    base_port: int
    state_dir: Path
    seed: int = 0
    speed: float = 1.0
    host: str = "127.0.0.1"
    bmc_tcp: bool = False
    tick_s: float = DEFAULT_TICK_S
    workload_pct: float = DEFAULT_WORKLOAD_PCT
    pod_id: str = "pod-sim"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    metrics_listen: str = "127.0.0.1:9108"
    write_config: Path | None = None
    # Breakers and the pod's feed sized for peak / this (1.0: every server at peak fits).
    oversubscribe: float = 1.0

    def __post_init__(self) -> None:
        check_oversubscribe(self.oversubscribe)
        if not 0.0 < self.speed <= 1_000.0:
            raise ValueError(f"speed must be > 0 and <= 1000 simulated s per wall s: {self.speed}")
        if not 0.01 <= self.tick_s <= 5.0:
            raise ValueError(f"tick must be 0.01-5 s: {self.tick_s}")
        if not 0.0 <= self.workload_pct <= 100.0:
            raise ValueError(f"workload must be 0-100 %: {self.workload_pct}")

    @property
    def ports(self) -> PortPlan:
        return PortPlan(self.base_port, self.layout, self.bmc_tcp)

    @property
    def paths(self) -> SimPaths:
        return SimPaths(self.state_dir)

    def config_spec(self) -> DaemonConfigSpec:
        return DaemonConfigSpec(
            self.layout,
            self.ports,
            self.paths,
            self.pod_id,
            self.mqtt_url,
            self.host,
            self.metrics_listen,
            self.oversubscribe,
        )


@dataclass(slots=True)
class _Links:
    cdu: CduLink
    pdu: PduLink
    bmc: BmcLink
    catalog: f.DeviceCatalog


class SimPod:
    """Build with options, then ``await run(stop)`` until the event is set."""

    def __init__(self, options: PodOptions) -> None:
        self.options = options
        options.config_spec()  # check pod id and URL before anything starts
        self.model = PodModel(options.layout.racks, options.layout.servers_per_rack, options.seed)
        self.model.set_workload(options.workload_pct)
        self.faults: dict[tuple[str, ...], f.Fault] = {}
        self._links: _Links | None = None
        self.ticks = 0
        self._started_s = 0.0  # loop time when the devices came up

    @property
    def links(self) -> _Links:
        if self._links is None:
            raise RuntimeError("the pod's devices are not running")
        return self._links

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Serve every device until ``stop`` is set; close everything on the way out."""
        opts = self.options
        async with contextlib.AsyncExitStack() as stack:
            opts.state_dir.mkdir(parents=True, exist_ok=True)
            opts.paths.daemon_state_dir.mkdir(exist_ok=True)
            cdu = SimulatedCdu(cdu_state_for(self.model), physics=False)
            await cdu.start(opts.host, opts.ports.cdu_port)
            stack.push_async_callback(cdu.close)
            specs = pdu_specs(opts.layout, opts.ports, opts.host, opts.oversubscribe)
            pdus = await serve_pdus(specs)
            stack.push_async_callback(pdus.close)
            bmcs = await serve_bmcs(
                bmc_specs(self.model, opts.ports, opts.seed), opts.paths.pty_dir
            )
            stack.push_async_callback(bmcs.close)
            bmc_link = BmcLink(bmcs, self.model, opts.paths)
            self._links = _Links(
                cdu=CduLink(cdu, self.model),
                pdu=PduLink(pdus, self.model, opts.layout),
                bmc=bmc_link,
                catalog=f.DeviceCatalog(
                    opts.layout,
                    cdu_points=frozenset(CDU_POINTS),
                    pdu_points=PDU_POINTS,
                    bmc_points=frozenset(bmc_link.points),
                ),
            )
            stack.callback(self._forget_links)
            self._settle()
            control = ControlServer(opts.paths.control_socket, self.handle_request)
            await control.start()
            stack.push_async_callback(control.close)
            if opts.write_config is not None:
                write_config(opts.write_config, render_config(opts.config_spec()))
            log.info(
                "sim_pod_running",
                racks=opts.layout.racks,
                servers=opts.layout.server_count,
                pdus=opts.layout.pdu_count,
                cdu_port=cdu.port,
                speed=opts.speed,
            )
            self._started_s = asyncio.get_running_loop().time()
            if ready is not None:
                ready.set()
            async with asyncio.TaskGroup() as tg:
                ticker = tg.create_task(self._tick_forever(), name="sim-pod-tick")
                await stop.wait()
                ticker.cancel()
        log.info(
            "sim_pod_stopped",
            ticks=self.ticks,
            uptime_s=round(asyncio.get_running_loop().time() - self._started_s, 1),
            process_cpu_s=round(time.process_time(), 2),
        )

    def _forget_links(self) -> None:
        self._links = None

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.options.tick_s)
            now = loop.time()
            self._tick(now - last)
            last = now

    def _settle(self) -> None:
        """Start from the steady state of the initial settings, not a cold loop."""
        cdu = self.links.cdu.sim
        cdu.state.pump1_speed_pct = cdu.target_speed_pct()  # already up to speed
        cdu.state.facility_valve_position_pct = cdu.state.facility_valve_setpoint_pct
        self.links.cdu.read_into_model(0.0)
        self.links.pdu.read_into_model()
        self.links.bmc.read_into_model(asyncio.get_running_loop().time())
        self.model.step(SETTLE_S, max_substep_s=SETTLE_SUBSTEP_S)
        self.model.time_s = 0.0
        self._tick(0.0)

    def _tick(self, wall_dt_s: float) -> None:
        links = self.links
        now = asyncio.get_running_loop().time()
        dt_s = wall_dt_s * self.options.speed
        links.cdu.read_into_model(dt_s)
        links.pdu.read_into_model()
        links.bmc.read_into_model(now)
        self.model.step(dt_s)
        snap = self.model.snapshot()
        links.cdu.write_from(snap)
        links.pdu.write_from(snap)
        links.bmc.write_from(snap)
        self.ticks += 1

    # --- control socket -------------------------------------------------------
    def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request; ValueError (incl. FaultError) becomes an error reply."""
        op = request["op"]
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op == "log":
            return {"ok": True, **self.actuation_log(request.get("since_s", 0.0))}
        if op in ("inject", "clear"):
            name = request.get("fault")
            args = request.get("args", [])
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise f.FaultError('"args" must be a list of strings')
            if op == "inject":
                if not isinstance(name, str):
                    raise f.FaultError('inject needs a "fault" name')
                fault = self.inject(name, args)
                at_s = time.monotonic()  # the devices show it from now
                return {
                    "ok": True,
                    "injected": f.describe(fault),
                    "active": self.active(),
                    "at_s": at_s,
                }
            if name is not None and not isinstance(name, str):
                raise f.FaultError('"fault" must be a name or null')
            cleared = self.clear(name, args)
            return {"ok": True, "cleared": cleared, "active": self.active()}
        raise f.FaultError(f"unknown op {op!r}; ops: inject, clear, status, log")

    def actuation_log(self, since_s: object) -> dict[str, Any]:
        """What the daemon did to the devices since `since_s` (loop time): CDU
        register writes and outlet switches, each with the time it landed."""
        if isinstance(since_s, bool) or not isinstance(since_s, int | float):
            raise f.FaultError('"since_s" must be a number (the sim\'s monotonic time)')
        links = self.links
        outlets = {}
        for pdu in self.options.layout.pdu_ids():
            switched = links.pdu.farm[pdu].model.switch_log
            outlets[pdu] = [list(entry) for entry in switched if entry[0] >= since_s]
        writes = [list(entry) for entry in links.cdu.sim.write_log if entry[0] >= since_s]
        return {
            "now_s": time.monotonic(),
            "cdu_writes": writes,
            "outlet_switches": outlets,
        }

    def active(self) -> list[str]:
        return [f.describe(fault) for fault in self.faults.values()]

    def inject(self, name: str, args: list[str]) -> f.Fault:
        fault = f.parse_fault(name, args, self.links.catalog)
        previous = self.faults.get(fault.key)
        if previous is not None:
            self._undo(previous)
        if isinstance(fault, f.Workload) and fault.rack is None:
            # "all" sets every rack: per-rack workloads give way to it.
            for key in [key for key in self.faults if key[0] == f.FaultKind.WORKLOAD]:
                self.faults.pop(key)
        try:
            self._apply(fault)
        except BaseException:
            if previous is not None:
                self._apply(previous)  # leave the pod as it was
            raise
        self.faults[fault.key] = fault
        self._tick(0.0)  # the devices show the fault at once, not a tick later
        log.warning("sim_fault_injected", fault=f.describe(fault))
        return fault

    def clear(self, name: str | None, args: list[str]) -> list[str]:
        """Undo the faults matching ``name [args]`` (None: every fault)."""
        if name is None:
            matching = list(self.faults)
        else:
            kind = f.parse_kind(name)
            prefix = f.clear_key(name, args, self.links.catalog)
            matching = [
                key
                for key, fault in self.faults.items()
                if fault.kind is kind and key[: len(prefix)] == prefix
            ]
        if name is not None and args and not matching:
            raise f.FaultError(f"no active fault matches {' '.join([name, *args])!r}")
        cleared = []
        for key in matching:
            fault = self.faults.pop(key)
            self._undo(fault)
            cleared.append(f.describe(fault))
            log.info("sim_fault_cleared", fault=f.describe(fault))
        self._tick(0.0)
        return cleared

    def _apply(self, fault: f.Fault) -> None:
        links, model = self.links, self.model
        match fault:
            case f.Leak(rack=rack, server=None):
                model.leak_racks.add(rack)
            case f.Leak(server=ServerId() as server):
                model.leak_servers.add(server)
            case f.PumpSeize(pump=pump):
                links.cdu.sim.pump_seize(pump)
            case f.SensorStuck(device=device, device_kind=kind, point=point, value=value):
                if kind is f.DeviceKind.CDU:
                    links.cdu.stick(point, value)
                elif kind is f.DeviceKind.PDU:
                    links.pdu.stick(device, point, value)
                else:
                    links.bmc.stick(ServerId.parse(device), point, value)
            case f.SensorRange(device=device, device_kind=kind, point=point):
                if kind is f.DeviceKind.CDU:
                    links.cdu.out_of_range(point)
                elif kind is f.DeviceKind.PDU:
                    links.pdu.stick(device, point, None)
                else:
                    links.bmc.out_of_range(ServerId.parse(device), point)
            case f.Silent():
                self._set_silent(fault, True)
            case f.Garbage(server=server, rate=rate):
                links.bmc.state(server).garbage_rate = rate
            case f.ReadingCorrupt(server=server, rate=rate):
                links.bmc.state(server).reading_corrupt_rate = rate
            case f.BreakerTrip(pdu=pdu, phase=phase):
                links.pdu.trip(pdu, phase)
            case f.FacilityHot(temp_c=temp_c):
                model.cooling.facility_supply_c = temp_c
            case f.Workload(rack=rack, pct=pct):
                model.set_workload(pct, rack)
            case f.FanFail(server=server, fan=fan):
                model.server(server).failed_fans.add(fan)
            case f.LocalMode():
                links.cdu.sim.state.local_mode = True
            case f.HeartbeatLost():
                links.cdu.sim.heartbeats_lost = True

    def _undo(self, fault: f.Fault) -> None:
        links, model = self.links, self.model
        match fault:
            case f.Leak(rack=rack, server=None):
                model.leak_racks.discard(rack)
            case f.Leak(server=ServerId() as server):
                model.leak_servers.discard(server)
            case f.PumpSeize(pump=pump):
                links.cdu.unseize(pump)
            case (
                f.SensorStuck(device=device, device_kind=kind, point=point)
                | f.SensorRange(device=device, device_kind=kind, point=point)
            ):
                if kind is f.DeviceKind.CDU:
                    links.cdu.clear_sensor(point)
                elif kind is f.DeviceKind.PDU:
                    links.pdu.clear_sensor(device, point)
                else:
                    links.bmc.clear_sensor(ServerId.parse(device), point)
            case f.Silent():
                self._set_silent(fault, False)
            case f.Garbage(server=server):
                links.bmc.state(server).garbage_rate = 0.0
            case f.ReadingCorrupt(server=server):
                links.bmc.state(server).reading_corrupt_rate = 0.0
            case f.BreakerTrip(pdu=pdu, phase=phase):
                links.pdu.reset_breaker(pdu, phase)
            case f.FacilityHot():
                model.cooling.facility_supply_c = k.FACILITY_SUPPLY_C
            case f.Workload(rack=rack):
                # Back to the pod-wide workload fault if there is one, else the default;
                # racks with their own workload fault keep it.
                everyone = self.faults.get((f.FaultKind.WORKLOAD, "all"))
                base = everyone.pct if isinstance(everyone, f.Workload) else None
                model.set_workload(base if base is not None else self.options.workload_pct, rack)
                for other in self.faults.values():
                    if isinstance(other, f.Workload) and other.rack is not None and other != fault:
                        model.set_workload(other.pct, other.rack)
            case f.FanFail(server=server, fan=fan):
                model.server(server).failed_fans.discard(fan)
            case f.LocalMode():
                links.cdu.sim.state.local_mode = False
            case f.HeartbeatLost():
                links.cdu.sim.heartbeats_lost = False

    def _set_silent(self, fault: f.Silent, silent: bool) -> None:
        links = self.links
        if fault.device_kind is f.DeviceKind.CDU:
            links.cdu.sim.silent = silent
            if silent:
                links.cdu.sim.drop_connections()  # a dead controller resets its sockets
        elif fault.device_kind is f.DeviceKind.PDU:
            links.pdu.set_silent(fault.device, silent)
        else:
            links.bmc.state(ServerId.parse(fault.device)).silent = silent

    # --- status ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The true state of the pod, for people and for tests to compare with."""
        links = self.links
        snap = self.model.snapshot()
        cdu = links.cdu.sim
        pdus = {}
        for pdu in self.options.layout.pdu_ids():
            model = links.pdu.farm[pdu].model
            pdus[pdu] = {
                "power_w": model.power_w,
                "phase_current_a": [model.phase_current_a(p) for p in (1, 2, 3)],
                "tripped_phases": sorted(model.tripped),
                "outlets_on": [o.number for o in model.outlets if o.on],
                "breaker_a": model.breaker_a,
            }
        servers = snap.to_json()["servers"]
        for entry, server in zip(servers, snap.servers, strict=True):
            plug = links.pdu.plugs[server.server]
            entry["pdu"], entry["outlet"], entry["phase"] = plug.pdu_id, plug.outlet, plug.phase
            entry["workload_pct"] = self.model.servers[server.server].workload_pct
            entry["chassis_on"] = self.model.servers[server.server].chassis_on
            # What the daemon set over IPMI; fan_duty_pct is what drives the fans.
            bmc = links.bmc.state(server.server)
            entry["fan_mode"] = "full" if bmc.fan_mode == 1 else "standard"
            entry["fan_zone_duty_pct"] = list(bmc.fan_duty_pct)
            # The DCMI power limit as set (None: no limit active).
            entry["power_limit_w"] = bmc.power_limit_w if bmc.power_limit_active else None
        return {
            "time_s": snap.time_s,
            "speed": self.options.speed,
            # This process's CPU (all its devices), to check the budget against uptime.
            "process_cpu_s": time.process_time(),
            "uptime_s": asyncio.get_running_loop().time() - self._started_s,
            "layout": {
                "racks": self.options.layout.racks,
                "servers_per_rack": self.options.layout.servers_per_rack,
                "pdus_per_rack": self.options.layout.pdus_per_rack,
                "outlets_per_pdu": self.options.layout.outlets_per_pdu,
            },
            "total_power_w": snap.total_power_w,
            # The pod's feed, sized for peak / --oversubscribe.
            "feed_w": feed_w(self.options.layout, k.SERVER_PEAK_W, self.options.oversubscribe),
            "cooling": snap.cooling.to_json(),
            CDU_ID: {
                "port": cdu.port,
                "running_pump": cdu.state.running_pump,
                "alarm_code": cdu.state.alarm_code,
                "watchdog_expired": cdu.state.watchdog_expired,
                "control_mode": cdu.state.control_mode,
                "pump_speed_setpoint_pct": cdu.state.pump_speed_setpoint_pct,
                "facility_valve_setpoint_pct": cdu.state.facility_valve_setpoint_pct,
            },
            "pdus": pdus,
            "servers": servers,
            "faults": self.active(),
        }
