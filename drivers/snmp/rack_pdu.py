"""Rack PDU driver: the rPDU2 subset of APC's PowerNet-MIB (DEVICES.md §2) over SNMP v2c/v3.

Round trips are what cost on a PDU, so each group is one GET with explicit
OIDs (15 for `fast`, 3 per outlet for `slow`). If the agent answers tooBig the
request is halved and the smaller size is remembered for later reads.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Mapping, Sequence

import structlog

from drivers.base import DeviceKind, Plausible, Point, PollGroup, Quality
from drivers.errors import ConfigurationError, DeviceError, ValueRejected
from drivers.snmp.ber import Oid
from drivers.snmp.client import ClientStats, SnmpClient
from drivers.snmp.errors import TooBigError
from drivers.snmp.protocol_pdu import Tag, VarBind
from drivers.snmp.usm import AuthProtocol, PrivProtocol
from drivers.snmp.v3 import UsmUser

log = structlog.get_logger(__name__)

RPDU2: Oid = (1, 3, 6, 1, 4, 1, 318, 1, 1, 26)
SYS_OBJECT_ID: Oid = (1, 3, 6, 1, 2, 1, 1, 2, 0)
_DEVICE = (*RPDU2, 4, 3, 1)
_PHASE = (*RPDU2, 6, 3, 1)
_OUTLET_STATUS = (*RPDU2, 9, 2, 3, 1)
_OUTLET_CONTROL = (*RPDU2, 9, 2, 4, 1, 5)
_OUTLET_METER = (*RPDU2, 9, 4, 3, 1)

PHASES = 3
# The highest line-to-neutral supply voltage: 240 V + 10 % (EN 50160). 0 V is
# a phase that lost its supply.
SUPPLY_V_MAX = 264.0
MAX_OUTLETS = 96
_UNLIMITED_VARBINDS = 4096  # until the agent says tooBig
_STATE_OFF, _STATE_ON = 1, 2
_PENDING_YES = 1


class OutletAction(enum.StrEnum):
    ON = "on"
    OFF = "off"
    REBOOT = "reboot"


# Control command numbers (on = 1) are the reverse of status values (on = 2).
_COMMANDS = {OutletAction.ON: 1, OutletAction.OFF: 2, OutletAction.REBOOT: 3}
_LOAD_STATES = {1: "lowLoad", 2: "normal", 3: "nearOverload", 4: "overload"}


class SnmpPduDriver:
    """A DeviceDriver for one rPDU2 PDU; constructor takes a `[[pdu]]` config section."""

    def __init__(
        self,
        *,
        host: str,
        port: int = 161,
        version: str = "2c",
        community: str = "public",
        write_community: str = "private",
        user: str | None = None,
        auth_passphrase: str = "",
        priv_passphrase: str = "",
        auth_protocol: str = "SHA",
        priv_protocol: str = "AES",
        outlets: int = 24,
        fast_poll_s: float = 1.0,
        slow_poll_s: float = 5.0,
        timeout_s: float = 1.0,
        retries: int = 1,
        confirm_timeout_s: float = 10.0,
        confirm_interval_s: float = 0.5,
        breaker_a: float = 32.0,
        supply_v_max: float = SUPPLY_V_MAX,
    ) -> None:
        if not 1 <= outlets <= MAX_OUTLETS:
            raise ConfigurationError(f"pdu {host}: outlets {outlets} out of range 1..{MAX_OUTLETS}")
        if fast_poll_s <= 0 or slow_poll_s <= 0 or timeout_s <= 0 or retries < 0:
            raise ConfigurationError(f"pdu {host}: poll periods and timeout must be > 0")
        usm_user: UsmUser | None = None
        if version == "3":
            if not user:
                raise ConfigurationError(f"pdu {host}: SNMPv3 needs a user")
            auth = AuthProtocol.parse(auth_protocol) if auth_passphrase else AuthProtocol.NONE
            priv = PrivProtocol.parse(priv_protocol) if priv_passphrase else PrivProtocol.NONE
            if priv is not PrivProtocol.NONE and auth is AuthProtocol.NONE:
                raise ConfigurationError(f"pdu {host}: SNMPv3 privacy needs an auth passphrase")
            usm_user = UsmUser(user, auth, auth_passphrase, priv, priv_passphrase)
        elif version != "2c":
            raise ConfigurationError(f"pdu {host}: SNMP version {version!r} (use '2c' or '3')")
        self.host = host
        self.outlets = outlets
        self._groups = (PollGroup("fast", fast_poll_s), PollGroup("slow", slow_poll_s))
        self._client = SnmpClient(
            host,
            port,
            community=community,
            write_community=write_community,
            user=usm_user,
            timeout_s=timeout_s,
            retries=retries,
        )
        self._confirm_timeout_s = confirm_timeout_s
        self._confirm_interval_s = confirm_interval_s
        self._max_varbinds = _UNLIMITED_VARBINDS
        self._fast = _fast_plan()
        self._slow = _slow_plan(outlets)
        self._plausible = plausible_ranges(outlets, breaker_a, supply_v_max)

    # ------------------------------------------------------------ DeviceDriver

    @property
    def kind(self) -> DeviceKind:
        return DeviceKind.PDU

    def link_stats(self) -> Mapping[str, int]:
        s = self._client.stats
        return {
            "requests": s.requests,
            "retries": max(0, s.requests_sent - s.requests),
            "timeouts": s.timeouts,
            "frame_errors": s.dropped,  # malformed, stale or unauthenticated datagrams
            "device_errors": s.error_status,
            "requests_sent": s.requests_sent,
            "responses": s.responses,
        }

    @property
    def stats(self) -> ClientStats:
        return self._client.stats

    def poll_groups(self) -> Sequence[PollGroup]:
        return self._groups

    def plausible(self, point: str) -> Plausible | None:
        """What the point can physically read (`plausible_ranges`)."""
        return self._plausible.get(point)

    async def connect(self) -> None:
        """Open the socket and make sure the agent answers (v3: discovers its engine)."""
        await self._client.open()
        try:
            await self._client.get([SYS_OBJECT_ID])
        except BaseException:
            await self._client.close()
            raise

    async def close(self) -> None:
        await self._client.close()

    def group_oids(self, group: str) -> list[Oid]:
        """The OIDs one read of a group asks for (for tools and benchmarks)."""
        return [oid for oid, _, _ in self._plan(group)]

    def _plan(self, group: str) -> Plan:
        if group == "fast":
            return self._fast
        if group == "slow":
            return self._slow
        raise ConfigurationError(f"pdu {self.host}: no poll group {group!r}")

    async def read_group(self, group: str) -> Mapping[str, Point]:
        plan = self._plan(group)
        varbinds = await self._get_many([oid for oid, _, _ in plan])
        return {name: convert(vb) for (_, name, convert), vb in zip(plan, varbinds, strict=True)}

    # ------------------------------------------------------------ control

    async def set_outlet(self, outlet: int, action: OutletAction) -> str:
        """Switch an outlet and confirm by reading it back; return its state 'on'/'off'."""
        if not isinstance(outlet, int) or not 1 <= outlet <= self.outlets:
            raise ValueRejected(
                f"pdu {self.host}: outlet {outlet!r} out of range 1..{self.outlets}"
            )
        try:
            action = OutletAction(action)
        except ValueError:
            raise ValueRejected(f"pdu {self.host}: unknown outlet action {action!r}") from None
        command = VarBind.integer((*_OUTLET_CONTROL, outlet), _COMMANDS[action])
        # On and off may be resent safely; a reboot resent after a lost reply
        # would reboot the server twice.
        await self._client.set([command], once=action is OutletAction.REBOOT)
        want = _STATE_OFF if action is OutletAction.OFF else _STATE_ON
        state_oid = (*_OUTLET_STATUS, 5, outlet)
        pending_oid = (*_OUTLET_STATUS, 6, outlet)
        last: VarBind | None = None
        try:
            async with asyncio.timeout(self._confirm_timeout_s):
                while True:
                    # Through _get_many: an answer for other OIDs is refused.
                    last, pending = await self._get_many([state_oid, pending_oid])
                    if last.value == want and pending.value != _PENDING_YES:
                        state = "on" if want == _STATE_ON else "off"
                        log.info("pdu_outlet_set", host=self.host, outlet=outlet, action=action)
                        return state
                    await asyncio.sleep(self._confirm_interval_s)
        except TimeoutError:
            seen = last.value if last is not None else None
            raise DeviceError(
                f"pdu {self.host}: outlet {outlet} did not reach {action} within "
                f"{self._confirm_timeout_s} s (state {seen!r})"
            ) from None

    # ------------------------------------------------------------ internals

    async def _get_many(self, oids: Sequence[Oid]) -> list[VarBind]:
        """GET in as few requests as the agent allows; halve on tooBig."""
        size = self._max_varbinds
        queue = deque(oids[i : i + size] for i in range(0, len(oids), size))
        out: list[VarBind] = []
        while queue:
            part = queue.popleft()
            try:
                varbinds = await self._client.get(part)
            except TooBigError:
                if len(part) == 1:
                    raise
                half = (len(part) + 1) // 2
                self._max_varbinds = min(self._max_varbinds, half)
                log.info("pdu_request_split", host=self.host, varbinds=half)
                queue.appendleft(part[half:])
                queue.appendleft(part[:half])
                continue
            if [vb.oid for vb in varbinds] != list(part):
                raise DeviceError(f"pdu {self.host}: answer does not match the requested OIDs")
            out.extend(varbinds)
        return out


# ---------------------------------------------------------------- point plans


class _Convert:
    """Turns one varbind into a Point: scaled number, enum text, or BAD."""

    __slots__ = ("kind", "scale", "unit")

    def __init__(self, unit: str, scale: float = 1.0, kind: str = "number") -> None:
        self.unit = unit
        self.scale = scale
        self.kind = kind

    def __call__(self, vb: VarBind) -> Point:
        value = vb.value
        if vb.tag is not Tag.INTEGER or not isinstance(value, int) or value == -1:
            return Point(None, self.unit, Quality.BAD)  # noSuch*, wrong type, "not supported"
        if self.kind == "load":
            text = _LOAD_STATES.get(value)
            return Point(text, "", Quality.GOOD if text else Quality.BAD)
        if self.kind == "switch":
            if value == _STATE_ON:
                return Point("on", "")
            if value == _STATE_OFF:
                return Point("off", "")
            return Point(None, "", Quality.BAD)
        scaled = value * self.scale
        return Point(round(scaled, 3) if self.scale != 1.0 else value, self.unit)


Plan = tuple[tuple[Oid, str, _Convert], ...]


def _fast_plan() -> Plan:
    rows: list[tuple[Oid, str, _Convert]] = [
        ((*_DEVICE, 4, 1), "load_state", _Convert("", kind="load")),
        ((*_DEVICE, 5, 1), "power_w", _Convert("W", 10.0)),  # hundredths of kW
        ((*_DEVICE, 9, 1), "energy_kwh", _Convert("kWh", 0.1)),  # tenths of kWh
    ]
    for p in range(1, PHASES + 1):
        rows += [
            ((*_PHASE, 4, p), f"phase{p}_load_state", _Convert("", kind="load")),
            ((*_PHASE, 5, p), f"phase{p}_current_a", _Convert("A", 0.1)),
            ((*_PHASE, 6, p), f"phase{p}_voltage_v", _Convert("V")),
            ((*_PHASE, 7, p), f"phase{p}_power_w", _Convert("W", 10.0)),
        ]
    return tuple(rows)


def _slow_plan(outlets: int) -> Plan:
    rows: list[tuple[Oid, str, _Convert]] = []
    # Column by column, so a split on tooBig keeps each request within one table.
    for n in range(1, outlets + 1):
        rows.append(((*_OUTLET_STATUS, 5, n), f"outlet_{n:02d}_state", _Convert("", kind="switch")))
    for n in range(1, outlets + 1):
        rows.append(((*_OUTLET_METER, 6, n), f"outlet_{n:02d}_current_a", _Convert("A", 0.1)))
    for n in range(1, outlets + 1):
        rows.append(((*_OUTLET_METER, 7, n), f"outlet_{n:02d}_power_w", _Convert("W")))
    return tuple(rows)


# A breaker carries 1.45 times its rating for up to an hour before it must
# trip (IEC 60898-1's conventional tripping current), so no phase, and no
# outlet on it, reads more than that for long.
BREAKER_MARGIN = 1.45
# The energy counter is tenths of kWh in an INTEGER; a PDU at 100 kW for 100
# years stays below 1e8 kWh. Reading at most 1 kWh after more is a reset.
ENERGY_MAX_KWH = 1e8
ENERGY_RESET_BELOW_KWH = 1.0


def plausible_ranges(
    outlets: int, breaker_a: float, supply_v_max: float = SUPPLY_V_MAX
) -> dict[str, Plausible]:
    """Every metered point's physical bounds, from the phase breaker's rating."""
    current = Plausible(0.0, breaker_a * BREAKER_MARGIN)
    phase_w = breaker_a * BREAKER_MARGIN * supply_v_max
    ranges = {
        "power_w": Plausible(0.0, PHASES * phase_w),
        # The counter rises no faster than the PDU's largest power (kWh per second).
        "energy_kwh": Plausible(0.0, ENERGY_MAX_KWH, counter=True,
                                reset_below=ENERGY_RESET_BELOW_KWH,
                                max_rise_per_s=PHASES * phase_w / 3.6e6, resolution=0.2),
    }  # fmt: skip
    for p in range(1, PHASES + 1):
        ranges[f"phase{p}_current_a"] = current
        ranges[f"phase{p}_voltage_v"] = Plausible(0.0, supply_v_max)
        ranges[f"phase{p}_power_w"] = Plausible(0.0, phase_w)
    for n in range(1, outlets + 1):
        ranges[f"outlet_{n:02d}_current_a"] = current
        ranges[f"outlet_{n:02d}_power_w"] = Plausible(0.0, phase_w)
    return ranges


def point_names(outlets: int) -> list[str]:
    """Every point a PDU with this many outlets reports (both groups)."""
    return [name for _, name, _ in (*_fast_plan(), *_slow_plan(outlets))]
