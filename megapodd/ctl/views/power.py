"""The power budget: budget and headroom, each PDU phase's load, every cap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from megapodd.ctl.views.text import esc, number, styled, table

OWNER_STYLE = {"loop": "yellow", "override": "cyan", "fleet": "cyan", "interlock": "bold red"}


def _kw(watts: object) -> str:
    return "—" if not isinstance(watts, int | float) else f"{watts / 1000:.1f} kW"


def _watts(watts: object) -> str:
    return f"{watts:.0f} W" if isinstance(watts, int | float) else "—"


def power_summary(power: Mapping[str, Any]) -> Text:
    budget, pod, headroom = power["budget_w"], power["pod_power_w"], power["headroom_w"]
    line = f"[bold]pod power[/bold] {_kw(pod)}"
    if budget is None:
        line += " · no pod budget (phases only)"
    else:
        line += f" · budget {_kw(budget)}"
        if isinstance(headroom, int | float):
            style = "green" if headroom >= 0 else "bold red"
            line += " · headroom " + styled(_kw(headroom), style)
        line += f" (run-time bounds {_kw(power['min_budget_w'])} – {_kw(power['max_budget_w'])})"
    line += f" · phases at most {number(power['phase_limit_pct'])} % of their breaker"
    line += f" · release after {number(power['release_s'])} s of headroom"
    return Text.from_markup(line)


def phases_table(phases: list[Mapping[str, Any]]) -> Table:
    grid = table("PDU phases", "pdu", "phase", "current", "limit (breaker)", "load", "power")
    for phase in phases:
        load = phase["load_pct"]
        if phase["stale"]:
            shown = styled("stale: servers capped to their share", "bold red")
        else:
            style = "bold red" if load is not None and load > 100 else ""
            style = style or ("yellow" if load is not None and load > 90 else "")
            shown = styled(f"{number(load)} %", style) if style else f"{number(load)} %"
        grid.add_row(
            esc(phase["pdu"]),
            str(phase["phase"]),
            number(phase["current_a"], "A"),
            f"{number(phase['limit_a'], 'A')} ({number(phase['breaker_a'], 'A')})",
            shown,
            _kw(phase["power_w"]),
        )
    return grid


def caps_table(caps: list[Mapping[str, Any]]) -> Table:
    grid = table("power caps", "server", "cap", "owner", "why", "priority", "for")
    for cap in caps:
        owner = str(cap["owner"])
        since = cap["since_s"]
        grid.add_row(
            esc(cap["server"]),
            _watts(cap["cap_w"]),
            styled(owner, OWNER_STYLE.get(owner, "")),
            esc(cap["reason"]),
            str(cap["priority"]),
            "" if not isinstance(since, int | float) else f"{since:.0f} s",
        )
    return grid


def power_view(power: Mapping[str, Any]) -> Group:
    parts: list[Any] = [power_summary(power), phases_table(list(power["phases"]))]
    caps = list(power["caps"])
    parts.append(caps_table(caps) if caps else Text("no server is capped"))
    return Group(*parts)
