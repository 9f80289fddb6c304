"""One supervisor per device: poll schedule, timeouts, backoff, device state.

The supervisor is the only caller of its driver's read path. It keeps the
PointStore's view of the device honest: points age to STALE when no good
reading arrives for their stale_after, and the device's state says whether the
daemon can currently hear it. Errors are handled by their type:
TransportError -> retry and reconnect with backoff; DeviceError -> report,
keep the link; ConfigurationError -> stop the fast retries, say why, and try
again only after a long pause (a replaced device, or a refusal an attacker
forged: an unauthenticated SNMPv3 Report looks just like a real one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from drivers.base import DeviceDriver, Point, PollGroup
from drivers.errors import ConfigurationError, DeviceError, DriverError, TransportError
from megapodd.backoff import Backoff
from megapodd.events import EventBus, Severity
from megapodd.store import DeviceState, PointStore

log = structlog.get_logger("megapodd.supervisor")

# Polls due within this margin run now: waiting for a sliver of time below the
# loop's clock resolution would spin without the clock moving.
_DUE_MARGIN_S = 1e-3

# Hook run with the driver right after each (re)connect, before polling starts:
# e.g. the CDU's watchdog timeout is written here.
OnConnect = Callable[[DeviceDriver], Awaitable[None]]
# A write the supervisor runs between polls, on the link it owns.
Action = Callable[[], Awaitable[None]]


def _describe(exc: BaseException) -> str:
    """An error's message, or its kind when it has none (TimeoutError)."""
    return str(exc) or type(exc).__name__


