"""Faults that can be injected into a running simulated pod: parsing and checking.

A fault arrives as a name and words (from the CLI, over the control socket) and
leaves as a frozen value naming exactly what it does, or a FaultError whose
message says what is wrong. Applying a fault is the orchestrator's job.

Each fault has a key: injecting a fault with the key of an active one replaces
it, and ``--clear <name> <args>`` removes the one with that key (``--clear
<name>`` every fault of that kind, ``--clear`` all of them).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from sim_devices.physics.constants import FANS_PER_SERVER
from sim_devices.physics.types import ServerId
from sim_devices.profiles import CDU_ID, PHASES, PodLayout

FACILITY_TEMP_RANGE_C = (1.0, 70.0)  # liquid facility water; above ASHRAE W+ but not steam
_RACK_RE = re.compile(r"^r?(\d+)$")


class FaultError(ValueError):
    """A fault request that cannot be carried out (the message says why)."""


class FaultKind(enum.StrEnum):
    LEAK = "leak"
    PUMP_SEIZE = "pump-seize"
    SENSOR_STUCK = "sensor-stuck"
    SENSOR_RANGE = "sensor-range"
    SILENT = "silent"
    GARBAGE = "garbage"
    READING_CORRUPT = "reading-corrupt"
    BREAKER_TRIP = "breaker-trip"
    FACILITY_HOT = "facility-hot"
    WORKLOAD = "workload"
    FAN_FAIL = "fan-fail"
    LOCAL_MODE = "local-mode"
    HEARTBEAT_LOST = "heartbeat-lost"


USAGE: dict[FaultKind, str] = {
    FaultKind.LEAK: "leak <rack|server>          e.g. leak r2, leak r1s03",
    FaultKind.PUMP_SEIZE: "pump-seize <1|2>",
    FaultKind.SENSOR_STUCK: "sensor-stuck <device> <point> <value>",
    FaultKind.SENSOR_RANGE: "sensor-range <device> <point>",
    FaultKind.SILENT: "silent <device>",
    FaultKind.GARBAGE: "garbage <bmc> <rate 0-1>",
    FaultKind.READING_CORRUPT: "reading-corrupt <bmc> <rate 0-1>",
    FaultKind.BREAKER_TRIP: "breaker-trip <pdu> <phase 1-3>",
    FaultKind.FACILITY_HOT: "facility-hot <temp_c>",
    FaultKind.WORKLOAD: "workload <rack|all> <pct 0-100>",
    FaultKind.FAN_FAIL: f"fan-fail <server> <fan 1-{FANS_PER_SERVER}>",
    FaultKind.LOCAL_MODE: "local-mode                  the CDU's panel switched to local",
    FaultKind.HEARTBEAT_LOST: "heartbeat-lost              the CDU stops seeing heartbeats",
}


ARITY: dict[FaultKind, int] = {
    FaultKind.LEAK: 1,
    FaultKind.PUMP_SEIZE: 1,
    FaultKind.SENSOR_STUCK: 3,
    FaultKind.SENSOR_RANGE: 2,
    FaultKind.SILENT: 1,
    FaultKind.GARBAGE: 2,
    FaultKind.READING_CORRUPT: 2,
    FaultKind.BREAKER_TRIP: 2,
    FaultKind.FACILITY_HOT: 1,
    FaultKind.WORKLOAD: 2,
    FaultKind.FAN_FAIL: 2,
    FaultKind.LOCAL_MODE: 0,
    FaultKind.HEARTBEAT_LOST: 0,
}


class DeviceKind(enum.StrEnum):
    CDU = "cdu"
    PDU = "pdu"
    BMC = "bmc"


@dataclass(frozen=True, slots=True)
class DeviceCatalog:
    """The devices of a pod and the sensor points each kind lets a fault touch."""

    layout: PodLayout
    cdu_points: frozenset[str]
    pdu_points: frozenset[str]
    bmc_points: frozenset[str]

    def kind_of(self, device: str) -> DeviceKind:
        if device == CDU_ID:
            return DeviceKind.CDU
        if device in self.layout.pdu_ids():
            return DeviceKind.PDU
        try:
            server = ServerId.parse(device)
        except ValueError:
            server = None
        if server is not None and self.layout.has_server(server):
            return DeviceKind.BMC
        raise FaultError(
            f"unknown device {device!r}: this pod has {CDU_ID}, PDUs "
            f"{self.layout.pdu_ids()[0]}..{self.layout.pdu_ids()[-1]} and BMCs "
            f"r1s01..r{self.layout.racks}s{self.layout.servers_per_rack:02d}"
        )

    def points(self, kind: DeviceKind) -> frozenset[str]:
        return {
            DeviceKind.CDU: self.cdu_points,
            DeviceKind.PDU: self.pdu_points,
            DeviceKind.BMC: self.bmc_points,
        }[kind]


@dataclass(frozen=True, slots=True)
class Leak:
    kind: ClassVar[FaultKind] = FaultKind.LEAK
    rack: int
    server: ServerId | None = None

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, self.server.name if self.server else f"r{self.rack}")


@dataclass(frozen=True, slots=True)
class PumpSeize:
    kind: ClassVar[FaultKind] = FaultKind.PUMP_SEIZE
    pump: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, str(self.pump))


@dataclass(frozen=True, slots=True)
class SensorStuck:
    kind: ClassVar[FaultKind] = FaultKind.SENSOR_STUCK
    device: str
    device_kind: DeviceKind
    point: str
    value: float

    @property
    def key(self) -> tuple[str, ...]:
        return ("sensor", self.device, self.point)  # stuck and range share a sensor


@dataclass(frozen=True, slots=True)
class SensorRange:
    kind: ClassVar[FaultKind] = FaultKind.SENSOR_RANGE
    device: str
    device_kind: DeviceKind
    point: str

    @property
    def key(self) -> tuple[str, ...]:
        return ("sensor", self.device, self.point)


@dataclass(frozen=True, slots=True)
class Silent:
    kind: ClassVar[FaultKind] = FaultKind.SILENT
    device: str
    device_kind: DeviceKind

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, self.device)


@dataclass(frozen=True, slots=True)
class Garbage:
    kind: ClassVar[FaultKind] = FaultKind.GARBAGE
    server: ServerId
    rate: float  # fraction of replies garbled

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, self.server.name)


@dataclass(frozen=True, slots=True)
class ReadingCorrupt:
    """One hex digit of the reading byte changed in this fraction of the BMC's
    Get Sensor Reading answers: a well-formed frame no framing check can see."""

    kind: ClassVar[FaultKind] = FaultKind.READING_CORRUPT
    server: ServerId
    rate: float

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, self.server.name)


@dataclass(frozen=True, slots=True)
class BreakerTrip:
    kind: ClassVar[FaultKind] = FaultKind.BREAKER_TRIP
    pdu: str
    phase: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, self.pdu, str(self.phase))


@dataclass(frozen=True, slots=True)
class FacilityHot:
    kind: ClassVar[FaultKind] = FaultKind.FACILITY_HOT
    temp_c: float

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind,)


@dataclass(frozen=True, slots=True)
class Workload:
    kind: ClassVar[FaultKind] = FaultKind.WORKLOAD
    rack: int | None  # None: every rack
    pct: float

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, "all" if self.rack is None else f"r{self.rack}")


@dataclass(frozen=True, slots=True)
class FanFail:
    """A chassis fan stops: its tach reads 0 RPM and it moves no air."""

    kind: ClassVar[FaultKind] = FaultKind.FAN_FAIL
    server: ServerId
    fan: int  # 1-based, as the BMC's sensors Fan1..Fan4

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, self.server.name, str(self.fan))


@dataclass(frozen=True, slots=True)
class LocalMode:
    """The CDU's front panel is switched to local: it runs its own constant-Δp
    mode and refuses remote writes to 100-104 and 108 (DEVICES.md, status b7)."""

    kind: ClassVar[FaultKind] = FaultKind.LOCAL_MODE

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind,)


@dataclass(frozen=True, slots=True)
class HeartbeatLost:
    """Heartbeat writes to register 106 are acknowledged but never reach the CDU's
    controller (a gateway that answers for it): its watchdog expires after 105 s
    and it drives its failsafe speed (status b6) until a heartbeat gets through."""

    kind: ClassVar[FaultKind] = FaultKind.HEARTBEAT_LOST

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind,)


Fault = (
    Leak
    | PumpSeize
    | SensorStuck
    | SensorRange
    | Silent
    | Garbage
    | ReadingCorrupt
    | BreakerTrip
    | FacilityHot
    | Workload
    | FanFail
    | LocalMode
    | HeartbeatLost
)


def describe(fault: Fault) -> str:
    """The fault as the words that inject it."""
    words: list[str] = [fault.kind]
    match fault:
        case Leak(rack=rack, server=server):
            words.append(server.name if server else f"r{rack}")
        case PumpSeize(pump=pump):
            words.append(str(pump))
        case SensorStuck(device=device, point=point, value=value):
            words += [device, point, f"{value:g}"]
        case SensorRange(device=device, point=point):
            words += [device, point]
        case Silent(device=device):
            words.append(device)
        case Garbage(server=server, rate=rate) | ReadingCorrupt(server=server, rate=rate):
            words += [server.name, f"{rate:g}"]
        case BreakerTrip(pdu=pdu, phase=phase):
            words += [pdu, str(phase)]
        case FacilityHot(temp_c=temp_c):
            words.append(f"{temp_c:g}")
        case Workload(rack=rack, pct=pct):
            words += ["all" if rack is None else f"r{rack}", f"{pct:g}"]
        case FanFail(server=server, fan=fan):
            words += [server.name, str(fan)]
    return " ".join(words)


def parse_kind(name: str) -> FaultKind:
    try:
        return FaultKind(name)
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise FaultError(f"unknown fault {name!r}; known faults: {known}") from None


def parse_fault(name: str, args: Sequence[str], catalog: DeviceCatalog) -> Fault:
    """A fault from its name and words, checked against the pod's devices."""
    kind = parse_kind(name)
    expected = ARITY[kind]
    if len(args) != expected:
        raise FaultError(f"{kind} takes {expected} argument(s): usage: {USAGE[kind]}")
    layout = catalog.layout
    match kind:
        case FaultKind.LEAK:
            return Leak(*_rack_or_server(args[0], layout))
        case FaultKind.PUMP_SEIZE:
            return PumpSeize(_int_in(args[0], "pump", 1, 2))
        case FaultKind.SENSOR_STUCK:
            device_kind = _sensor_device(args[0], args[1], catalog)
            value = _number(args[2], "value")
            return SensorStuck(args[0], device_kind, args[1], value)
        case FaultKind.SENSOR_RANGE:
            return SensorRange(args[0], _sensor_device(args[0], args[1], catalog), args[1])
        case FaultKind.SILENT:
            return Silent(args[0], catalog.kind_of(args[0]))
        case FaultKind.GARBAGE:
            server = _bmc(args[0], catalog, kind)
            rate = _number(args[1], "rate")
            if not 0.0 < rate <= 1.0:
                raise FaultError(f"garbage rate is a fraction of replies, 0 < rate <= 1: {rate}")
            return Garbage(server, rate)
        case FaultKind.READING_CORRUPT:
            server = _bmc(args[0], catalog, kind)
            rate = _number(args[1], "rate")
            if not 0.0 < rate <= 1.0:
                raise FaultError(f"reading-corrupt rate is a fraction, 0 < rate <= 1: {rate}")
            return ReadingCorrupt(server, rate)
        case FaultKind.BREAKER_TRIP:
            if catalog.kind_of(args[0]) is not DeviceKind.PDU:
                raise FaultError(f"breaker-trip needs a PDU, {args[0]!r} is not one")
            return BreakerTrip(args[0], _int_in(args[1], "phase", 1, PHASES))
        case FaultKind.FACILITY_HOT:
            temp_c = _number(args[0], "facility supply temperature")
            low, high = FACILITY_TEMP_RANGE_C
            if not low <= temp_c <= high:
                raise FaultError(
                    f"facility supply temperature must be {low:g}-{high:g} C: {temp_c}"
                )
            return FacilityHot(temp_c)
        case FaultKind.WORKLOAD:
            pct = _number(args[1], "workload")
            if not 0.0 <= pct <= 100.0:
                raise FaultError(f"workload must be 0-100 %: {pct}")
            return Workload(None if args[0] == "all" else _rack(args[0], layout), pct)
        case FaultKind.FAN_FAIL:
            return FanFail(
                _bmc(args[0], catalog, kind), _int_in(args[1], "fan", 1, FANS_PER_SERVER)
            )
        case FaultKind.LOCAL_MODE:
            return LocalMode()
        case FaultKind.HEARTBEAT_LOST:
            return HeartbeatLost()
    raise AssertionError(kind)  # pragma: no cover - match is exhaustive


