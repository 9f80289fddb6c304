"""The control tick survives a failing duty, says so once, and stops feeding
systemd's watchdog (on a real notify socket) while a vital duty keeps failing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from megapodd.control.tick import STATS_WINDOW, VITAL_FAILURES, ControlTick, TickDuty, Window
from megapodd.events import EventBus
from megapodd.sdnotify import Notifier

pytestmark = pytest.mark.looptime


class Flaky:
    def __init__(self) -> None:
        self.broken = False
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.broken:
            raise KeyError("r9s99")


def _pings(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            count += listener.recv(256).count(b"WATCHDOG=1")
        except BlockingIOError:
            return count


async def test_a_failing_duty_is_reported_and_a_vital_one_stops_the_watchdog(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        safety, other, events = Flaky(), Flaky(), EventBus()
        duties = [TickDuty(0.0, safety, "safety", vital=True), TickDuty(0.0, other, "feedback")]
        tick = ControlTick(0.1, notifier, duties, events)
        task = asyncio.create_task(tick.run())
        try:
            await asyncio.sleep(3.05)
            assert _pings(listener) == 4  # every second (half the interval), from t = 0
            other.broken = True
            await asyncio.sleep(3.0)
            assert _pings(listener) == 3  # a non-vital duty failing: still alive
            [failed] = [e for e in events.recent if e.type == "tick_duty_failed"]
            assert failed.data == {"duty": "feedback", "error": "KeyError", "vital": False}
            calls = safety.calls
            safety.broken = True
            await asyncio.sleep(VITAL_FAILURES * 0.1 + 3.0)
            assert safety.calls > calls + 30  # tried every tick
            assert _pings(listener) <= 1  # the ping of the tick before it had failed enough
            assert [e.data["duty"] for e in events.recent if e.type == "tick_duty_failed"] == [
                "feedback",
                "safety",
            ]
            safety.broken = False
            await asyncio.sleep(2.05)
            assert _pings(listener) == 2  # alive again
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            notifier.close()


class LoopClock:
    """The loop's clock plus the time that blocking work took: what a duty or
    another task spends without yielding shows as a jump of this clock."""

    def __init__(self) -> None:
        self.blocked_s = 0.0

    def __call__(self) -> float:
        return asyncio.get_running_loop().time() + self.blocked_s

    def block(self, seconds: float) -> None:
        self.blocked_s += seconds


async def test_the_tick_reports_its_lateness_and_the_work_of_each_duty() -> None:
    clock = LoopClock()
    durations: list[float] = []

    def loops() -> None:
        clock.block(0.004)  # every tick: 4 ms of loop work

    def feedback() -> None:
        clock.block(0.010)  # every 0.25 s: 10 ms

    duties = [TickDuty(0.0, loops, "control loops"), TickDuty(0.25, feedback, "output feedback")]
    tick = ControlTick(0.1, Notifier({}), duties, on_duration=durations.append, clock=clock)

    async def hog() -> None:  # another task blocks the loop for 30 ms once
        await asyncio.sleep(10.05)
        clock.block(0.030)

    task = asyncio.create_task(tick.run())
    hogging = asyncio.create_task(hog())
    try:
        await asyncio.sleep(20.0)
    finally:
        task.cancel()
        await asyncio.gather(task, hogging, return_exceptions=True)
    stats: Any = tick.stats()
    # 20 s of loop time and 1.6 s of blocking: the tick's clock ran 21.6 s.
    assert stats["tick_ms"] == 100.0 and stats["ticks"] == tick.ticks == 217
    late = stats["lateness"]
    # On time but for the one tick after the hog; the duties' own time is
    # taken off the next sleep, so it makes no tick late.
    assert late["p50_ms"] == 0.0 and late["p99_ms"] == 0.0
    assert late["max_ms"] == pytest.approx(30.0) and late["samples"] == 217
    work = stats["work"]
    assert work["p50_ms"] == pytest.approx(4.0)
    assert work["max_ms"] == pytest.approx(14.0)  # the ticks that ran both
    assert durations[0] == pytest.approx(0.014) and len(durations) == 217
    duty = stats["duties"]["output feedback"]
    assert duty["period_ms"] == 250.0 and duty["failures"] == 0
    # Due every 0.25 s, run by the 100 ms tick: every third tick.
    assert duty["p99_ms"] == pytest.approx(10.0) and duty["samples"] == 73
    assert stats["duties"]["control loops"]["samples"] == 217


async def test_the_timing_window_keeps_the_newest_ticks_and_the_worst_since_start() -> None:
    clock = LoopClock()
    slow = [True]

    def duty() -> None:
        if slow[0]:
            clock.block(0.2)  # the first tick overruns two periods
            slow[0] = False

    tick = ControlTick(0.1, Notifier({}), [TickDuty(0.0, duty, "loops")], clock=clock)
    task = asyncio.create_task(tick.run())
    try:
        await asyncio.sleep(0.05)
        first: Any = tick.stats()
        # Overran: the next tick starts at once, late by the overrun, and the
        # schedule resumes from there instead of bursting to catch up.
        assert first["lateness"]["max_ms"] == pytest.approx(100.0)
        await asyncio.sleep(STATS_WINDOW * 0.1 + 1.0)
        later: Any = tick.stats()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert later["lateness"]["samples"] == STATS_WINDOW
    assert later["lateness"]["max_ms"] == 0.0  # the stall has left the window
    assert later["lateness"]["max_since_start_ms"] == pytest.approx(100.0)
    assert later["work"]["max_since_start_ms"] == pytest.approx(200.0)


def test_window_percentiles_are_nearest_rank() -> None:
    window = Window(size=100)
    for ms in range(1, 201):  # only 101..200 stay
        window.add(ms / 1000)
    assert window.summary() == {
        "p50_ms": 150.0,
        "p99_ms": 199.0,
        "max_ms": 200.0,
        "max_since_start_ms": 200.0,
        "samples": 100,
    }
    assert Window().summary()["p99_ms"] == 0.0
