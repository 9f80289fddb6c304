"""megapodctl power: the budget line, the phases (a stale one said so), the caps
with their owner and reason; and the watch's power line."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from megapodd.ctl.views.power import power_view
from megapodd.ctl.views.text import literal

ANSWER: dict[str, Any] = {
    "budget_w": 65280.0,
    "min_budget_w": 16000.0,
    "max_budget_w": 81600.0,
    "pod_power_w": 66900.0,
    "headroom_w": -1620.0,
    "phase_limit_pct": 80.0,
    "release_s": 60.0,
    "phases": [
        {"pdu": "pdu-r1a", "phase": 1, "current_a": 88.7, "limit_a": 100.0, "breaker_a": 125.0,
         "load_pct": 88.7, "power_w": 20400.0, "stale": False},
        {"pdu": "pdu-r2a", "phase": 1, "current_a": None, "limit_a": 100.0, "breaker_a": 125.0,
         "load_pct": None, "power_w": 11500.0, "stale": True},
    ],
    "caps": [
        {"server": "r2s01", "cap_w": 5580.0, "owner": "loop", "reason": "pod budget",
         "priority": 0, "since_s": 42.0, "budget_cap_w": 5580.0},
        {"server": "r2s02", "cap_w": 3000.0, "owner": "interlock", "reason": "interlock gpu-hot",
         "priority": 0, "since_s": None, "budget_cap_w": 5580.0},
    ],
}  # fmt: skip


def _text(answer: dict[str, Any]) -> str:
    console = Console(width=100, file=io.StringIO(), color_system=None)
    console.print(power_view(literal(answer)))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_the_power_view_says_budget_headroom_phases_and_caps() -> None:
    text = _text(ANSWER)
    assert "budget 65.3 kW" in text and "headroom -1.6 kW" in text
    assert "88.7 %" in text and "stale: servers capped to their share" in text
    assert "r2s01" in text and "pod budget" in text and "42 s" in text
    assert "interlock gpu-hot" in text


def test_no_budget_and_no_caps_are_said_so() -> None:
    text = _text({**ANSWER, "budget_w": None, "headroom_w": None, "caps": []})
    assert "no pod budget (phases only)" in text and "no server is capped" in text
