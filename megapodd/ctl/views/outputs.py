"""The outputs table: who owns each actuator, and every claim on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from megapodd.ctl.views.text import number, table


def _claim(claim: Mapping[str, Any], unit: str) -> str:
    text = f"{claim['owner']} {number(claim['value'], unit)} by {claim['by']}"
    if claim["expires_in_s"] is not None:
        text += f" ({claim['expires_in_s']:g} s left)"
    return text


def outputs_table(outputs: Mapping[str, Mapping[str, Any]], everything: bool) -> Table:
    """Outputs someone claims (or all of them), with the claims in rank order.
    Unclaimed outputs are left as the device has them: one line says how many."""
    shown = {n: o for n, o in outputs.items() if everything or o["claims"]}
    grid = table("outputs", "output", "owner", "value", "claims")
    for name, output in shown.items():
        unit = str(output.get("unit", ""))
        claims = "\n".join(_claim(c, unit) for c in output["claims"]) or "—"
        value = number(output["value"], unit)
        if output["written"] != output["value"]:  # not (yet) what the device has
            value += f"\n(device: {number(output['written'], unit)})"
        grid.add_row(name, str(output["owner"] or "none"), value, claims)
    hidden = len(outputs) - len(shown)
    if hidden:
        grid.caption = f"{hidden} more outputs without claims (the device keeps its own): --all"
        grid.caption_justify = "left"
    return grid
