"""`megapodd --check-config FILE --explain`: every rule as it would run on
this pod, what it watches, what it does and in which order, for an operator
to review before the config is ever used."""

from __future__ import annotations

from collections.abc import Sequence

from megapodd.safety.rules import RuleInstance


def _when(after_s: float) -> str:
    return "at once" if after_s == 0 else f"after {after_s:g} s, if still tripped"


def _rule_text(instances: Sequence[RuleInstance]) -> list[str]:
    first = instances[0]
    rule = first.rule
    kind = "latching" if rule.latch else "releases by itself once clear"
    lines = [f"{rule.id}  ({rule.severity}, {kind})"]
    if len(instances) > 1:
        lines.append(
            f"  one per {'point' if rule.scope == 'each_point' else 'device'}: "
            f"{len(instances)} ({instances[0].name} … {instances[-1].name}); the first:"
        )
    lines.append(f"  trips when: {first.describe()}")
    if rule.trip_when not in ("offline", "stale"):
        lines.append(
            f"  with no good reading for {first.stale_after_s:g} s: {rule.on_stale}"
        )
    stages = first.stages()
    if not stages and not first.alarm:
        lines.append("  does: nothing but the event (no actions)")
    if first.alarm:
        lines.append(f"  does: raises an alarm (a {rule.severity} event, on MQTT and megapodctl)")
    for stage in stages:
        only_if = f" (only if {stage['only_if']})" if "only_if" in stage else ""
        lines.append(
            f"  {_when(float(stage['after_s']))}: {stage['action']}: "  # type: ignore[arg-type]
            f"{stage['outputs']} = {stage['value']}{only_if}"
        )
    if rule.latch:
        lines.append(f"  stays latched until a local reset: megapodctl reset {rule.id}")
    return lines


def explain(instances: Sequence[RuleInstance]) -> str:
    """The rules, in config order, each with its instances and stages."""
    by_rule: dict[str, list[RuleInstance]] = {}
    for instance in instances:
        by_rule.setdefault(instance.rule.id, []).append(instance)
    blocks = ["\n".join(_rule_text(group)) for group in by_rule.values()]
    header = f"{len(by_rule)} rules, {len(instances)} instances"
    return "\n\n".join([header, *blocks]) + "\n"
