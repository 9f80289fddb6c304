"""The interlocks table: one row per rule, with its own rows for the
instances that are not normal (a per-server rule has one per server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from megapodd.ctl.views.text import clock, styled, table

RULE_STYLE = {"tripped": "bold red", "latched": "yellow", "normal": "green"}


def stages_text(stages: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for stage in stages:
        when = "now" if not stage["after_s"] else f"+{stage['after_s']:g} s"
        lines.append(f"{when}: {stage['action']} ({stage['outputs']} = {stage['value']})")
    return "\n".join(lines) or "alarm only"


def _summary(instances: Sequence[Mapping[str, Any]]) -> str:
    counts = {
        state: sum(1 for i in instances if i["state"] == state)
        for state in ("tripped", "latched", "normal")
    }
    many = len(instances) > 1
    return ", ".join(
        styled(f"{n} {state}" if many else state, RULE_STYLE[state])
        for state, n in counts.items()
        if n
    )


def interlocks_table(rules: Mapping[str, Mapping[str, Any]], everything: bool) -> Table:
    grid = table("interlocks", "interlock", "state", "watches / does")
    by_rule: dict[str, list[Mapping[str, Any]]] = {}
    for instance in rules.values():
        by_rule.setdefault(str(instance["rule"]), []).append(instance)
    for rule_id, instances in by_rule.items():
        first = instances[0]
        single = len(instances) == 1
        shown = instances if everything else [i for i in instances if i["state"] != "normal"]
        if not single or not shown:
            kind = "" if first["latch"] else " (releases by itself)"
            what = f"{first['watches']}{kind}\n{stages_text(first['actions'])}"
            label = rule_id if single else f"{rule_id} ×{len(instances)}"
            grid.add_row(label, _summary(instances), what)
            if single:
                continue
        for instance in shown:
            style = RULE_STYLE.get(str(instance["state"]), "")
            state = f"{styled(str(instance['state']), style)}\nsince {clock(instance['since'])}"
            reason = str(instance["reason"])
            # A trip's reason starts with what the rule watches: say it once.
            watches = (
                "" if reason.startswith(str(instance["watches"])) else f"{instance['watches']}\n"
            )
            what = watches + reason
            if single:
                what += f"\n{stages_text(instance['actions'])}"
            grid.add_row(str(instance["id"]), state, what)
    return grid
