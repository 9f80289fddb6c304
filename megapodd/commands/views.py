"""Read views the local API serves beyond the raw snapshots: the device list
with its cabling, points filtered by device and name, and events filtered by
time, severity and position (for `megapodctl events --follow`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

from drivers.base import Quality
from megapodd.commands.dispatch import CommandRefused
from megapodd.commands.requests import EventsRequest, PointsRequest
from megapodd.devices import Devices
from megapodd.events import Event, Severity
from megapodd.store import PointStore

_SEVERITY_RANK = {s: n for n, s in enumerate(Severity)}
SHOWN_IDS = 12  # a refusal lists the ids there are, this many at most


def no_such(what: str, wanted: str, ids: Iterable[str]) -> CommandRefused:
    """A refusal naming the id that is not there and the ones that are."""
    known = list(ids)
    listed = ", ".join(known[:SHOWN_IDS]) or "none"
    if len(known) > SHOWN_IDS:
        listed += f", … ({len(known)} in all)"
    return CommandRefused(f"no {what} {wanted!r}; {what}s: {listed}")


def device_list(store: PointStore, devices: Devices) -> list[dict[str, Any]]:
    """Every device with its rack and cabling (for people and the live view),
    state and how many of its points are not good; no values."""
    links = {s.device_id: s.link_stats() for s in devices.supervisors}
    cabling: dict[str, dict[str, object]] = {}
    for pdu_id, (pdu, _) in devices.pdus.items():
        cabling[pdu_id] = {"rack": pdu.rack, "outlets": pdu.outlets}
    for bmc_id, (bmc, _) in devices.bmcs.items():
        cabling[bmc_id] = {"rack": bmc.rack, "pdu": bmc.pdu, "outlet": bmc.outlet}
    rows = []
    for record in store.devices():
        rows.append(
            {
                "id": record.id,
                "kind": record.kind,
                "state": record.state.value,
                "reason": record.reason,
                "rack": None,
                **cabling.get(record.id, {}),
                "points": len(record.points),
                "not_good": sum(1 for p in record.points.values() if p.quality is not Quality.GOOD),
                "link": links.get(record.id, {}),
            }
        )
    return rows


def point_list(store: PointStore, request: PointsRequest) -> list[dict[str, Any]]:
    """The points of one device or all, whose name matches the pattern."""
    records = list(store.devices())
    if request.device is not None:
        records = [r for r in records if r.id == request.device]
        if not records:
            raise no_such("device", request.device, (r.id for r in store.devices()))
    pattern = request.match
    rows = []
    for record in records:
        for name, point in sorted(record.points.items()):
            subject = f"{record.id}.{name}" if pattern and "." in pattern else name
            if pattern is None or fnmatch.fnmatchcase(subject, pattern):
                rows.append({"device": record.id, "point": name, **point.as_json()})
    return rows


def event_list(recent: Iterable[Event], request: EventsRequest, boot_id: str) -> list[object]:
    """The newest `count` events that pass the request's filters, oldest first."""
    after = request.after_seq if request.boot_id in (None, boot_id) else None
    floor = _SEVERITY_RANK[Severity(request.min_severity)] if request.min_severity else 0
    chosen = [
        e
        for e in recent
        if (after is None or e.seq > after)
        and (request.since_ts is None or e.ts >= request.since_ts)
        and _SEVERITY_RANK[e.severity] >= floor
    ]
    return [e.as_json() for e in chosen[-request.count :]]
