"""Tables of devices and points: `status`, `status DEVICE`, `devices`, `points`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from megapodd.ctl.views.text import STATE_STYLE, age, point_value, styled, table

# The readings a technician looks at first, per device kind.
KEY_POINTS: dict[str, tuple[str, ...]] = {
    "cdu": (
        "supply_temp_c",
        "return_temp_c",
        "flow_lpm",
        "diff_pressure_kpa",
        "pump1_speed_pct",
        "pump2_speed_pct",
        "leak",
    ),
    "pdu": ("power_w", "load_state", "phase1_current_a", "phase2_current_a", "phase3_current_a"),
    "bmc": ("chassis_power", "power_w", "inlet_temp_c", "coolant_in_temp_c", "leak"),
}


def _state(device: Mapping[str, Any]) -> str:
    state = styled(str(device["state"]), STATE_STYLE.get(str(device["state"]), ""))
    if device["state"] != "online" and device.get("reason"):
        state += f"\n{device['reason']}"
    return state


def _short(name: str) -> str:
    return name.removesuffix("_c").removesuffix("_pct")


def status_table(status: Mapping[str, Any]) -> Table:
    pod = status["pod"]
    mqtt = pod["mqtt"]
    broker = "connected" if mqtt["connected"] else "[bold red]DISCONNECTED[/bold red]"
    title = f"pod {pod['id']} — megapodd {pod['version']} — MQTT {broker}"
    if mqtt["pending_events"]:
        title += f", {mqtt['pending_events']} events queued"
    tick = pod.get("tick")
    if tick:  # the control tick's lateness over its newest ticks
        late = tick["lateness"]
        title += f" — tick late p99 {late['p99_ms']:g} ms, max {late['max_ms']:g} ms"
    grid = table(title, "device", "kind", "state", "key readings", "bad/stale")
    for device in status["devices"]:
        points = device["points"]
        keys = [k for k in KEY_POINTS.get(device["kind"], ()) if k in points]
        readings = ", ".join(f"{_short(k)}={point_value(points[k])}" for k in keys)
        unhealthy = sum(1 for p in points.values() if p["quality"] != "good")
        grid.add_row(
            device["id"], device["kind"], _state(device), readings, f"{unhealthy}/{len(points)}"
        )
    return grid


def device_points_table(device: Mapping[str, Any]) -> Table:
    """Every point of one device (`status DEVICE`)."""
    grid = table(f"{device['id']} ({device['kind']}) — {device['state']}", *_POINT_COLUMNS)
    now = time.time()
    for name, point in device["points"].items():
        value, ts = point_value(point, False), age(point.get("ts"), now)
        grid.add_row(name, value, quality_text(point), ts)
    return grid


def quality_text(point: Mapping[str, Any]) -> str:
    """The point's quality with what the daemon knows of why: the bound a bad
    reading broke, or a good value that newer reads did not confirm."""
    quality = str(point["quality"])
    if point.get("reason"):
        return f"{quality}: {point['reason']}"
    if point.get("unconfirmed"):
        return f"{quality} (newer read unconfirmed)"
    return quality


def link_line(device: Mapping[str, Any]) -> str:
    link = ", ".join(f"{k} {v}" for k, v in device.get("link", {}).items())
    return f"link: {link}" if link else "link: no counters"


def devices_table(devices: Sequence[Mapping[str, Any]]) -> Table:
    grid = table("devices", "device", "kind", "rack", "state", "points", "link errors")
    for device in devices:
        rack = "—" if device.get("rack") is None else str(device["rack"])
        if device.get("pdu"):
            rack += f"\n{device['pdu']} outlet {device['outlet']}"
        link = device.get("link", {})
        errors = {k: v for k, v in link.items() if k in _LINK_ERRORS and isinstance(v, int) and v}
        errors_text = ", ".join(f"{k} {v}" for k, v in errors.items()) or "none"
        points = f"{device['points']}"
        if device.get("not_good"):
            points += f"\n({device['not_good']} not good)"
        grid.add_row(device["id"], device["kind"], rack, _state(device), points, errors_text)
    return grid


# Link counters that mean trouble (the others count ordinary traffic).
_LINK_ERRORS = frozenset(
    {
        "polls_failed",
        "retries",
        "timeouts",
        "frame_errors",
        "device_errors",
        "stale_replies",
        "completion_errors",
        "failures",
        "implausible",
        "unconfirmed",
    }
)
_POINT_COLUMNS = ("point", "value", "quality", "age")


def points_table(points: Sequence[Mapping[str, Any]], title: str) -> Table:
    grid = table(title, "device", *_POINT_COLUMNS)
    now = time.time()
    for point in points:
        grid.add_row(
            point["device"],
            point["point"],
            point_value(point, False),
            quality_text(point),
            age(point.get("ts"), now),
        )
    return grid
