"""The control loops table: per-server loops folded into one row while in auto."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from megapodd.ctl.views.text import number, styled, table

MODE_STYLE = {"auto": "green", "failsafe": "bold red", "held": "yellow", "overridden": "yellow"}


def loop_groups(loops: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Loops by name: `fan-zone@r1s01` and `fan-zone@r1s02` are both `fan-zone`."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for loop in loops.values():
        groups.setdefault(str(loop["id"]).partition("@")[0], []).append(loop)
    return groups


def loops_table(loops: Mapping[str, Mapping[str, Any]]) -> Table:
    grid = table("control loops", "loop", "mode", "input → output (terms)")
    for name, members in loop_groups(loops).items():
        shown = members if len(members) == 1 else [m for m in members if m["mode"] != "auto"]
        if len(members) > 1:
            auto = sum(1 for m in members if m["mode"] == "auto")
            others = len(members) - auto
            first = members[0]
            grid.add_row(
                f"{name} ×{len(members)}",
                styled(f"{auto} auto", "green") + (f", {others} not" if others else ""),
                f"{first['input']}\n→ {first['target']}",
            )
        for loop in shown:
            mode = styled(str(loop["mode"]), MODE_STYLE.get(str(loop["mode"]), ""))
            if loop["mode"] != "auto" and loop["reason"]:
                mode += f"\n{loop['reason']}"
            setpoint = ""
            if loop["setpoint"] is not None:
                setpoint = f" (setpoint {number(loop['setpoint'])})"
            flow = (
                f"{loop['input']} = {number(loop['process_value'])}{setpoint}\n"
                f"→ {loop['target']} = {number(loop['output'])} (owner {loop['owner']})"
            )
            terms = " · ".join(
                f"{k.upper()} {number(loop[k])}"
                for k in ("p", "i", "d", "ff")
                if loop[k] is not None
            )
            grid.add_row(str(loop["id"]), mode, flow + (f"\n({terms})" if terms else ""))
    return grid
