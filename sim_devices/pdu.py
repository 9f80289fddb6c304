"""Simulated APC-style rack PDUs (rPDU2 subset of DEVICES.md §2) on the lean SNMP engine.

All PDUs run in one event loop, one UDP port each (`serve_pdus`). What the pod
orchestrator drives is `SimulatedPdu.model`, a `PduModel`:

- `set_outlet_load_w(n, w)`: the load behind outlet n (1-based) in W, fed from
  the server model. An outlet that is off draws nothing whatever its load.
- `switch(n, on)`: turn an outlet on/off as a person at the rack would.
- `trip_phase(p)`: open phase p's breaker (fault injection): its outlets go
  off and stay off until switched on again; the phase reads overload until then.
- `outlet_is_on(n)`, `phase_current_a(p)`, `phase_power_w(p)`, `power_w`,
  `energy_kwh`, `phase_load_state(p)`, `device_load_state`: what the PDU meters.
- `unsupported`: names of metered columns that read −1 ("not supported"):
  device_power, device_energy, phase_current, phase_voltage, phase_power,
  outlet_current, outlet_power, outlet_energy.
- `stuck`: a sensor fault per daemon point name (`power_w`, `energy_kwh`,
  `phase<p>_current_a`, `phase<p>_voltage_v`, `phase<p>_power_w`; also
  `outlet_<NN>_current_a`, `outlet_<NN>_power_w`): a value in
  the point's unit that the meter reports instead of the truth, or None for a
  broken transmitter (the top of the INTEGER range).
- `SimulatedPdu.silent = True`: the agent stops answering (device silent).

Electrics: outlet n is on phase ((n-1) % 3) + 1 at 230 V line-to-neutral; a
phase's current is the sum of its outlets' currents; at or above the breaker
rating (32 A default) the phase trips. Energy integrates power over loop time.
SNMP control follows the MIB: immediateOn/Off act at once, immediateReboot is
off then on after `reboot_delay_s` (5 s), delayed variants act after
`outlet_delay_s`, cancelPending cancels. Timers use loop.call_later.

Standalone: `python -m sim_devices.pdu --count 16 --outlets 48` prints one JSON
line of {name: port} when serving; a line "cpu" on stdin prints this process's
CPU seconds; end of stdin stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from drivers.snmp.ber import Oid
from drivers.snmp.protocol_pdu import ErrorStatus, Tag, Value
from drivers.snmp.usm import AuthProtocol, PrivProtocol
from drivers.snmp.v3 import UsmUser
from sim_devices.snmp_agent import AgentConfig, Mib, SnmpAgent

log = structlog.get_logger(__name__)

RPDU2: Oid = (1, 3, 6, 1, 4, 1, 318, 1, 1, 26)
SYSTEM: Oid = (1, 3, 6, 1, 2, 1, 1)
APC_SYS_OBJECT_ID: Oid = (1, 3, 6, 1, 4, 1, 318, 1, 3, 4, 6)

PHASES = 3
PHASE_VOLTAGE_V = 230.0
_NEAR_OVERLOAD_FRACTION = 0.8
_LOW_LOAD_FRACTION = 0.05
_ENERGY_STEP_S = 0.01  # integrate no finer than this; reads in one burst share a step


class LoadState(enum.IntEnum):
    LOW_LOAD = 1
    NORMAL = 2
    NEAR_OVERLOAD = 3
    OVERLOAD = 4


class OutletCommand(enum.IntEnum):
    IMMEDIATE_ON = 1
    IMMEDIATE_OFF = 2
    IMMEDIATE_REBOOT = 3
    DELAYED_ON = 5
    DELAYED_OFF = 6
    DELAYED_REBOOT = 7
    CANCEL_PENDING = 8


@dataclass(slots=True)
class Outlet:
    number: int
    name: str
    on: bool = True
    load_w: float = 0.0
    energy_wh: float = 0.0
    timer: asyncio.TimerHandle | None = None

    @property
    def power_w(self) -> float:
        return self.load_w if self.on else 0.0


class PduModel:
    """The electrical and switching state of one PDU (see the module docstring)."""

    def __init__(
        self,
        outlets: int,
        *,
        breaker_a: float = 32.0,
        voltage_v: float = PHASE_VOLTAGE_V,
        reboot_delay_s: float = 5.0,
        outlet_delay_s: float = 3.0,
        name: str = "pdu",
    ) -> None:
        if not 1 <= outlets <= 96:
            raise ValueError(f"outlet count {outlets} out of range 1..96")
        self.name = name
        self.breaker_a = breaker_a
        self.voltage_v = voltage_v
        self.reboot_delay_s = reboot_delay_s
        self.outlet_delay_s = outlet_delay_s
        self.outlets = [Outlet(n, f"Outlet {n}") for n in range(1, outlets + 1)]
        self.tripped: set[int] = set()
        self.unsupported: set[str] = set()
        self.stuck: dict[str, float | None] = {}
        # (monotonic time, outlet, on) of every switch, for latency benchmarks.
        self.switch_log: deque[tuple[float, int, bool]] = deque(maxlen=20_000)
        self._loop = asyncio.get_running_loop()
        self._last_s = self._loop.time()

    # ------------------------------------------------------------ orchestrator API

    def outlet(self, n: int) -> Outlet:
        if not 1 <= n <= len(self.outlets):
            raise ValueError(f"outlet {n} out of range 1..{len(self.outlets)}")
        return self.outlets[n - 1]

    @staticmethod
    def phase_of(n: int) -> int:
        return (n - 1) % PHASES + 1

    def set_outlet_load_w(self, n: int, load_w: float) -> None:
        if load_w < 0:
            raise ValueError(f"negative load {load_w} W")
        self._advance()
        self.outlet(n).load_w = load_w
        self._check_breakers()

    def switch(self, n: int, on: bool) -> None:
        outlet = self.outlet(n)
        self._cancel_timer(outlet)
        self._set_on(outlet, on)

    def trip_phase(self, phase: int) -> None:
        if not 1 <= phase <= PHASES:
            raise ValueError(f"phase {phase} out of range 1..{PHASES}")
        self._advance()
        self.tripped.add(phase)
        for outlet in self.outlets:
            if self.phase_of(outlet.number) == phase:
                self._cancel_timer(outlet)
                outlet.on = False
        log.warning("pdu_phase_tripped", pdu=self.name, phase=phase)

    def outlet_is_on(self, n: int) -> bool:
        return self.outlet(n).on

    def outlet_current_a(self, n: int) -> float:
        return self.outlet(n).power_w / self.voltage_v

    def phase_current_a(self, phase: int) -> float:
        return sum(o.power_w for o in self.outlets[phase - 1 :: PHASES]) / self.voltage_v

    def phase_power_w(self, phase: int) -> float:
        return sum(o.power_w for o in self.outlets[phase - 1 :: PHASES])

    @property
    def power_w(self) -> float:
        return sum(o.power_w for o in self.outlets)

    @property
    def energy_kwh(self) -> float:
        self._advance()
        return sum(o.energy_wh for o in self.outlets) / 1000.0

    def outlet_energy_kwh(self, n: int) -> float:
        self._advance()
        return self.outlet(n).energy_wh / 1000.0

    def phase_load_state(self, phase: int) -> LoadState:
        if phase in self.tripped:
            return LoadState.OVERLOAD
        current = self.phase_current_a(phase)
        if current >= self.breaker_a:
            return LoadState.OVERLOAD
        if current >= _NEAR_OVERLOAD_FRACTION * self.breaker_a:
            return LoadState.NEAR_OVERLOAD
        if current < _LOW_LOAD_FRACTION * self.breaker_a:
            return LoadState.LOW_LOAD
        return LoadState.NORMAL

    @property
    def device_load_state(self) -> LoadState:
        return max(self.phase_load_state(p) for p in range(1, PHASES + 1))

    def command_pending(self, n: int) -> bool:
        return self.outlet(n).timer is not None

    def close(self) -> None:
        for outlet in self.outlets:
            self._cancel_timer(outlet)

    # ------------------------------------------------------------ SNMP control

    def command(self, n: int, command: OutletCommand) -> None:
        outlet = self.outlet(n)
        if command is OutletCommand.CANCEL_PENDING:
            self._cancel_timer(outlet)
            return
        self._cancel_timer(outlet)
        if command is OutletCommand.IMMEDIATE_ON:
            self._set_on(outlet, True)
        elif command is OutletCommand.IMMEDIATE_OFF:
            self._set_on(outlet, False)
        elif command is OutletCommand.IMMEDIATE_REBOOT:
            self._set_on(outlet, False)
            self._later(outlet, self.reboot_delay_s, True)
        elif command is OutletCommand.DELAYED_ON:
            self._later(outlet, self.outlet_delay_s, True)
        elif command is OutletCommand.DELAYED_OFF:
            self._later(outlet, self.outlet_delay_s, False)
        elif command is OutletCommand.DELAYED_REBOOT:
            self._later(outlet, self.outlet_delay_s, False, then_on_after_s=self.reboot_delay_s)

    # ------------------------------------------------------------ internals

    def _later(
        self, outlet: Outlet, delay_s: float, on: bool, then_on_after_s: float | None = None
    ) -> None:
        def fire() -> None:
            outlet.timer = None
            self._set_on(outlet, on)
            if then_on_after_s is not None:
                self._later(outlet, then_on_after_s, True)

        outlet.timer = self._loop.call_later(delay_s, fire)

    @staticmethod
    def _cancel_timer(outlet: Outlet) -> None:
        if outlet.timer is not None:
            outlet.timer.cancel()
            outlet.timer = None

    def _set_on(self, outlet: Outlet, on: bool) -> None:
        self._advance()
        if outlet.on != on:
            self.switch_log.append((time.monotonic(), outlet.number, on))
        outlet.on = on
        if on:
            # Switching an outlet back on closes its phase's breaker again.
            self.tripped.discard(self.phase_of(outlet.number))
            self._check_breakers()

    def _check_breakers(self) -> None:
        for phase in range(1, PHASES + 1):
            if self.phase_current_a(phase) >= self.breaker_a:
                self.trip_phase(phase)

    def _advance(self) -> None:
        now = self._loop.time()
        dt_s = now - self._last_s
        if dt_s < 0:  # the loop clock was replaced (a fake clock in tests): restart from here
            self._last_s = now
            return
        if dt_s < _ENERGY_STEP_S:
            return
        self._last_s = now
        for outlet in self.outlets:
            if outlet.on:
                outlet.energy_wh += outlet.load_w * dt_s / 3600.0


# ---------------------------------------------------------------- MIB


def _int(value: int) -> tuple[Tag, Value]:
    return Tag.INTEGER, value


def build_mib(model: PduModel, sys_name: str) -> Mib:
    """MIB-2 system group plus the rPDU2 subset, reading live from the model."""
    mib = Mib()
    loop = asyncio.get_running_loop()
    started = loop.time()
    strings = {4: b"ops@megapod.example", 5: sys_name.encode(), 6: b"megapod rack"}
    mib.add_constant((*SYSTEM, 1, 0), Tag.OCTET_STRING, b"APC Rack PDU (megapod simulator)")
    mib.add_constant((*SYSTEM, 2, 0), Tag.OID, APC_SYS_OBJECT_ID)
    mib.add((*SYSTEM, 3, 0), lambda: (Tag.TIMETICKS, max(0, int((loop.time() - started) * 100))))
    for arc in list(strings):

        def check_string(tag: Tag, value: Value) -> ErrorStatus:
            if tag is not Tag.OCTET_STRING:
                return ErrorStatus.WRONG_TYPE
            if not isinstance(value, bytes) or len(value) > 255:
                return ErrorStatus.WRONG_LENGTH
            return ErrorStatus.NO_ERROR

        def apply_string(value: Value, arc: int = arc) -> None:
            assert isinstance(value, bytes)  # noqa: S101 - checked above
            strings[arc] = value

        mib.add(
            (*SYSTEM, arc, 0),
            lambda arc=arc: (Tag.OCTET_STRING, strings[arc]),  # type: ignore[misc]
            check=check_string,
            apply=apply_string,
        )
    mib.add_constant((*SYSTEM, 7, 0), Tag.INTEGER, 72)

    def metered(
        column: str, value: Callable[[], float], point: str = "", per_raw: float = 1.0
    ) -> Callable[[], tuple[Tag, Value]]:
        """A meter's column; `point` and `per_raw` (engineering units per raw
        count) say how a stuck-sensor fault on it reads."""

        def read() -> tuple[Tag, Value]:
            if column in model.unsupported:
                return _int(-1)
            if point in model.stuck:
                stuck = model.stuck[point]
                return _int(INT32_MAX if stuck is None else round(stuck / per_raw))
            return _int(round(value()))

        return read

    dev = (*RPDU2, 4, 3, 1)
    mib.add((*dev, 4, 1), lambda: _int(model.device_load_state))
    mib.add((*dev, 5, 1), metered("device_power", lambda: model.power_w / 10.0, "power_w", 10.0))
    mib.add(
        (*dev, 9, 1), metered("device_energy", lambda: model.energy_kwh * 10.0, "energy_kwh", 0.1)
    )
    for p in range(1, PHASES + 1):
        _add_phase(mib, model, p, metered)
    for outlet in model.outlets:
        _add_outlet(mib, model, outlet, metered)
    return mib


Metered = Callable[..., Callable[[], tuple[Tag, Value]]]
INT32_MAX = 2**31 - 1  # what a broken meter reads (stuck at the top of the range)
# The points a sensor fault can touch (the daemon's names for them).
STICKABLE_POINTS: frozenset[str] = frozenset(
    {"power_w", "energy_kwh"}
    | {f"phase{p}_{q}" for p in range(1, PHASES + 1) for q in ("current_a", "voltage_v", "power_w")}
)


def _add_phase(mib: Mib, model: PduModel, p: int, metered: Metered) -> None:
    phase = (*RPDU2, 6, 3, 1)
    mib.add((*phase, 4, p), lambda: _int(model.phase_load_state(p)))
    mib.add(
        (*phase, 5, p),
        metered("phase_current", lambda: model.phase_current_a(p) * 10, f"phase{p}_current_a", 0.1),
    )
    mib.add(
        (*phase, 6, p), metered("phase_voltage", lambda: model.voltage_v, f"phase{p}_voltage_v")
    )
    mib.add(
        (*phase, 7, p),
        metered("phase_power", lambda: model.phase_power_w(p) / 10, f"phase{p}_power_w", 10.0),
    )


def _add_outlet(mib: Mib, model: PduModel, outlet: Outlet, metered: Metered) -> None:
    n = outlet.number
    status = (*RPDU2, 9, 2, 3, 1)
    meter = (*RPDU2, 9, 4, 3, 1)
    mib.add((*status, 3, n), lambda: (Tag.OCTET_STRING, outlet.name.encode()))
    mib.add((*status, 5, n), lambda: _int(2 if outlet.on else 1))
    mib.add((*status, 6, n), lambda: _int(1 if outlet.timer else 2))

    def apply(value: Value) -> None:
        model.command(n, OutletCommand(value if isinstance(value, int) else 0))

    # Reading the control column shows the last immediate state, as APC units do.
    mib.add(
        (*RPDU2, 9, 2, 4, 1, 5, n),
        lambda: _int(1 if outlet.on else 2),
        check=_check_command,
        apply=apply,
    )
    name = f"outlet_{n:02d}"
    amps = lambda: model.outlet_current_a(n) * 10  # noqa: E731 - tenths of A
    mib.add((*meter, 6, n), metered("outlet_current", amps, f"{name}_current_a", 0.1))
    mib.add((*meter, 7, n), metered("outlet_power", lambda: outlet.power_w, f"{name}_power_w"))
    mib.add((*meter, 11, n), metered("outlet_energy", lambda: model.outlet_energy_kwh(n) * 10))


def _check_command(tag: Tag, value: Value) -> ErrorStatus:
    if tag is not Tag.INTEGER:
        return ErrorStatus.WRONG_TYPE
    if value not in {int(c) for c in OutletCommand}:
        return ErrorStatus.WRONG_VALUE
    return ErrorStatus.NO_ERROR


# ---------------------------------------------------------------- farm


@dataclass(frozen=True, slots=True)
class PduSpec:
    """One simulated PDU. port 0 picks a free port."""

    name: str
    port: int = 0
    host: str = "127.0.0.1"
    outlets: int = 48
    breaker_a: float = 32.0
    read_community: str = "public"
    write_community: str = "private"
    v3_user: str = "megapod"
    v3_auth_passphrase: str = "megapod-auth-pass"  # noqa: S105 - simulator default
    v3_priv_passphrase: str = "megapod-priv-pass"  # noqa: S105 - simulator default
    v3_auth_protocol: AuthProtocol = AuthProtocol.HMAC_SHA_96
    reboot_delay_s: float = 5.0
    max_message_size: int = 8192


@dataclass(slots=True)
class SimulatedPdu:
    spec: PduSpec
    model: PduModel
    agent: SnmpAgent
    port: int

    @property
    def silent(self) -> bool:
        return self.agent.silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self.agent.silent = value


@dataclass(slots=True)
class PduFarm:
    """Every simulated PDU of a pod; close() stops them all."""

    pdus: dict[str, SimulatedPdu] = field(default_factory=dict)

    def __getitem__(self, name: str) -> SimulatedPdu:
        return self.pdus[name]

    def ports(self) -> dict[str, int]:
        return {name: pdu.port for name, pdu in self.pdus.items()}

    async def close(self) -> None:
        for pdu in self.pdus.values():
            pdu.agent.close()
            pdu.model.close()
        self.pdus.clear()

    async def __aenter__(self) -> PduFarm:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_pdu(spec: PduSpec) -> SimulatedPdu:
    model = PduModel(
        spec.outlets, breaker_a=spec.breaker_a, reboot_delay_s=spec.reboot_delay_s, name=spec.name
    )
    user = UsmUser(
        spec.v3_user,
        spec.v3_auth_protocol,
        spec.v3_auth_passphrase,
        PrivProtocol.AES128,
        spec.v3_priv_passphrase,
    )
    config = AgentConfig(
        read_community=spec.read_community,
        write_community=spec.write_community,
        users=(user,),
        engine_id=b"\x80\x00\x01\x3e\x04" + f"megapod-{spec.name}"[:27].encode(),
        max_message_size=spec.max_message_size,
    )
    agent = SnmpAgent(build_mib(model, spec.name), config)
    try:
        port = await agent.start(spec.host, spec.port)
    except OSError:
        model.close()
        raise
    log.info("pdu_sim_listening", pdu=spec.name, host=spec.host, port=port)
    return SimulatedPdu(spec, model, agent, port)


async def serve_pdus(specs: Sequence[PduSpec]) -> PduFarm:
    """Start every PDU in this event loop; all or nothing."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate PDU names in {names}")
    farm = PduFarm()
    try:
        for spec in specs:
            farm.pdus[spec.name] = await start_pdu(spec)
    except BaseException:
        await farm.close()
        raise
    return farm


# ---------------------------------------------------------------- standalone


async def _main(args: argparse.Namespace) -> None:
    specs = [
        PduSpec(
            f"pdu{i + 1:02d}",
            port=args.base_port + i if args.base_port else 0,
            host=args.host,
            outlets=args.outlets,
        )
        for i in range(args.count)
    ]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with await serve_pdus(specs) as farm:
        for pdu in farm.pdus.values():
            for n in range(1, args.outlets + 1):
                pdu.model.set_outlet_load_w(n, args.load_w)
        print(json.dumps(farm.ports()), flush=True)
        while line := await reader.readline():
            if line.strip() == b"cpu":
                print(json.dumps({"cpu_s": time.process_time()}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated rPDU2 SNMP agents")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--outlets", type=int, default=48)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=0, help="0: free ports")
    parser.add_argument("--load-w", type=float, default=150.0, help="initial load per outlet")
    args = parser.parse_args(argv)
    # stdout carries the JSON protocol; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