def clear_key(name: str, args: Sequence[str], catalog: DeviceCatalog) -> tuple[str, ...]:
    """The key prefix that ``--clear <name> [args]`` removes."""
    kind = parse_kind(name)
    if not args:
        return ("sensor",) if kind in (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_RANGE) else (kind,)
    if kind in (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_RANGE):
        catalog.kind_of(args[0])
        return ("sensor", *args[:2])
    if kind in (FaultKind.FACILITY_HOT, FaultKind.LOCAL_MODE, FaultKind.HEARTBEAT_LOST):
        return (kind,)
    if kind is FaultKind.WORKLOAD and args[0] == "all":
        return (kind, "all")
    if kind in (FaultKind.LEAK, FaultKind.WORKLOAD):
        rack, server = _rack_or_server(args[0], catalog.layout)
        if kind is FaultKind.WORKLOAD and server is not None:
            raise FaultError(f"workload is per rack or 'all', not per server: {args[0]!r}")
        return (kind, server.name if server else f"r{rack}")
    if kind is FaultKind.PUMP_SEIZE:
        return (kind, str(_int_in(args[0], "pump", 1, 2)))
    if kind is FaultKind.FAN_FAIL:
        name = _bmc(args[0], catalog, kind).name
        if len(args) == 1:
            return (kind, name)
        return (kind, name, str(_int_in(args[1], "fan", 1, FANS_PER_SERVER)))
    catalog.kind_of(args[0])
    return (kind, *args[: 2 if kind is FaultKind.BREAKER_TRIP else 1])


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise FaultError(f"{what} must be a finite number, got {text!r}")
    return value


