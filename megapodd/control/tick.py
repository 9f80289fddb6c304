"""The control tick: the daemon's heartbeat.

Every tick it asks for the CDU comm-watchdog heartbeat when one is due and feeds
the systemd watchdog. Both come from here on purpose: if this loop hangs, the
CDU falls back to its failsafe speed (invariant 5) and systemd restarts the
daemon (invariant 6). Control loops will run from this tick too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from megapodd.sdnotify import Notifier


@dataclass(slots=True)
class TickDuty:
    """A periodic duty of the tick: call `action` every `period_s`."""

    period_s: float
    action: Callable[[], None]
    next_s: float = 0.0


class ControlTick:
    def __init__(
        self,
        tick_s: float,
        notifier: Notifier,
        duties: Sequence[TickDuty],
        on_duration: Callable[[float], None] | None = None,
    ) -> None:
        self._tick_s = tick_s
        self._on_duration = on_duration  # told how long each tick's duties took (metrics)
        self._notifier = notifier
        self._duties = list(duties)
        if notifier.watchdog_interval_s is not None:
            # systemd's advice: ping at half the interval at least.
            self._duties.append(TickDuty(notifier.watchdog_interval_s / 2, self._feed))
        self.ticks = 0

    def _feed(self) -> None:
        self._notifier.watchdog()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick_s = loop.time()
        while True:
            now_s = loop.time()
            self.ticks += 1
            started_s = time.perf_counter()
            for duty in self._duties:
                if now_s >= duty.next_s:
                    duty.next_s = now_s + duty.period_s
                    duty.action()
            if self._on_duration is not None:
                self._on_duration(time.perf_counter() - started_s)
            # Fixed-rate schedule; after a stall, resume from now rather than burst.
            next_tick_s = max(next_tick_s + self._tick_s, now_s)
            await asyncio.sleep(next_tick_s - loop.time())
