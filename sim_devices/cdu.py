"""Simulated CDU: a Modbus TCP server speaking DEVICES.md §1.

Why a small server of our own instead of pymodbus's: the register image here is
derived from the physical state on every read, writes are validated per
register with exception codes 02/03/04, the simulator must be able to go
silent mid-connection, and every time-dependent behaviour has to run on the
event loop's clock. pymodbus's server wants a datastore and runs its own
tasks; an MBAP server for FC 03/04/06/16 is about a hundred lines.

API
    state = CduState(supply_temp_c=..., heat_load_w=...)   # plain mutable dataclass
    sim = SimulatedCdu(state=state, unit=1, physics=True, tick_s=0.1, autostep=True)
    await sim.start("127.0.0.1", port)   # port 0 picks a free one; sim.port tells
    path = await sim.start_rtu()         # also (or only) Modbus RTU on a new pty
    ...                                  # read/modify sim.state at any time
    await sim.close()                    # stops the server and the tick task
    sim = await serve_cdu(host, port)    # start with defaults and placeholder physics

    sim.state                 the CduState (physical state and settings)
    sim.step(dt_s)            device logic (+ physics if enabled) for dt_s. With
                              autostep=True a task calls it every tick_s of loop time;
                              an orchestrator stepping in lockstep passes autostep=False
                              and calls it itself (usually with physics=False)
    sim.input_registers()     the FC 04 image (0–17) as it would be read now
    sim.holding_registers()   the FC 03 image (100–109)
    sim.rtu_path              the pty path after start_rtu() (RTU framing, CRC checked;
                              a bad CRC or another unit's address gets no answer)
    sim.requests              recent requests seen (RequestRecord), newest last
    sim.writes                accepted writes (address, value) in order
    faults: sim.silent = True (read requests, never answer), sim.drop_connections(),
            sim.write_latency_s = s (a slow controller: writes answered s late, TCP),
            sim.pump_seize(n), sim.pump_fault(n), state.leak_zones = mask,
            sim.override_input(addr, raw) / sim.stick_input(addr) / sim.clear_override(addr)
            (sensor stuck or out of range: a fixed raw word for an input register)

Behaviour (DEVICES.md §1): exception 02 for unmapped addresses, 03 for values
out of range (nothing changes), 04 for writes to 100–104 and 108 in local mode;
comm watchdog (105 s without a write to 106 → failsafe speed 107 and status b6,
until the next heartbeat; 0 = off); lead/lag (a faulted running pump hands
over to the other after `changeover_s`, 0.25 s as in the Vertiv CoolChip
manual); alarm reset on the rising edge of control bit b2; control mode 1 holds
the local Δp setpoint from the pump curve. Not modelled: periodic lead rotation
in lead mode 0 (auto keeps the running pump until it faults); rack isolation
does not change flow in the placeholder physics (the pod model owns that).

Simulator-specific alarm codes (register 15, latched until alarm reset):
1 pump1 fault, 2 pump2 fault, 3 both pumps failed, 10 leak, 11 reservoir low,
20 comm watchdog expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import struct
import time
import tty
from collections import deque
from dataclasses import dataclass
from typing import Final

import structlog

log = structlog.get_logger(__name__)

FIRMWARE_VERSION: Final = (2, 7)

# Physical constants of the placeholder model (PG25 coolant).
COOLANT_DENSITY_KG_PER_L: Final = 1.02
COOLANT_CP_J_PER_KG_K: Final = 3900.0
SUPPLY_TAU_S: Final = 60.0  # plant time constant (POD-NUMBERS: 60 s is a fair start)
RESERVOIR_LOW_PCT: Final = 20.0

ALARM_PUMP1: Final = 1
ALARM_PUMP2: Final = 2
ALARM_BOTH_PUMPS: Final = 3
ALARM_LEAK: Final = 10
ALARM_RESERVOIR_LOW: Final = 11
ALARM_WATCHDOG: Final = 20

EXC_ILLEGAL_FUNCTION: Final = 0x01
EXC_ILLEGAL_ADDRESS: Final = 0x02
EXC_ILLEGAL_VALUE: Final = 0x03
EXC_DEVICE_FAILURE: Final = 0x04
EXC_GATEWAY_TARGET_FAILED: Final = 0x0B

INPUT_ADDRESSES: Final = range(0, 18)
HOLDING_ADDRESSES: Final = range(100, 110)
LOCAL_MODE_LOCKED: Final = frozenset({100, 101, 102, 103, 104, 108})
MAX_READ_COUNT: Final = 125
MAX_WRITE_COUNT: Final = 123


@dataclass
class CduState:
    """Physical state and settings of the CDU; the register image is derived from it.

    The pod orchestrator may write the physical fields each step (with
    `physics=False`); the settings fields are what Modbus writes change.
    """

    # Secondary (rack) loop.
    supply_temp_c: float = 30.0
    return_temp_c: float = 40.0
    flow_lpm: float = 600.0
    supply_pressure_kpa: float = 250.0
    return_pressure_kpa: float = 100.0
    # Facility water side.
    facility_supply_temp_c: float = 25.0
    facility_return_temp_c: float = 33.0
    facility_valve_position_pct: float = 50.0
    heat_load_w: int = 400_000
    reservoir_level_pct: float = 80.0
    # Pumps: speed feedback, latched fault, mechanically seized (fault that won't reset).
    pump1_speed_pct: float = 60.0
    pump2_speed_pct: float = 0.0
    pump1_fault: bool = False
    pump2_fault: bool = False
    pump1_seized: bool = False
    pump2_seized: bool = False
    running_pump: int = 1  # 1, 2, or 0 when none can run
    leak_zones: int = 0  # bit n = drip tray of rack n+1 wet
    local_mode: bool = False  # front-panel local: remote writes refused
    filter_dp_high: bool = False
    watchdog_expired: bool = False
    alarm_code: int = 0
    # Settings (holding registers), in engineering units.
    remote_enable: bool = True
    run: bool = True
    alarm_reset_bit: bool = False
    control_mode: int = 1  # 0 remote speed, 1 local Δp
    pump_speed_setpoint_pct: float = 60.0
    lead_pump: int = 0  # 0 auto, 1 pump1, 2 pump2
    facility_valve_setpoint_pct: float = 50.0
    watchdog_timeout_s: int = 10
    heartbeat_value: int = 0
    failsafe_speed_pct: float = 100.0
    rack_isolation_mask: int = 0
    local_dp_setpoint_kpa: float = 150.0
    # Placeholder physics parameters.
    flow_at_full_speed_lpm: float = 1000.0
    dp_at_full_speed_kpa: float = 300.0
    static_pressure_kpa: float = 100.0
    approach_k: float = 3.0  # supply above facility supply with the valve wide open
    pump_ramp_pct_per_s: float = 50.0
    valve_ramp_pct_per_s: float = 10.0
    changeover_s: float = 0.25

    @property
    def diff_pressure_kpa(self) -> float:
        return self.supply_pressure_kpa - self.return_pressure_kpa


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the simulator received (answered or not)."""

    unit: int
    function: int
    address: int
    count: int
    values: tuple[int, ...] = ()