def _int_in(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FaultError(f"{what} must be an integer {low}-{high}, got {text!r}") from None
    if not low <= value <= high:
        raise FaultError(f"{what} must be {low}-{high}, got {value}")
    return value


def _rack(text: str, layout: PodLayout) -> int:
    match = _RACK_RE.match(text)
    if match is None:
        raise FaultError(f"not a rack (want r<n> or <n>): {text!r}")
    rack = int(match.group(1))
    if not 1 <= rack <= layout.racks:
        raise FaultError(f"unknown rack {text!r}: this pod has racks r1..r{layout.racks}")
    return rack


def _rack_or_server(text: str, layout: PodLayout) -> tuple[int, ServerId | None]:
    if _RACK_RE.match(text):
        return _rack(text, layout), None
    try:
        server = ServerId.parse(text)
    except ValueError:
        raise FaultError(f"not a rack or server (want r2 or r1s03): {text!r}") from None
    if not layout.has_server(server):
        raise FaultError(
            f"unknown server {text!r}: this pod has r1s01..r{layout.racks}s"
            f"{layout.servers_per_rack:02d}"
        )
    return server.rack, server


def _bmc(device: str, catalog: DeviceCatalog, kind: FaultKind) -> ServerId:
    """A server of this pod, named by its BMC's device id."""
    if catalog.kind_of(device) is not DeviceKind.BMC:
        serial = kind in (FaultKind.GARBAGE, FaultKind.READING_CORRUPT)
        what = "a BMC (serial line)" if serial else "a server's BMC"
        raise FaultError(f"{kind} needs {what}, {device!r} is not one")
    return ServerId.parse(device)


def _sensor_device(device: str, point: str, catalog: DeviceCatalog) -> DeviceKind:
    kind = catalog.kind_of(device)
    points = catalog.points(kind)
    if point not in points:
        known = ", ".join(sorted(points)) or "none"
        raise FaultError(f"{device} ({kind}) has no sensor point {point!r}; points: {known}")
    return kind
