"""Formatting shared by every view: values with their units, times, and
tables that wrap instead of cutting (rich's default is to cut with "…")."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.table import Table

# °C and % stick to their number, so a wrapped cell never splits them.
_UNIT_SUFFIX = {
    "C": "°C",
    "°C": "°C",
    "lpm": " L/min",
    "kPa": " kPa",
    "%": "%",
    "W": " W",
    "A": " A",
    "V": " V",
}
STATE_STYLE = {"online": "green", "stale": "yellow", "offline": "bold red"}
SEVERITY_STYLE = {"info": "", "warning": "yellow", "alarm": "bold red", "critical": "bold red"}


def literal(answer: Any) -> Any:
    """megapodd's answer with every string escaped for rich's markup. Its text
    comes from devices and configs and may hold "[...]" (`[Errno 111]`), which
    rich would read as a style, or fail on. Views take answers passed through
    this, and add markup of their own."""
    if isinstance(answer, str):
        return escape(answer)
    if isinstance(answer, Mapping):
        return {escape(str(k)): literal(v) for k, v in answer.items()}
    if isinstance(answer, list | tuple):
        return [literal(v) for v in answer]
    return answer


def esc(value: object) -> str:
    """One value as literal text inside markup."""
    return escape(str(value))


def styled(text: str, style: str) -> str:
    """Console markup for `text` (already literal: see `literal`) in `style`."""
    return f"[{style}]{text}[/{style}]" if style else text


def unit_suffix(unit: str) -> str:
    return _UNIT_SUFFIX.get(unit, f" {unit}" if unit else "")


def number(value: object, unit: str = "") -> str:
    """A reading for people: floats to four significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        # Tenths, but hundredths for small values that have them (a PID term).
        text = f"{value:.1f}" if abs(value) >= 10 or value == round(value, 1) else f"{value:.2f}"
    else:
        text = str(value)
    return text + unit_suffix(unit)


def point_value(point: Mapping[str, Any], with_quality: bool = True) -> str:
    """A stored point: value and unit, and its quality unless good."""
    text = number(point.get("value"), str(point.get("unit", "")))
    quality = point.get("quality")
    if with_quality and quality != "good":
        text += f" ({quality})"
    return text


def clock(ts: float | None) -> str:
    """A wall-clock time in local time: HH:MM:SS today, with the date otherwise."""
    if not ts:
        return "—"
    stamp = time.localtime(ts)
    if time.strftime("%Y-%m-%d", stamp) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", stamp)
    return time.strftime("%Y-%m-%d %H:%M:%S", stamp)


def age(ts: float | None, now_s: float | None = None) -> str:
    if not ts:
        return "—"
    seconds = max(0.0, (now_s if now_s is not None else time.time()) - ts)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def table(title: str | None, *columns: str) -> Table:
    """A table whose cells wrap (fold inside long words) and are never cut.
    (No min_width: rich honours it past the console's width, and the
    terminal then cuts the table's right side off.)"""
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid
