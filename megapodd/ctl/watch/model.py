"""The facts of one live-view frame, from megapodd's answers: what a
technician at the pod looks for first. Pure functions of the answers (no
I/O, no terminal), so a frame is tested from JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from megapodd.ctl.views.loops import loop_groups
from megapodd.ctl.views.text import clock

Json = Mapping[str, Any]

CRITICAL, ALARM, WARNING = "critical", "alarm", "warning"
# PDU load states worse than normal (the PDU's own words).
_LOAD_SEVERITY = {"nearOverload": WARNING, "overload": ALARM}
# CDU flags that are trouble when true: (point, severity, what it means).
_CDU_FLAGS = (
    ("leak", CRITICAL, "leak detected"),
    ("pump1_fault", ALARM, "pump 1 fault"),
    ("pump2_fault", ALARM, "pump 2 fault"),
    ("reservoir_low", ALARM, "reservoir low"),
    ("watchdog_expired", ALARM, "watchdog expired (megapodd's heartbeat missed)"),
    ("filter_dp_high", WARNING, "filter Δp high: filter clogging"),
    ("local_mode", WARNING, "in local mode: remote control is off"),
)


@dataclass(frozen=True, slots=True)
class Alarm:
    severity: str  # critical | alarm | warning
    text: str


@dataclass(frozen=True, slots=True)
class RackView:
    rack: int
    hottest_gpu_c: float | None
    hottest_gpu_at: str  # "r1s03 gpu5"
    inlet_air_c: float | None  # the warmest server inlet of the rack
    outlet_air_c: float | None  # the warmest server outlet
    power_w: float | None  # the rack's PDUs
    servers_on: int  # chassis on and the outlet feeding it on
    servers: int
    faults: tuple[str, ...]  # outlets feeding a server that are off, phase load states


@dataclass(frozen=True, slots=True)
class PumpView:
    number: int
    running: bool | None
    speed_pct: float | None
    fault: bool | None


@dataclass(frozen=True, slots=True)
class CduView:
    id: str
    state: str
    supply_c: float | None
    return_c: float | None
    flow_lpm: float | None
    diff_pressure_kpa: float | None
    pumps: tuple[PumpView, ...]
    valve_pct: float | None
    reservoir_pct: float | None
    leak_zones: tuple[int, ...]  # zones (racks' drip trays) reporting a leak, from 1


@dataclass(frozen=True, slots=True)
class LoopView:
    name: str  # a loop, or the name of per-server loops ("fan-zone")
    count: int
    modes: tuple[tuple[str, int], ...]  # mode -> how many, auto first


@dataclass(frozen=True, slots=True)
class PowerView:
    measured_w: float | None  # the sum of every PDU's power_w
    # The pod's power budget ([power]; None: no budget, or a daemon without one).
    budget_w: float | None = None
    capped: int = 0  # servers whose power is capped (by the budget or a higher owner)


@dataclass(frozen=True, slots=True)
class Frame:
    at_ts: float
    pod_id: str
    version: str
    mqtt_connected: bool
    pending_events: int
    devices_online: int
    devices: int
    interlocks: tuple[Alarm, ...]  # tripped, then latched
    alarms: tuple[Alarm, ...]
    racks: tuple[RackView, ...]
    cdus: tuple[CduView, ...]
    loops: tuple[LoopView, ...]
    power: PowerView
    events: tuple[Json, ...] = ()
    problem: str | None = None  # megapodd stopped answering: the last frame, and why

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _good(points: Json, name: str) -> Any:
    """A point's value if it is a good reading, else None."""
    point = points.get(name)
    if not point or point.get("quality") != "good":
        return None
    return point.get("value")


