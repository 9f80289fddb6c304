"""The control tick: the daemon's heartbeat.

Every tick it asks for the CDU comm-watchdog heartbeat when one is due and feeds
the systemd watchdog. Both come from here on purpose: if this loop hangs, the
CDU falls back to its failsafe speed (invariant 5) and systemd restarts the
daemon (invariant 6). The control loops, the safety engine's time-based
checks and the arbiter's retries run from this tick too.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from megapodd.events import EventBus, Severity
from megapodd.sdnotify import Notifier

log = structlog.get_logger(__name__)

# A vital duty that fails this many ticks in a row stops the systemd watchdog
# pings: a daemon whose safety engine keeps failing is a dead daemon.
VITAL_FAILURES = 3
# The timing figures cover the newest ticks: 60 s at the 100 ms tick.
STATS_WINDOW = 600


class Window:
    """The newest `size` samples of a duration (s), with percentiles in ms."""

    __slots__ = ("_samples", "max_s")

    def __init__(self, size: int = STATS_WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.max_s = 0.0  # since start

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self.max_s = max(self.max_s, seconds)

    def summary(self) -> dict[str, float | int]:
        """p50, p99 and max of the window (nearest rank), and the max since start."""
        ordered = sorted(self._samples)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(len(ordered) * q) - 1)] if ordered else 0.0

        return {
            "p50_ms": round(rank(0.50) * 1e3, 3),
            "p99_ms": round(rank(0.99) * 1e3, 3),
            "max_ms": round(ordered[-1] * 1e3 if ordered else 0.0, 3),
            "max_since_start_ms": round(self.max_s * 1e3, 3),
            "samples": len(ordered),
        }


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
    work: Window = field(default_factory=Window)  # time each run took


class ControlTick:
    def __init__(
        self,
        tick_s: float,
        notifier: Notifier,
        duties: Sequence[TickDuty],
        events: EventBus | None = None,
        on_duration: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._tick_s = tick_s
        # Schedules, lateness and work times; the loop's clock unless a test says.
        self._clock = clock
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
        self.lateness = Window()  # how long after its due time each tick started
        self.work = Window()  # time each tick spent on its duties

    def _feed(self) -> None:
        if any(d.vital and d.failures >= VITAL_FAILURES for d in self._duties):
            return  # let systemd restart us
        self._notifier.watchdog()

    def stats(self) -> dict[str, object]:
        """Timing of the newest ticks, for the status API (`pod.tick`)."""
        return {
            "tick_ms": round(self._tick_s * 1e3, 3),
            "ticks": self.ticks,
            "lateness": self.lateness.summary(),
            "work": self.work.summary(),
            "duties": {
                duty.name or f"duty {index}": {
                    "period_ms": round(duty.period_s * 1e3, 3),
                    "failures": duty.failures,
                    **duty.work.summary(),
                }
                for index, duty in enumerate(self._duties)
            },
        }

    def _run_duty(self, duty: TickDuty, clock: Callable[[], float]) -> None:
        started_s = clock()
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
                        + (
                            "; the systemd watchdog stops if it keeps failing)"
                            if duty.vital
                            else ")"
                        ),
                        {"duty": duty.name, "error": type(exc).__name__, "vital": duty.vital},
                    )
            return
        finally:
            duty.work.add(clock() - started_s)
        if duty.failures:
            log.info("tick_duty_recovered", duty=duty.name, failures=duty.failures)
            duty.failures = 0

    async def run(self) -> None:
        clock = self._clock or asyncio.get_running_loop().time
        next_tick_s = clock()
        while True:
            now_s = clock()
            # Woken a hair early by the loop's clock resolution counts as on time.
            self.lateness.add(max(0.0, now_s - next_tick_s))
            self.ticks += 1
            for duty in self._duties:
                if now_s >= duty.next_s:
                    duty.next_s = now_s + duty.period_s
                    self._run_duty(duty, clock)
            worked_s = clock() - now_s
            self.work.add(worked_s)
            if self._on_duration is not None:
                self._on_duration(worked_s)
            # Fixed-rate schedule; after a stall, resume from now rather than burst.
            next_tick_s = max(next_tick_s + self._tick_s, now_s)
            await asyncio.sleep(next_tick_s - clock())
