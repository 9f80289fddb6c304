"""The control tick: the daemon's heartbeat.

Every tick it asks for the CDU comm-watchdog heartbeat when one is due and feeds
the systemd watchdog. Both come from here on purpose: if this loop hangs, the
CDU falls back to its failsafe speed (invariant 5) and systemd restarts the
daemon (invariant 6). The control loops, the safety engine's time-based
checks and the arbiter's retries run from this tick too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from megapodd.events import EventBus, Severity
from megapodd.sdnotify import Notifier

log = structlog.get_logger(__name__)

# A vital duty that fails this many ticks in a row stops the systemd watchdog
# pings: a daemon whose safety engine keeps failing is a dead daemon.
VITAL_FAILURES = 3


@dataclass(slots=True)
class TickDuty:
    """A periodic duty of the tick: call `action` every `period_s`.

    A duty that raises is reported and tried again next time; the others run
    on. `vital` duties (the safety engine, the loops) must work for the daemon
    to count as alive."""

    period_s: float
    action: Callable[[], None]
    name: str = ""
    vital: bool = False
    next_s: float = 0.0
    failures: int = 0  # in a row


class ControlTick:
    def __init__(
        self,
        tick_s: float,
        notifier: Notifier,
        duties: Sequence[TickDuty],
        events: EventBus | None = None,
        on_duration: Callable[[float], None] | None = None,
    ) -> None:
        self._tick_s = tick_s
        self._on_duration = on_duration  # told how long each tick's duties took (metrics)
        self._notifier = notifier
        self._events = events
        self._duties = list(duties)
        if notifier.watchdog_interval_s is not None:
            # systemd's advice: ping at half the interval at least.
            self._duties.append(
                TickDuty(notifier.watchdog_interval_s / 2, self._feed, "systemd watchdog")
            )
        self.ticks = 0

    def _feed(self) -> None:
        if any(d.vital and d.failures >= VITAL_FAILURES for d in self._duties):
            return  # let systemd restart us
        self._notifier.watchdog()

    def _run_duty(self, duty: TickDuty) -> None:
        try:
            duty.action()
        except Exception as exc:  # a bug in one duty must not stop the others
            duty.failures += 1
            if duty.failures == 1:
                log.exception("tick_duty_failed", duty=duty.name)
                if self._events is not None:
                    self._events.emit(
                        "tick_duty_failed",
                        Severity.CRITICAL if duty.vital else Severity.ALARM,
                        "megapodd",
                        f"control tick: {duty.name or 'a duty'} failed: "
                        f"{type(exc).__name__}: {exc} (tried again every tick"
                        + ("; the systemd watchdog stops if it keeps failing)" if duty.vital
                           else ")"),
                        {"duty": duty.name, "error": type(exc).__name__, "vital": duty.vital},
                    )
            return
        if duty.failures:
            log.info("tick_duty_recovered", duty=duty.name, failures=duty.failures)
            duty.failures = 0

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
                    self._run_duty(duty)
            if self._on_duration is not None:
                self._on_duration(time.perf_counter() - started_s)
            # Fixed-rate schedule; after a stall, resume from now rather than burst.
            next_tick_s = max(next_tick_s + self._tick_s, now_s)
            await asyncio.sleep(next_tick_s - loop.time())
