"""The events table (`events`) and one event as a line (`events --follow`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from megapodd.ctl.views.text import SEVERITY_STYLE, clock, styled, table


def events_table(
    events: Sequence[Mapping[str, Any]], title: str = "events", seq: bool = True
) -> Table:
    """Events oldest first; `seq` (the daemon's numbering) for those who follow up."""
    grid = table(title, *(["seq"] if seq else []), "time", "severity", "source", "message")
    for event in events:
        severity = str(event["severity"])
        grid.add_row(
            *([str(event["seq"])] if seq else []),
            clock(event["ts"]),
            styled(severity, SEVERITY_STYLE.get(severity, "")),
            str(event["source"]),
            str(event["message"]),
        )
    return grid


def event_line(event: Mapping[str, Any], seq: bool = True) -> str:
    """One event on one line (markup), as `events --follow` and the live view print them."""
    severity = str(event["severity"])
    return (
        (f"{event['seq']} " if seq else "") + f"{clock(event['ts'])} "
        f"{styled(severity, SEVERITY_STYLE.get(severity, ''))} {event['source']}: "
        f"{event['message']}"
    )