def _u16(value: float) -> int:
    return max(0, min(0xFFFF, round(value)))


def _i16(value: float) -> int:
    return max(-0x8000, min(0x7FFF, round(value))) & 0xFFFF


def _exception(function: int, code: int) -> bytes:
    return bytes((function | 0x80, code))


class SimulatedCdu:
    """A CDU on Modbus TCP; see the module docstring."""

    def __init__(
        self,
        state: CduState | None = None,
        *,
        unit: int = 1,
        physics: bool = True,
        tick_s: float = 0.1,
        autostep: bool = True,
    ) -> None:
        self.state = state if state is not None else CduState()
        self.unit = unit
        self.physics = physics
        self.tick_s = tick_s
        self.autostep = autostep
        self.silent = False
        # Writes to 106 acknowledged but dropped (fault heartbeat-lost): the watchdog runs out.
        self.heartbeats_lost = False
        # A slow controller: each write (FC 06/16) is answered, and applied, this late.
        self.write_latency_s = 0.0
        self.requests: deque[RequestRecord] = deque(maxlen=1000)
        self.writes: list[tuple[int, int]] = []
        # (monotonic time, address, value) of accepted writes, for latency benchmarks.
        self.write_log: deque[tuple[float, int, int]] = deque(maxlen=20_000)
        self.port = 0
        self._overrides: dict[int, int] = {}
        self._server: asyncio.Server | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._last_heartbeat = 0.0
        self._fault_since: float | None = None
        # Device time: the sum of every step's dt. Timers (watchdog, changeover)
        # run on it, so they follow the loop clock through the tick task and
        # survive a loop clock that restarts (looptime starts each test at 0).
        self._clock_s = 0.0
        self._pty: tuple[int, int] | None = None  # (master, slave) fds of the RTU line
        self._rtu_buffer = bytearray()
        self.rtu_path = ""

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 = any free port; read `port` after) and start ticking."""
        if self._server is not None:
            raise RuntimeError("simulated CDU already started")
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._start_ticking()
        log.info("sim_cdu_started", host=host, port=self.port)

    async def start_rtu(self) -> str:
        """Serve Modbus RTU on a new pseudo-terminal; return the path a client opens."""
        if self._pty is not None:
            raise RuntimeError("simulated CDU already serves RTU")
        master, slave = os.openpty()
        # Raw mode: no echo, no CR/LF translation. The slave fd stays open here,
        # else the master reads EIO in a busy loop whenever no client has it open.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty = (master, slave)
        self.rtu_path = os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._rtu_readable)
        self._start_ticking()
        log.info("sim_cdu_rtu_started", path=self.rtu_path)
        return self.rtu_path

    def _start_ticking(self) -> None:
        if self.autostep and self._tick_task is None:
            self._last_heartbeat = self._clock_s
            self._tick_task = asyncio.create_task(self._tick_loop(), name="sim-cdu-tick")

    async def close(self) -> None:
        """Stop listening, drop every connection, stop the tick task. Safe to repeat."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._pty is not None:
            asyncio.get_running_loop().remove_reader(self._pty[0])
            for fd in self._pty:
                os.close(fd)
            self._pty = None
            self._rtu_buffer.clear()
        # Closing a connection ends its handler through EOF. Cancelling a
        # start_server handler instead makes asyncio 3.11 log a CancelledError
        # from its done-callback, so cancel only what does not end by itself.
        self.drop_connections()
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
            self._tick_task = None
        if server is not None:
            await server.wait_closed()

    def drop_connections(self) -> None:
        """Close every client connection (the listener stays)."""
        for writer in list(self._writers):
            writer.close()

    async def __aenter__(self) -> SimulatedCdu:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- fault hooks -------------------------------------------------------

    def pump_seize(self, pump: int) -> None:
        """The pump's rotor locks: it stops at once and its fault does not reset."""
        self._check_pump(pump)
        if pump == 1:
            self.state.pump1_seized = True
        else:
            self.state.pump2_seized = True
        self.pump_fault(pump)
        if pump == 1:
            self.state.pump1_speed_pct = 0.0
        else:
            self.state.pump2_speed_pct = 0.0

    def pump_fault(self, pump: int) -> None:
        """A (resettable) pump fault, e.g. a drive trip."""
        self._check_pump(pump)
        if pump == 1:
            self.state.pump1_fault = True
        else:
            self.state.pump2_fault = True
        if pump == self.state.running_pump and self._fault_since is None:
            self._fault_since = self._clock_s  # the changeover time counts from here
        self._raise_alarm(ALARM_PUMP1 if pump == 1 else ALARM_PUMP2)

    def override_input(self, address: int, raw: int) -> None:
        """Make input register `address` read `raw` (stuck or out-of-range sensor)."""
        if address not in INPUT_ADDRESSES or not 0 <= raw <= 0xFFFF:
            raise ValueError(f"override of input register {address} with {raw} is not possible")
        self._overrides[address] = raw

    def stick_input(self, address: int) -> None:
        """Freeze input register `address` at its current value."""
        self.override_input(address, self._live_input_registers()[address])

    def clear_override(self, address: int | None = None) -> None:
        if address is None:
            self._overrides.clear()
        else:
            self._overrides.pop(address, None)

    @staticmethod
    def _check_pump(pump: int) -> None:
        if pump not in (1, 2):
            raise ValueError(f"pump {pump} is not 1 or 2")

    # -- register images -----------------------------------------------------

    def status_word(self) -> int:
        s = self.state
        bits = 0
        bits |= 1 << 0 if self._pump_running(1) else 0
        bits |= 1 << 1 if self._pump_running(2) else 0
        bits |= 1 << 2 if s.pump1_fault else 0
        bits |= 1 << 3 if s.pump2_fault else 0
        bits |= 1 << 4 if s.leak_zones else 0
        bits |= 1 << 5 if s.reservoir_level_pct < RESERVOIR_LOW_PCT else 0
        bits |= 1 << 6 if s.watchdog_expired else 0
        bits |= 1 << 7 if s.local_mode else 0
        bits |= 1 << 8 if s.filter_dp_high else 0
        return bits

    def _live_input_registers(self) -> list[int]:
        s = self.state
        heat = max(0, min(0xFFFF_FFFF, round(s.heat_load_w)))
        return [
            _i16(s.supply_temp_c * 100),
            _i16(s.return_temp_c * 100),
            _i16(s.facility_supply_temp_c * 100),
            _i16(s.facility_return_temp_c * 100),
            _u16(s.flow_lpm * 10),
            _u16(s.supply_pressure_kpa * 10),
            _u16(s.return_pressure_kpa * 10),
            _u16(max(0.0, s.diff_pressure_kpa) * 10),
            _u16(s.pump1_speed_pct * 100),
            _u16(s.pump2_speed_pct * 100),
            _u16(s.reservoir_level_pct * 10),
            _u16(s.facility_valve_position_pct * 10),
            heat >> 16,
            heat & 0xFFFF,
            self.status_word(),
            s.alarm_code & 0xFFFF,
            s.leak_zones & 0xFFFF,
            (FIRMWARE_VERSION[0] << 8) | FIRMWARE_VERSION[1],
        ]

    def input_registers(self) -> list[int]:
        """Input registers 0–17 as a read would return them now (overrides applied)."""
        regs = self._live_input_registers()
        for address, raw in self._overrides.items():
            regs[address] = raw
        return regs

    def holding_registers(self) -> list[int]:
        """Holding registers 100–109."""
        s = self.state
        control = (1 if s.remote_enable else 0) | (2 if s.run else 0)
        control |= 4 if s.alarm_reset_bit else 0
        return [
            control,
            s.control_mode,
            _u16(s.pump_speed_setpoint_pct * 100),
            s.lead_pump,
            _u16(s.facility_valve_setpoint_pct * 10),
            s.watchdog_timeout_s,
            s.heartbeat_value,
            _u16(s.failsafe_speed_pct * 100),
            s.rack_isolation_mask,
            _u16(s.local_dp_setpoint_kpa * 10),
        ]

    # -- writes ------------------------------------------------------------

    def _check_write(self, address: int, value: int) -> int | None:
        """Exception code for writing `value` to `address`, or None if acceptable."""
        if address not in HOLDING_ADDRESSES:
            return EXC_ILLEGAL_ADDRESS
        if self.state.local_mode and address in LOCAL_MODE_LOCKED:
            return EXC_DEVICE_FAILURE
        valid = {
            100: range(0, 8),
            101: range(0, 2),
            102: range(2000, 10001),
            103: range(0, 3),
            104: range(0, 1001),
            105: range(0, 601),
            107: range(2000, 10001),
            109: range(0, 5001),
        }.get(address)
        if valid is not None and value not in valid:
            return EXC_ILLEGAL_VALUE
        return None

    def _apply_write(self, address: int, value: int) -> None:
        s = self.state
        self.writes.append((address, value))
        self.write_log.append((time.monotonic(), address, value))
        if address == 100:
            rising = bool(value & 4) and not s.alarm_reset_bit
            s.remote_enable = bool(value & 1)
            s.run = bool(value & 2)
            s.alarm_reset_bit = bool(value & 4)
            if rising:
                self._alarm_reset()
        elif address == 101:
            s.control_mode = value
        elif address == 102:
            s.pump_speed_setpoint_pct = value / 100
        elif address == 103:
            s.lead_pump = value
            if value in (1, 2) and not self._pump_faulted(value):
                s.running_pump = value
        elif address == 104:
            s.facility_valve_setpoint_pct = value / 10
        elif address == 105:
            # Only 106 is a heartbeat (DEVICES.md): a daemon that rewrote the
            # timeout but never wrote 106 must see the watchdog expire.
            s.watchdog_timeout_s = value
        elif address == 106 and not self.heartbeats_lost:
            s.heartbeat_value = value
            self._heartbeat()
        elif address == 107:
            s.failsafe_speed_pct = value / 100
        elif address == 108:
            s.rack_isolation_mask = value
        elif address == 109:
            s.local_dp_setpoint_kpa = value / 10

    def _heartbeat(self) -> None:
        self._last_heartbeat = self._now_s()
        if self.state.watchdog_expired:
            self.state.watchdog_expired = False
            log.info("sim_cdu_watchdog_restored")

    def _alarm_reset(self) -> None:
        s = self.state
        if not s.pump1_seized:
            s.pump1_fault = False
        if not s.pump2_seized:
            s.pump2_fault = False
        s.alarm_code = 0
        # Conditions still present raise their alarm again at once.
        if s.pump1_fault:
            self._raise_alarm(ALARM_PUMP1)
        if s.pump2_fault:
            self._raise_alarm(ALARM_PUMP2)
        if s.leak_zones:
            self._raise_alarm(ALARM_LEAK)
        if s.watchdog_expired:
            self._raise_alarm(ALARM_WATCHDOG)
        log.info("sim_cdu_alarm_reset", alarm_code=s.alarm_code)

    def _raise_alarm(self, code: int) -> None:
        s = self.state
        if s.pump1_fault and s.pump2_fault:
            code = ALARM_BOTH_PUMPS
        if s.alarm_code == 0 or code == ALARM_BOTH_PUMPS:
            s.alarm_code = code

    # -- time-dependent behaviour ------------------------------------------

    def _now_s(self) -> float:
        return self._clock_s

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        mark = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            dt_s, mark = max(0.0, now - mark), now
            self.step(dt_s)

    def _pump_faulted(self, pump: int) -> bool:
        s = self.state
        return s.pump1_fault or s.pump1_seized if pump == 1 else s.pump2_fault or s.pump2_seized

    def _pump_running(self, pump: int) -> bool:
        return self.state.running_pump == pump and not self._pump_faulted(pump) and self.state.run

    def target_speed_pct(self) -> float:
        """What the CDU drives its running pump to, given mode, watchdog and run."""
        s = self.state
        if not s.run:
            return 0.0
        if s.watchdog_expired:
            return s.failsafe_speed_pct
        if s.control_mode == 1 or s.local_mode:
            # Local Δp: invert the pump curve Δp = dp_full·(n/100)².
            ratio = max(0.0, s.local_dp_setpoint_kpa) / max(1e-6, s.dp_at_full_speed_kpa)
            return max(20.0, min(100.0, 100.0 * math.sqrt(ratio)))
        return s.pump_speed_setpoint_pct

    def step(self, dt_s: float) -> None:
        """Advance device time, device logic (and placeholder physics if enabled) by dt_s."""
        s = self.state
        self._clock_s += dt_s
        now = self._clock_s
        # Comm watchdog.
        if (
            s.watchdog_timeout_s > 0
            and not s.local_mode
            and not s.watchdog_expired
            and now - self._last_heartbeat >= s.watchdog_timeout_s
        ):
            s.watchdog_expired = True
            self._raise_alarm(ALARM_WATCHDOG)
            log.warning("sim_cdu_watchdog_expired", timeout_s=s.watchdog_timeout_s)
        # Lead/lag changeover.
        other = 2 if s.running_pump == 1 else 1
        if s.running_pump in (1, 2) and self._pump_faulted(s.running_pump):
            if self._fault_since is None:
                self._fault_since = now
            if now - self._fault_since >= s.changeover_s:
                s.running_pump = other if not self._pump_faulted(other) else 0
                self._fault_since = None
                log.info("sim_cdu_pump_changeover", running_pump=s.running_pump)
        elif s.running_pump == 0:  # none could run: start one as soon as one is healthy
            lead = s.lead_pump if s.lead_pump in (1, 2) else 1
            for pump in (lead, 3 - lead):
                if not self._pump_faulted(pump):
                    s.running_pump = pump
                    break
        else:
            self._fault_since = None
        # Pump speed feedback ramps toward the target (seized pumps stand still).
        target = self.target_speed_pct()
        step_pct = s.pump_ramp_pct_per_s * dt_s
        for pump in (1, 2):
            goal = target if self._pump_running(pump) else 0.0
            current = s.pump1_speed_pct if pump == 1 else s.pump2_speed_pct
            new = current + max(-step_pct, min(step_pct, goal - current))
            seized = s.pump1_seized if pump == 1 else s.pump2_seized
            if seized:
                new = 0.0
            if pump == 1:
                s.pump1_speed_pct = new
            else:
                s.pump2_speed_pct = new
        if s.leak_zones:
            self._raise_alarm(ALARM_LEAK)
        if s.reservoir_level_pct < RESERVOIR_LOW_PCT:
            self._raise_alarm(ALARM_RESERVOIR_LOW)
        if self.physics:
            self._physics(dt_s)

    def _physics(self, dt_s: float) -> None:
        """Placeholder plant: enough for standalone use; the pod model replaces it."""
        s = self.state
        speed = max(s.pump1_speed_pct, s.pump2_speed_pct) / 100.0
        s.flow_lpm = s.flow_at_full_speed_lpm * speed
        s.return_pressure_kpa = s.static_pressure_kpa
        s.supply_pressure_kpa = s.static_pressure_kpa + s.dp_at_full_speed_kpa * speed * speed
        valve_step = s.valve_ramp_pct_per_s * dt_s
        s.facility_valve_position_pct += max(
            -valve_step,
            min(valve_step, s.facility_valve_setpoint_pct - s.facility_valve_position_pct),
        )
        # The heat exchanger's approach grows as the facility valve closes.
        approach_k = s.approach_k * 100.0 / max(5.0, s.facility_valve_position_pct)
        target_supply_c = s.facility_supply_temp_c + approach_k
        alpha = min(1.0, dt_s / SUPPLY_TAU_S)
        s.supply_temp_c += (target_supply_c - s.supply_temp_c) * alpha
        mass_flow_kg_s = s.flow_lpm / 60.0 * COOLANT_DENSITY_KG_PER_L
        # Q = ṁ·c_p·ΔT; with no flow the racks' heat still shows, capped at 60 K.
        rise_k = s.heat_load_w / (max(mass_flow_kg_s, 1e-3) * COOLANT_CP_J_PER_KG_K)
        s.return_temp_c = s.supply_temp_c + min(rise_k, 60.0)
        s.facility_return_temp_c = s.facility_supply_temp_c + 0.8 * (
            s.return_temp_c - s.supply_temp_c
        )
        # A wet drip tray means coolant on the floor: the reservoir drains.
        s.reservoir_level_pct = max(
            0.0, s.reservoir_level_pct - 0.05 * bin(s.leak_zones).count("1") * dt_s
        )

    # -- Modbus TCP --------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # always, inside a start_server callback
            self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, protocol, length, unit = struct.unpack(">HHHB", header)
                if protocol != 0 or not 2 <= length <= 254:
                    log.info("sim_cdu_bad_mbap", protocol=protocol, length=length)
                    return
                pdu = await reader.readexactly(length - 1)
                if self.silent:  # a dead controller: the request goes nowhere
                    continue
                if self.write_latency_s > 0 and pdu[:1] in (b"\x06", b"\x10"):
                    await asyncio.sleep(self.write_latency_s)
                reply = self.handle_pdu(unit, pdu)
                if reply is None:
                    continue
                writer.write(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _rtu_readable(self) -> None:
        if self._pty is None:
            return
        master = self._pty[0]
        try:
            chunk = os.read(master, 512)
        except BlockingIOError:
            return
        except OSError:  # EIO when the client side hangs up: nothing to read
            return
        self._rtu_buffer += chunk
        while True:
            length = _rtu_request_length(self._rtu_buffer)
            if length is None or len(self._rtu_buffer) < length:
                return
            frame = bytes(self._rtu_buffer[:length]) if length else b""
            if not frame or len(frame) < 4 or crc16_modbus(frame[:-2]) != int.from_bytes(
                frame[-2:], "little"
            ):
                # A real slave waits for 3.5 character times of silence; on a pty
                # there is no such timing, so drop what is buffered and resync.
                log.info("sim_cdu_rtu_bad_frame", data=self._rtu_buffer.hex())
                self._rtu_buffer.clear()
                return
            del self._rtu_buffer[:length]
            unit = frame[0]
            if self.silent or unit != self.unit:  # other units on the bus answer themselves
                continue
            reply = self.handle_pdu(unit, frame[1:-2])
            if reply is None:
                continue
            body = bytes((unit,)) + reply
            with contextlib.suppress(OSError):
                os.write(master, body + crc16_modbus(body).to_bytes(2, "little"))

    def handle_pdu(self, unit: int, pdu: bytes) -> bytes | None:
        """Answer one request PDU (function code + data); None = no answer."""
        function = pdu[0]
        data = pdu[1:]
        if unit not in (self.unit, 0xFF):
            self.requests.append(RequestRecord(unit, function, -1, 0))
            return _exception(function, EXC_GATEWAY_TARGET_FAILED)
        if function in (0x03, 0x04):
            if len(data) != 4:
                return _exception(function, EXC_ILLEGAL_VALUE)
            address, count = struct.unpack(">HH", data)
            self.requests.append(RequestRecord(unit, function, address, count))
            if not 1 <= count <= MAX_READ_COUNT:
                return _exception(function, EXC_ILLEGAL_VALUE)
            space = INPUT_ADDRESSES if function == 0x04 else HOLDING_ADDRESSES
            if address not in space or address + count - 1 not in space:
                return _exception(function, EXC_ILLEGAL_ADDRESS)
            image = self.input_registers() if function == 0x04 else self.holding_registers()
            words = image[address - space.start : address - space.start + count]
            return bytes((function, 2 * count)) + struct.pack(f">{count}H", *words)
        if function == 0x06:
            if len(data) != 4:
                return _exception(function, EXC_ILLEGAL_VALUE)
            address, value = struct.unpack(">HH", data)
            self.requests.append(RequestRecord(unit, function, address, 1, (value,)))
            code = self._check_write(address, value)
            if code is not None:
                return _exception(function, code)
            self._apply_write(address, value)
            return pdu
        if function == 0x10:
            if len(data) < 5:
                return _exception(function, EXC_ILLEGAL_VALUE)
            address, count, byte_count = struct.unpack(">HHB", data[:5])
            well_formed = byte_count == 2 * count and len(data) == 5 + byte_count
            if not 1 <= count <= MAX_WRITE_COUNT or not well_formed:
                self.requests.append(RequestRecord(unit, function, address, count))
                return _exception(function, EXC_ILLEGAL_VALUE)
            values = struct.unpack(f">{count}H", data[5:])
            self.requests.append(RequestRecord(unit, function, address, count, values))
            # All or nothing: check every register before changing any.
            for offset, value in enumerate(values):
                code = self._check_write(address + offset, value)
                if code is not None:
                    return _exception(function, code)
            for offset, value in enumerate(values):
                self._apply_write(address + offset, value)
            return bytes((function,)) + struct.pack(">HH", address, count)
        self.requests.append(RequestRecord(unit, function, -1, 0))
        return _exception(function, EXC_ILLEGAL_FUNCTION)


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _rtu_request_length(buffer: bytes | bytearray) -> int | None:
    """Length of the RTU request at the start of buffer, or None until it can be told."""
    if len(buffer) < 2:
        return None
    if buffer[1] in (0x03, 0x04, 0x06):
        return 8
    if buffer[1] == 0x10:
        return 9 + buffer[6] if len(buffer) >= 7 else None
    return 0  # a function this CDU does not parse: resynchronise


async def serve_cdu(host: str = "127.0.0.1", port: int = 502) -> SimulatedCdu:
    """A simulated CDU with default state and placeholder physics, already listening."""
    sim = SimulatedCdu()
    await sim.start(host, port)
    return sim
