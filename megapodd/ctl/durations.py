"""Durations and times on the command line: `--for 15m`, `--since 10m`,
`--since 14:05`, `--timeout 2s`. Each parser raises ArgumentTypeError with
the one line argparse prints (exit 2)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
from collections.abc import Callable

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([smhd]?)$")
_CLOCK = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")


def parse_duration_s(text: str) -> float:
    """'90s', '15m', '2h', '1d' or plain seconds; positive."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90s, 15m or 2h)")
    seconds = float(match[1]) * _UNITS_S[match[2] or "s"]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be more than 0: {text!r}")
    return seconds


def since_parser(now: Callable[[], float] = time.time) -> Callable[[str], float]:
    """A parser of `--since`: a duration back from now (10m), a time of day in
    local time (14:05, 14:05:30: today, or yesterday if that is still to come),
    or a date and time (2025-06-01 14:05, ISO 8601 with an optional zone).
    Gives the wall-clock time (epoch s)."""

    def parse(text: str) -> float:
        text = text.strip()
        now_s = now()
        if _DURATION.match(text):
            return now_s - parse_duration_s(text)
        try:
            if _CLOCK.match(text):
                hour, minute, *second = (int(part) for part in text.split(":"))
                clock = dt.time(hour, minute, second[0] if second else 0)
                today = dt.datetime.fromtimestamp(now_s).date()
                at = dt.datetime.combine(today, clock).timestamp()
                return at - 86400.0 if at > now_s else at
            return dt.datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a duration or time: {text!r} (try 10m, 2h, 14:05 or '2025-06-01 14:05')"
            ) from None

    return parse