def _raise_if_cancelling() -> None:
    """Python 3.11's wait_for (inside pymodbus) can turn a cancellation into the
    error it was racing; a handler that caught that error must not loop on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    # Outer bounds around the driver's own per-request timeouts and retries:
    # they only catch a driver that hangs, so they must exceed its worst case.
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    action_timeout_s: float = 5.0
    # Consecutive failed polls after which a connected device counts as offline.
    offline_after_failures: int = 2
    # A point with no good reading for this many of its group's periods is stale.
    stale_periods: float = 3.0
    # After a configuration or authentication error: retry this rarely.
    config_retry_s: float = 60.0
    reconnect_initial_s: float = 0.5
    # Low enough that a device that comes back is seen within a few seconds.
    reconnect_max_s: float = 3.0


@dataclass(slots=True)
class _GroupSchedule:
    group: PollGroup
    due_s: float
    points: frozenset[str] = frozenset()
    failures: int = 0
    last_ok_s: float = float("-inf")


class DeviceSupervisor:
    def __init__(
        self,
        device_id: str,
        driver: DeviceDriver,
        store: PointStore,
        events: EventBus,
        settings: SupervisorSettings | None = None,
        on_connect: OnConnect | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.driver = driver
        self._store = store
        self._events = events
        self._settings = settings or SupervisorSettings()
        self._on_connect = on_connect
        self._wall_clock = wall_clock
        self._backoff = Backoff(
            initial_s=self._settings.reconnect_initial_s, max_s=self._settings.reconnect_max_s
        )
        self._schedules = [_GroupSchedule(g, 0.0) for g in driver.poll_groups()]
        self._wake = asyncio.Event()
        self._failure_streak = 0
        self._actions: dict[str, Action] = {}
        self._action_failures: dict[str, int] = {}
        self.polls_ok = 0
        self.polls_failed = 0
        store.add_device(device_id, driver.kind)

    def link_stats(self) -> dict[str, object]:
        """Poll counts and the driver's own counters (retries, frame errors...)."""
        stats: dict[str, object] = {"polls_ok": self.polls_ok, "polls_failed": self.polls_failed}
        for attribute in ("counters", "stats"):
            counters = getattr(self.driver, attribute, None)
            if counters is not None and dataclasses.is_dataclass(counters):
                stats.update(dataclasses.asdict(counters))  # type: ignore[arg-type]  # an instance
        return stats

    def poll_now(self) -> None:
        """Read every group at once (after a command, to confirm it quickly)."""
        now = asyncio.get_running_loop().time()
        for schedule in self._schedules:
            schedule.due_s = now
        self._wake.set()

    def submit(self, name: str, action: Action) -> None:
        """Run `action` between polls while connected; a newer one of the same name
        replaces a pending one (a heartbeat only needs to happen once)."""
        self._actions[name] = action
        self._wake.set()

    async def _run_actions(self) -> None:
        while self._actions:
            # The CDU's comm-watchdog heartbeat goes before queued writes.
            name = "heartbeat" if "heartbeat" in self._actions else next(iter(self._actions))
            action = self._actions.pop(name)
            try:
                async with asyncio.timeout(self._settings.action_timeout_s):
                    await action()
            except (TimeoutError, DriverError) as exc:
                streak = self._action_failures.get(name, 0) + 1
                self._action_failures[name] = streak
                if streak == 1:
                    self._events.emit(
                        "device_write_failed",
                        Severity.WARNING,
                        self.device_id,
                        f"{self.device_id}: {name} failed: {_describe(exc)}",
                        {"action": name},
                    )
                if isinstance(exc, TransportError | TimeoutError):
                    raise TransportError(f"{name} failed: {exc}") from exc
            else:
                if self._action_failures.pop(name, 0):
                    self._events.emit(
                        "device_write_recovered",
                        Severity.INFO,
                        self.device_id,
                        f"{self.device_id}: {name} succeeds again",
                        {"action": name},
                    )

    async def run(self) -> None:
        """Supervise forever.

        Nothing a device does may end this task: the TaskGroup would take the
        whole daemon (and every other device's safety) down with it."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    await self._connect()
                    await self._poll_until_lost(loop)
                except ConfigurationError as exc:
                    self._go_offline(f"configuration error: {exc}", Severity.ALARM)
                    # Not read again for a long while: its values are history now.
                    self._refresh_staleness(loop.time(), force=True)
                    await self._close_quietly()
                    await self._sleep_with_staleness(self._settings.config_retry_s)
                    continue
                except (DriverError, TimeoutError) as exc:
                    self._go_offline(f"link lost: {_describe(exc)}", Severity.WARNING)
                except Exception as exc:  # a driver bug must not end supervision
                    log.exception("supervisor_unexpected_error", device=self.device_id)
                    reason = f"unexpected {type(exc).__name__}: {exc}"
                    self._events.emit(
                        "supervisor_error",
                        Severity.ALARM,
                        self.device_id,
                        f"{self.device_id}: {reason} (a bug; the device is retried)",
                        {"error": type(exc).__name__},
                    )
                    self._go_offline(reason, Severity.ALARM)
                _raise_if_cancelling()
                await self._close_quietly()
                await self._sleep_with_staleness(self._backoff.next_delay_s())
        finally:
            await self._close_quietly()

    async def _close_quietly(self) -> None:
        try:
            await self.driver.close()
        except Exception:  # closing a broken link may fail; it is gone anyway
            log.debug("driver_close_failed", device=self.device_id, exc_info=True)

    async def _connect(self) -> None:
        async with asyncio.timeout(self._settings.connect_timeout_s):
            await self.driver.connect()
            if self._on_connect is not None:
                await self._on_connect(self.driver)

    async def _poll_until_lost(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for schedule in self._schedules:
            schedule.due_s = now
        while True:
            _raise_if_cancelling()
            await self._run_actions()
            now = loop.time()
            for schedule in self._schedules:
                if schedule.due_s <= now + _DUE_MARGIN_S:
                    schedule.due_s = max(schedule.due_s + schedule.group.period_s, now)
                    await self._poll_group(schedule, loop)
            self._refresh_staleness(loop.time())
            next_due = min(s.due_s for s in self._schedules)
            self._wake.clear()
            delay = next_due - loop.time()
            if delay > _DUE_MARGIN_S and not self._actions:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _poll_group(self, schedule: _GroupSchedule, loop: asyncio.AbstractEventLoop) -> None:
        name = schedule.group.name
        try:
            async with asyncio.timeout(self._settings.read_timeout_s):
                readings = await self.driver.read_group(name)
        except TimeoutError as exc:
            self._poll_failed(schedule, f"group {name!r} timed out")
            if self._failure_streak >= self._settings.offline_after_failures:
                raise TransportError(f"group {name!r} timed out") from exc
            return
        except TransportError as exc:
            self._poll_failed(schedule, f"group {name!r}: {exc}")
            if self._failure_streak >= self._settings.offline_after_failures:
                raise
            return
        except DeviceError as exc:
            # The device answered; the link is fine. Its points of this group age out.
            self._poll_failed(schedule, f"group {name!r}: device refused: {exc}")
            if schedule.failures == 1:  # the first of a streak; the rest go to the debug log
                self._events.emit(
                    "device_error",
                    Severity.WARNING,
                    self.device_id,
                    f"{self.device_id} refused reading {name!r}: {exc}",
                    {"group": name, "code": exc.code},
                )
            self._failure_streak = 0  # a refusal is not a lost link
            return
        self._poll_succeeded(schedule, readings, loop.time())

    def _poll_succeeded(
        self, schedule: _GroupSchedule, readings: Mapping[str, Point], now_s: float
    ) -> None:
        self.polls_ok += 1
        schedule.failures = 0
        schedule.last_ok_s = now_s
        if schedule.points != readings.keys():
            # A point the device no longer reports (its sensor went away) is stale now.
            gone = schedule.points - readings.keys()
            if gone:
                self._store.mark_stale(self.device_id, gone, now_s, 0.0)
            schedule.points = frozenset(readings)
        self._failure_streak = 0
        self._backoff.reset()
        self._store.update(self.device_id, readings, self._wall_clock(), now_s)
        if all(s.failures == 0 for s in self._schedules):
            self._set_state(DeviceState.ONLINE, "polling", Severity.INFO)

    def _poll_failed(self, schedule: _GroupSchedule, reason: str) -> None:
        self.polls_failed += 1
        schedule.failures += 1
        self._failure_streak += 1
        level = log.warning if schedule.failures == 1 else log.debug
        level("poll_failed", device=self.device_id, reason=reason, streak=schedule.failures)
        if self._store.device(self.device_id).state is DeviceState.ONLINE:
            self._set_state(DeviceState.STALE, reason, Severity.WARNING)

    def refresh_staleness(self, now_s: float) -> None:
        """Age points with no good reading for their stale_after (invariant 2).

        Called from the control tick too, so that points age while a read
        hangs or a reconnect takes long, not only between polls."""
        self._refresh_staleness(now_s)

    def _refresh_staleness(self, now_s: float, force: bool = False) -> None:
        for schedule in self._schedules:
            stale_after_s = 0.0 if force else schedule.group.period_s * self._settings.stale_periods
            # A group read well within stale_after refreshed all its good points.
            if not force and now_s - schedule.last_ok_s < stale_after_s:
                continue
            aged = self._store.mark_stale(self.device_id, schedule.points, now_s, stale_after_s)
            if aged and self._store.device(self.device_id).state is DeviceState.ONLINE:
                reason = f"no reading of group {schedule.group.name!r} for {stale_after_s:g} s"
                self._set_state(DeviceState.STALE, reason, Severity.WARNING)

    async def _sleep_with_staleness(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay_s
        # Keep ageing points while disconnected so nobody mistakes old data for live.
        while (remaining := deadline - loop.time()) > _DUE_MARGIN_S:
            await asyncio.sleep(min(remaining, 0.5))
            self._refresh_staleness(loop.time())

    def _go_offline(self, reason: str, severity: Severity) -> None:
        self._set_state(DeviceState.OFFLINE, reason, severity)

    def _set_state(self, state: DeviceState, reason: str, severity: Severity) -> None:
        previous = self._store.set_state(self.device_id, state, reason)
        if previous is state:
            return
        self._events.emit(
            f"device_{state.value}",
            severity,
            self.device_id,
            f"{self.device_id} is {state.value}: {reason}",
            {"previous": previous.value, "reason": reason},
        )
