"""A live-view frame as rich renderables, top to bottom: the header, alarms
and tripped/latched interlocks (red), the racks, the CDU, the loops, pod
power, and the newest events in whatever height is left."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.table import Table
from rich.text import Text

from megapodd.ctl.views.events import event_line
from megapodd.ctl.views.loops import MODE_STYLE
from megapodd.ctl.views.text import clock, esc, literal, number, styled, table
from megapodd.ctl.watch.model import ALARM, CRITICAL, Alarm, CduView, Frame, Json, RackView

_ALARM_STYLE = {CRITICAL: "bold red", ALARM: "red", "warning": "yellow"}
PLAIN_EVENTS = 8  # in a plain (not a terminal) frame


def _kw(watts: float | None) -> str:
    return "—" if watts is None else f"{watts / 1000:.1f} kW"


def header(frame: Frame) -> Text:
    broker = "MQTT connected" if frame.mqtt_connected else styled("MQTT DISCONNECTED", "bold red")
    if frame.pending_events:
        broker += f" ({frame.pending_events} events queued)"
    online = f"{frame.devices_online}/{frame.devices} devices online"
    if frame.devices_online < frame.devices:
        online = styled(online, "yellow")
    pod = f"[bold]pod {esc(frame.pod_id)}[/bold] · megapodd {esc(frame.version)}"
    line = f"{pod} · {broker} · {online} · {clock(frame.at_ts)}"
    if frame.problem:
        line += "\n" + styled(f"megapodd is not answering: {esc(frame.problem)}", "bold red")
    return Text.from_markup(line)


def alarms(frame: Frame) -> Text:
    found: Sequence[Alarm] = (*frame.interlocks, *frame.alarms)
    if not found:
        return Text.from_markup(styled("no alarms · no tripped or latched interlocks", "green"))
    lines = [styled(f"● {esc(a.text)}", _ALARM_STYLE[a.severity]) for a in found]
    return Text.from_markup("\n".join(lines))


def _rack_row(rack: RackView) -> list[str]:
    gpu = number(rack.hottest_gpu_c, "C")
    if rack.hottest_gpu_at:
        gpu += f"\n{esc(rack.hottest_gpu_at)}"
    servers = f"{rack.servers_on}/{rack.servers} on"
    if rack.servers_on < rack.servers:
        servers = styled(servers, "yellow")
    faults = styled(esc("\n".join(rack.faults)), "red") if rack.faults else "none"
    air = f"{number(rack.inlet_air_c)} → {number(rack.outlet_air_c, 'C')}"
    return [str(rack.rack), gpu, air, _kw(rack.power_w), servers, faults]


def racks(frame: Frame) -> Table:
    grid = table(None, "rack", "hottest GPU", "air in → out", "power", "servers", "outlet faults")
    for rack in frame.racks:
        grid.add_row(*_rack_row(rack))
    return grid


def _cdu(cdu: CduView) -> str:
    pumps = " · ".join(
        f"pump {p.number} "
        + (styled("FAULT", "bold red") + " " if p.fault else "")
        + ("running" if p.running else "idle")
        + f" {number(p.speed_pct, '%')}"
        for p in cdu.pumps
    )
    leaks = (
        styled("LEAK in zone " + ", ".join(map(str, cdu.leak_zones)), "bold red")
        if cdu.leak_zones
        else "no leak in any zone"
    )
    state = "" if cdu.state == "online" else " " + styled(esc(cdu.state), "bold red")
    return (
        f"[bold]{esc(cdu.id)}[/bold]{state} supply {number(cdu.supply_c, 'C')} · return "
        f"{number(cdu.return_c, 'C')} · flow {number(cdu.flow_lpm, 'lpm')} · Δp "
        f"{number(cdu.diff_pressure_kpa, 'kPa')}\n{pumps} · valve {number(cdu.valve_pct, '%')}"
        f" · reservoir {number(cdu.reservoir_pct, '%')}\n{leaks}"
    )


def cooling(frame: Frame) -> Text:
    return Text.from_markup("\n".join(_cdu(c) for c in frame.cdus) or "no CDU")


def loops(frame: Frame) -> Text:
    parts = []
    for loop in frame.loops:
        modes = ", ".join(
            styled(
                esc(f"{n}/{loop.count} {mode}" if loop.count > 1 else mode),
                MODE_STYLE.get(mode, ""),
            )
            for mode, n in loop.modes
        )
        parts.append(f"{esc(loop.name)} {modes}")
    return Text.from_markup("[bold]loops[/bold] " + (" · ".join(parts) or "none"))


def power(frame: Frame) -> Text:
    budget = frame.power.budget_w
    line = f"[bold]pod power[/bold] {_kw(frame.power.measured_w)} at the PDUs · budget "
    line += "—" if budget is None else _kw(budget)
    if budget is not None and frame.power.measured_w is not None:
        line += f" ({frame.power.measured_w / budget:.0%})"
    if frame.power.capped:
        line += f" · [yellow]{frame.power.capped} server(s) capped[/yellow]"
    return Text.from_markup(line)


def _events(events: Sequence[Json]) -> Text:
    lines = [event_line(e, seq=False) for e in literal(list(events))]
    return Text.from_markup("[bold]newest events[/bold]\n" + ("\n".join(lines) or "none"))


def _top(frame: Frame) -> list[RenderableType]:
    return [header(frame), alarms(frame), racks(frame), cooling(frame), loops(frame), power(frame)]


def _height(console: Console, options: ConsoleOptions, parts: list[RenderableType]) -> int:
    return len(console.render_lines(Group(*parts), options, pad=False))


def render(frame: Frame, console: Console, height: int | None = None) -> RenderableType:
    """The frame; with a height, as many of the newest events as fit in it."""
    top = _top(frame)
    events = list(frame.events)
    if height is None:
        return Group(*top, _events(events[-PLAIN_EVENTS:]))
    options = console.options.update(height=None)
    room = height - _height(console, options, top)  # the heading takes one line
    if room < 2:
        return Group(*top)
    # A long message wraps over two lines or more: drop the oldest until they fit.
    shown = events[-(room - 1) :]
    while shown and _height(console, options, [_events(shown)]) > room:
        shown = shown[1:]
    return Group(*top, _events(shown))
