"""Which devices and points a rule or a loop is about, and how many readings
become one value: shared by the safety engine and the control loops.

A device selector names devices by id (`"r1s03"`, `["r1s01", "r1s02"]`) or
by kind and rack (`"bmc"`, `"bmc:*"`, `"bmc:rack=2"`, `"pdu:rack=1"`). A point
pattern is a point name or a glob (`"gpu*_temp_c"`). The pod's devices, their
racks and how servers are cabled to PDU outlets come from the config, once.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drivers.base import DeviceKind, PointValue

_SELECTOR = re.compile(r"^(cdu|pdu|bmc)(?::(\*|rack=(\d{1,2})))?$")

AGGREGATES = ("any", "all", "count", "max", "min", "mean")


class SelectorError(ValueError):
    """A selector or pattern that cannot mean anything; the message says why."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    kind: DeviceKind
    rack: int | None = None
    pdu: str | None = None  # a server's feed
    outlet: int | None = None
    priority: int = 0  # a server's: higher keeps power longer


def phase_of_outlet(outlet: int) -> int:
    """The phase an rPDU2 outlet is on: outlets rotate over the three phases."""
    return (outlet - 1) % 3 + 1


@dataclass(frozen=True, slots=True)
class Selector:
    kind: DeviceKind | None = None
    rack: int | None = None
    ids: tuple[str, ...] = ()

    def describe(self) -> str:
        """`the BMCs in rack 2`, `the PDUs`, `r1s01, r1s02`."""
        if self.ids:
            return ", ".join(self.ids)
        what = f"the {self.kind.value.upper()}s" if self.kind else "every device"
        return what + (f" in rack {self.rack}" if self.rack is not None else "")


def parse_selector(spec: str | Sequence[str]) -> Selector:
    """`"bmc:rack=2"`, `"pdu"`, `"cdu:*"`, a device id, or a list of device ids."""
    if isinstance(spec, str):
        match = _SELECTOR.match(spec)
        if match is None:
            return Selector(ids=(spec,))
        kind = DeviceKind(match.group(1))
        rack = int(match.group(3)) if match.group(3) else None
        return Selector(kind, rack)
    if not spec:
        raise SelectorError("an empty list of devices selects nothing")
    return Selector(ids=tuple(spec))


def check_pattern(pattern: str) -> str:
    """A point name or glob: lower-case letters, digits, `_`, and `*`/`?`."""
    if not re.fullmatch(r"[a-z0-9_*?]{1,64}", pattern):
        raise SelectorError(
            f"point {pattern!r} must be a point name or a glob of a-z, 0-9, _, * and ?"
        )
    return pattern


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?")


def point_matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


class DeviceTable:
    """The pod's devices as the config declares them."""

    def __init__(self, devices: Iterable[DeviceInfo]) -> None:
        self.devices: dict[str, DeviceInfo] = {d.id: d for d in devices}

    def select(self, selector: Selector) -> list[str]:
        """Device ids in config order; SelectorError if one named does not exist."""
        if selector.ids:
            missing = [i for i in selector.ids if i not in self.devices]
            if missing:
                raise SelectorError(f"no device {missing[0]!r}")
            return list(selector.ids)
        return [
            d.id
            for d in self.devices.values()
            if (selector.kind is None or d.kind is selector.kind)
            and (selector.rack is None or d.rack == selector.rack)
        ]

    def of_kind(self, kind: DeviceKind) -> list[str]:
        return [d.id for d in self.devices.values() if d.kind is kind]

    def servers_in_rack(self, rack: int) -> list[str]:
        return [
            d.id for d in self.devices.values() if d.kind is DeviceKind.BMC and d.rack == rack
        ]

    def servers_on_phase(self, pdu: str, phase: int) -> list[str]:
        return [
            d.id
            for d in self.devices.values()
            if d.kind is DeviceKind.BMC
            and d.pdu == pdu
            and d.outlet is not None
            and phase_of_outlet(d.outlet) == phase
        ]

    def feeds(self, servers: Iterable[str]) -> list[tuple[str, int]]:
        """The (PDU, outlet) that feeds each of these servers, where the config says."""
        result: list[tuple[str, int]] = []
        for server in servers:
            info = self.devices.get(server)
            if info is not None and info.pdu is not None and info.outlet is not None:
                result.append((info.pdu, info.outlet))
        return result

    def rack_of(self, device: str) -> int | None:
        info = self.devices.get(device)
        return info.rack if info is not None else None


def number(value: PointValue) -> float | None:
    """A reading as a finite number, or None (a boolean is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number_ = float(value)
    return number_ if math.isfinite(number_) else None


def aggregate(values: Sequence[float], how: str) -> float | None:
    """max, min or mean of numbers (None when there are none)."""
    if not values:
        return None
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    if how == "mean":
        return sum(values) / len(values)
    raise SelectorError(f"{how!r} is not an aggregate of numbers (max, min, mean)")
