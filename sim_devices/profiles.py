"""Pod layouts: the named profiles, the device ids, who plugs in where, ports.

Cabling (documented in docs/simulator.md and written into the daemon config):
server slot n of a rack with P PDUs plugs into PDU ``(n-1) % P`` (a, b, ...)
at outlet ``(n-1) // P + 1``. Servers alternate between a rack's PDUs, and on
each PDU take consecutive outlets, which the PDU spreads over its three phases
(outlet o on phase ``(o-1) % 3 + 1``), so load is balanced across PDUs and
phases. Each server has one feed; a server on an outlet that is off is off.
"""

from __future__ import annotations

import enum
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sim_devices.physics.types import ServerId

MAX_RACKS = 16  # the CDU's leak-zone and isolation registers have 16 bits
MAX_SERVERS_PER_RACK = 99  # device ids carry two digits: r<rack>s<nn>
MAX_PDUS_PER_RACK = 2  # ids pdu-r<rack>a / b
MAX_OUTLETS = 96
PHASES = 3
CDU_ID = "cdu1"
STANDARD_BREAKERS_A = (16.0, 20.0, 32.0, 40.0, 63.0, 80.0, 100.0, 125.0, 160.0, 200.0, 250.0)


class LayoutError(ValueError):
    """A pod layout or port plan that cannot be built (named in the message)."""


class Profile(enum.StrEnum):
    SMALL = "small"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Plug:
    """Where one server's power feed plugs in."""

    pdu_id: str
    outlet: int
    phase: int


@dataclass(frozen=True, slots=True)
class PodLayout:
    racks: int
    servers_per_rack: int
    pdus_per_rack: int
    outlets_per_pdu: int

    def __post_init__(self) -> None:
        checks = (
            ("racks", self.racks, 1, MAX_RACKS),
            ("servers per rack", self.servers_per_rack, 1, MAX_SERVERS_PER_RACK),
            ("PDUs per rack", self.pdus_per_rack, 1, MAX_PDUS_PER_RACK),
            ("outlets per PDU", self.outlets_per_pdu, 1, MAX_OUTLETS),
        )
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise LayoutError(f"{name} must be {low}-{high}, got {value}")
        if self.servers_per_rack > self.pdus_per_rack * self.outlets_per_pdu:
            raise LayoutError(
                f"{self.servers_per_rack} servers per rack do not fit on "
                f"{self.pdus_per_rack} PDU(s) of {self.outlets_per_pdu} outlets"
            )

    @property
    def server_count(self) -> int:
        return self.racks * self.servers_per_rack

    @property
    def pdu_count(self) -> int:
        return self.racks * self.pdus_per_rack

    def server_ids(self) -> tuple[ServerId, ...]:
        return tuple(
            ServerId(r, s)
            for r in range(1, self.racks + 1)
            for s in range(1, self.servers_per_rack + 1)
        )

    def pdu_ids(self) -> tuple[str, ...]:
        return tuple(
            pdu_id(r, i) for r in range(1, self.racks + 1) for i in range(self.pdus_per_rack)
        )

    def rack_of_pdu(self, pdu: str) -> int:
        index = self.pdu_ids().index(pdu)
        return index // self.pdus_per_rack + 1

    def plug(self, server: ServerId) -> Plug:
        index = (server.slot - 1) % self.pdus_per_rack
        outlet = (server.slot - 1) // self.pdus_per_rack + 1
        return Plug(pdu_id(server.rack, index), outlet, (outlet - 1) % PHASES + 1)

    def has_server(self, server: ServerId) -> bool:
        return 1 <= server.rack <= self.racks and 1 <= server.slot <= self.servers_per_rack


MAX_OVERSUBSCRIBE = 3.0  # beyond Dynamo/Thunderbolt/POLCA's 9-30 % by far