def _number(points: Json, name: str) -> float | None:
    value = _good(points, name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _max(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _sum(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def interlock_alarms(interlocks: Json) -> tuple[Alarm, ...]:
    """Tripped instances first (the condition holds), then latched ones
    (cleared, outputs still held until a reset)."""
    found = []
    for state, severity in (("tripped", CRITICAL), ("latched", ALARM)):
        for instance in interlocks.values():
            if instance["state"] != state:
                continue
            what = f"{instance['id']} {state} since {clock(instance['since'])}"
            if instance.get("reason"):
                what += f": {instance['reason']}"
            if state == "latched":
                what += f" (megapodctl reset {instance['rule']})"
            found.append(Alarm(severity, what))
    return tuple(found)


def device_alarms(devices: Sequence[Json], loops: Json) -> tuple[Alarm, ...]:
    found = []
    for device in devices:
        points = device["points"]
        if device["state"] != "online":
            found.append(Alarm(ALARM, f"{device['id']} {device['state']}: {device['reason']}"))
        if device["kind"] == "cdu":
            for name, severity, text in _CDU_FLAGS:
                if _good(points, name) is True:
                    found.append(Alarm(severity, f"{device['id']}: {text}"))
            code = _good(points, "alarm_code")
            if code:
                found.append(Alarm(ALARM, f"{device['id']}: alarm code {code}"))
        elif device["kind"] == "bmc" and _good(points, "leak") is True:
            found.append(Alarm(CRITICAL, f"{device['id']}: leak detected"))
    for name, members in loop_groups(loops).items():
        failsafe = [m for m in members if m["mode"] == "failsafe"]
        if len(members) == 1 and failsafe:
            found.append(Alarm(ALARM, f"loop {name} failsafe: {failsafe[0]['reason']}"))
        elif failsafe:  # per-server loops: one line, not one a server
            where = ", ".join(str(m["id"]).partition("@")[2] for m in failsafe)
            found.append(Alarm(ALARM, f"loop {name} failsafe on {where}: {failsafe[0]['reason']}"))
    order = {CRITICAL: 0, ALARM: 1, WARNING: 2}
    return tuple(sorted(found, key=lambda a: order[a.severity]))


def _gpu_hottest(server: Json) -> tuple[float | None, str]:
    best: tuple[float | None, str] = (None, "")
    for name in server["points"]:
        if name.startswith("gpu") and name.endswith("_temp_c"):
            value = _number(server["points"], name)
            if value is not None and (best[0] is None or value > best[0]):
                best = (value, f"{server['id']} {name.removesuffix('_temp_c')}")
    return best


def rack_views(by_id: Mapping[str, Json], layout: Sequence[Json]) -> tuple[RackView, ...]:
    racks = sorted({d["rack"] for d in layout if d.get("rack") is not None})
    views = []
    for rack in racks:
        members = [d for d in layout if d.get("rack") == rack and d["id"] in by_id]
        servers = [(d, by_id[d["id"]]) for d in members if d["kind"] == "bmc"]
        pdus = [by_id[d["id"]] for d in members if d["kind"] == "pdu"]
        hottest: tuple[float | None, str] = (None, "")
        for _, server in servers:
            value, where = _gpu_hottest(server)
            if value is not None and (hottest[0] is None or value > hottest[0]):
                hottest = (value, where)
        off: dict[str, list[str]] = {}  # PDU -> its outlets feeding a server, off
        powered = 0
        for cabling, server in servers:
            pdu = by_id.get(str(cabling.get("pdu")))
            outlet = cabling.get("outlet")
            fed = True
            if pdu is not None and outlet is not None:
                fed = _good(pdu["points"], f"outlet_{int(outlet):02d}_state") != "off"
                if not fed:
                    off.setdefault(pdu["id"], []).append(str(outlet))
            # A BMC on standby power says "on" for a chassis with no power at its outlet.
            powered += fed and _good(server["points"], "chassis_power") == "on"
        faults = [
            f"{pdu} outlet{'s' if len(n) > 1 else ''} {', '.join(n)} off" for pdu, n in off.items()
        ]
        for pdu in pdus:
            for name in sorted(pdu["points"]):
                state = _good(pdu["points"], name)
                if name.endswith("load_state") and state in _LOAD_SEVERITY:
                    where = name.removesuffix("_load_state").replace("load_state", "total")
                    faults.append(f"{pdu['id']} {where} {state}")
        views.append(
            RackView(
                rack=rack,
                hottest_gpu_c=hottest[0],
                hottest_gpu_at=hottest[1],
                inlet_air_c=_max([_number(s["points"], "inlet_temp_c") for _, s in servers]),
                outlet_air_c=_max([_number(s["points"], "outlet_temp_c") for _, s in servers]),
                power_w=_sum([_number(p["points"], "power_w") for p in pdus]),
                servers_on=powered,
                servers=len(servers),
                faults=tuple(faults),
            )
        )
    return tuple(views)


def cdu_view(device: Json) -> CduView:
    points = device["points"]
    pumps = tuple(
        PumpView(
            n,
            _good(points, f"pump{n}_running"),
            _number(points, f"pump{n}_speed_pct"),
            _good(points, f"pump{n}_fault"),
        )
        for n in (1, 2)
        if f"pump{n}_speed_pct" in points
    )
    mask = _good(points, "leak_zones")
    zones = tuple(bit + 1 for bit in range(16) if isinstance(mask, int) and mask >> bit & 1)
    return CduView(
        id=device["id"],
        state=device["state"],
        supply_c=_number(points, "supply_temp_c"),
        return_c=_number(points, "return_temp_c"),
        flow_lpm=_number(points, "flow_lpm"),
        diff_pressure_kpa=_number(points, "diff_pressure_kpa"),
        pumps=pumps,
        valve_pct=_number(points, "facility_valve_position_pct"),
        reservoir_pct=_number(points, "reservoir_level_pct"),
        leak_zones=zones,
    )


def loop_views(loops: Json) -> tuple[LoopView, ...]:
    views = []
    for name, members in loop_groups(loops).items():
        counts: dict[str, int] = {}
        for loop in members:
            counts[str(loop["mode"])] = counts.get(str(loop["mode"]), 0) + 1
        modes = sorted(counts.items(), key=lambda item: (item[0] != "auto", item[0]))
        views.append(LoopView(name, len(members), tuple(modes)))
    return tuple(views)


def build_frame(
    status: Json,
    layout: Sequence[Json],
    interlocks: Json,
    loops: Json,
    events: Sequence[Json],
    at_ts: float,
    power: Json | None = None,
) -> Frame:
    """One frame from the answers to status, devices (the layout: racks and
    cabling, asked once), interlocks, loops, events and power (None: the pod
    has no power budget)."""
    pod, devices = status["pod"], status["devices"]
    by_id = {d["id"]: d for d in devices}
    pdus = [d for d in devices if d["kind"] == "pdu"]
    return Frame(
        at_ts=at_ts,
        pod_id=str(pod["id"]),
        version=str(pod["version"]),
        mqtt_connected=bool(pod["mqtt"]["connected"]),
        pending_events=int(pod["mqtt"]["pending_events"]),
        devices_online=sum(1 for d in devices if d["state"] == "online"),
        devices=len(devices),
        interlocks=interlock_alarms(interlocks),
        alarms=device_alarms(devices, loops),
        racks=rack_views(by_id, layout),
        cdus=tuple(cdu_view(d) for d in devices if d["kind"] == "cdu"),
        loops=loop_views(loops),
        power=PowerView(
            _sum([_number(p["points"], "power_w") for p in pdus]),
            power["budget_w"] if power is not None else None,
            len(power["caps"]) if power is not None else 0,
        ),
        events=tuple(events),
    )
