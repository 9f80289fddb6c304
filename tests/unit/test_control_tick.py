"""The control tick survives a failing duty, says so once, and stops feeding
systemd's watchdog (on a real notify socket) while a vital duty keeps failing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from megapodd.control.tick import VITAL_FAILURES, ControlTick, TickDuty
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