def check_oversubscribe(ratio: float) -> float:
    if not 1.0 <= ratio <= MAX_OVERSUBSCRIBE:
        raise LayoutError(f"oversubscribe must be 1.0-{MAX_OVERSUBSCRIBE:g}, got {ratio:g}")
    return ratio


def breaker_rating_a(
    layout: PodLayout, peak_w: float, voltage_v: float, oversubscribe: float = 1.0
) -> float:
    """Phase breaker sized like an electrician would: the next standard rating at
    or above the busiest phase's peak current / 0.8 (80 % continuous rule).

    Oversubscribed (ratio > 1): for the busiest phase's peak / ratio, to the
    whole ampere: the standard steps (100 A, 125 A, ...) would hide most of the
    oversubscription, and the point is a pod whose phases can trip at peak."""
    check_oversubscribe(oversubscribe)
    per_phase: dict[tuple[str, int], int] = {}
    for server in layout.server_ids():
        plug = layout.plug(server)
        per_phase[plug.pdu_id, plug.phase] = per_phase.get((plug.pdu_id, plug.phase), 0) + 1
    need_a = max(per_phase.values()) * peak_w / oversubscribe / voltage_v / 0.8
    if oversubscribe > 1.0:
        return float(math.ceil(need_a))
    for rating in STANDARD_BREAKERS_A:
        if rating >= need_a:
            return rating
    return need_a


def feed_w(layout: PodLayout, peak_w: float, oversubscribe: float = 1.0) -> float:
    """The pod's power feed: every server at peak / the oversubscription ratio."""
    return layout.server_count * peak_w / check_oversubscribe(oversubscribe)


def pdu_id(rack: int, index: int) -> str:
    return f"pdu-r{rack}{'ab'[index]}"


PROFILES: dict[Profile, PodLayout] = {
    Profile.SMALL: PodLayout(racks=2, servers_per_rack=4, pdus_per_rack=1, outlets_per_pdu=24),
    Profile.FULL: PodLayout(racks=8, servers_per_rack=18, pdus_per_rack=2, outlets_per_pdu=48),
}


@dataclass(frozen=True, slots=True)
class PortPlan:
    """CDU Modbus on the base port, PDUs on base+1.., BMCs (if TCP) after them."""

    base_port: int
    layout: PodLayout
    bmc_tcp: bool = False

    def __post_init__(self) -> None:
        last = self.base_port + self.layout.pdu_count
        if self.bmc_tcp:
            last += self.layout.server_count
        if self.base_port < 1 or last > 65_535:
            raise LayoutError(
                f"ports {self.base_port}-{last} do not fit in 1-65535; choose another --base-port"
            )

    @property
    def cdu_port(self) -> int:
        return self.base_port

    def pdu_port(self, pdu: str) -> int:
        return self.base_port + 1 + self.layout.pdu_ids().index(pdu)

    def bmc_port(self, server: ServerId) -> int:
        if not self.bmc_tcp:
            raise LayoutError("BMCs are on ptys, not TCP, in this plan")
        index = self.layout.server_ids().index(server)
        return self.base_port + 1 + self.layout.pdu_count + index


@dataclass(frozen=True, slots=True)
class SimPaths:
    """Everything the sim and the daemon it serves put on disk, under one dir."""

    state_dir: Path

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "sim.sock"

    @property
    def daemon_socket(self) -> Path:
        return self.state_dir / "megapodd.sock"

    @property
    def daemon_state_dir(self) -> Path:
        return self.state_dir / "state"

    @property
    def pty_dir(self) -> Path:
        return self.state_dir / "pty"

    def pty_link(self, server: ServerId) -> Path:
        """The stable symlink to a BMC's pty (named as sim_devices.bmc makes it)."""
        return self.pty_dir / f"{server.name}.tty"


def default_state_dir() -> Path:
    """Per-user default, so two users of one machine do not collide."""
    return Path(tempfile.gettempdir()) / f"megapod-sim-{os.getuid()}"
