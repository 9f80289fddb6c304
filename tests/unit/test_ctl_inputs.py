"""What megapodctl takes on its command line (durations, --since) and the
events the daemon picks for `events --since/--severity/--follow`."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from megapodd.commands.requests import EventsRequest
from megapodd.commands.views import event_list
from megapodd.ctl.durations import parse_duration_s, since_parser
from megapodd.events import EventBus, Severity


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0), ("0.5s", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "-5m", "1e3", "nan", "inf", "0", "0s", "15 m m"])
def test_not_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration_s(text)


def test_since_a_duration_a_time_of_day_or_a_date() -> None:
    now = dt.datetime(2026, 3, 4, 14, 30, 0).timestamp()
    since = since_parser(lambda: now)
    assert since("10m") == now - 600
    assert since("14:05") == dt.datetime(2026, 3, 4, 14, 5).timestamp()
    assert since("9:05:30") == dt.datetime(2026, 3, 4, 9, 5, 30).timestamp()
    # A time still to come today means yesterday's.
    assert since("22:00") == dt.datetime(2026, 3, 3, 22, 0).timestamp()
    assert since("2026-03-01 08:00") == dt.datetime(2026, 3, 1, 8, 0).timestamp()
    assert (
        since("2026-03-01T08:00:00+00:00")
        == dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC).timestamp()
    )
    for wrong in ("yesterday", "25:00", "14:61", "2026-13-01"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a duration or time"):
            since(wrong)


def _bus() -> EventBus:
    clock = iter(float(t) for t in range(100, 200))
    bus = EventBus("boot-a", clock=lambda: next(clock))
    for n, severity in enumerate([Severity.INFO, Severity.WARNING, Severity.ALARM] * 3):
        bus.emit("test", severity, "here", f"event {n + 1}")
    return bus  # seq 1..9 at ts 100..108


def test_events_by_time_severity_and_position() -> None:
    bus = _bus()

    def seqs(**request: object) -> list[object]:
        picked = event_list(bus.recent, EventsRequest.model_validate(request), "boot-a")
        return [e["seq"] for e in picked]  # type: ignore[index]

    assert seqs() == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert seqs(count=2) == [8, 9]  # the newest
    assert seqs(since_ts=106) == [7, 8, 9]
    assert seqs(min_severity="warning") == [2, 3, 5, 6, 8, 9]
    assert seqs(min_severity="alarm", since_ts=104) == [6, 9]
    assert seqs(min_severity="critical") == []
    assert seqs(after_seq=7) == [8, 9]
    assert seqs(after_seq=7, boot_id="boot-a") == [8, 9]
    # After a restart seq starts again: a follower of the old boot gets all.
    assert seqs(after_seq=7, boot_id="boot-old") == [1, 2, 3, 4, 5, 6, 7, 8, 9]
