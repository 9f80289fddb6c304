"""One supervisor per device: the only door to it.

The supervisor is the only task that touches its driver. Polls, writes with
their read-back, multi-step operations and heartbeats all run here, one at a
time, so an operation is atomic with respect to the device: nothing can slip
between a write and its read-back, or between the two writes of a pump
hand-back. Operations wait in a queue ordered by priority (interlock actions,
then the watchdog heartbeat, technician actions, fleet actions, loop writes;
polls last) and each returns a future.

It keeps the PointStore's view of the device honest: points age to STALE when
no good reading arrives for their stale_after, and the device's state says
whether the daemon can currently hear it. Errors are handled by their type:
TransportError -> retry and reconnect with backoff; DeviceError -> report,
keep the link; ConfigurationError -> stop the fast retries, say why, and try
again only after a long pause (a replaced device, or a refusal an attacker
forged: an unauthenticated SNMPv3 Report looks just like a real one).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from drivers.base import DeviceDriver, PlausibleLookup, Point, PollGroup
from drivers.errors import ConfigurationError, DeviceError, DriverError, TransportError
from megapodd.backoff import Backoff
from megapodd.events import EventBus, Severity
from megapodd.plausibility import PlausibilityGate
from megapodd.store import DeviceState, PointStore

log = structlog.get_logger("megapodd.supervisor")

# Polls due within this margin run now: waiting for a sliver of time below the
# loop's clock resolution would spin without the clock moving.
_DUE_MARGIN_S = 1e-3

D = TypeVar("D", bound=DeviceDriver)
T = TypeVar("T")

# Hook run with the driver right after each (re)connect, before polling starts:
# e.g. the CDU's watchdog timeout is written here.
OnConnect = Callable[[D], Awaitable[None]]
# Something done to the device: gets the driver, runs on the supervisor's task.
OperationFn = Callable[[D], Awaitable[T]]

# Runs the items of several queued operations as one operation (see Batch);
# returns one outcome per item, in order.
BatchFn = Callable[[D, Sequence[Any]], Awaitable[Sequence[Any]]]

# How long a caller waits, beyond the operation's own bound, for its turn.
QUEUE_WAIT_S = 5.0


class OpPriority(enum.IntEnum):
    """The order of a device's queue: lower runs first."""

    INTERLOCK = 0
    HEARTBEAT = 1
    TECHNICIAN = 2
    FLEET = 3
    LOOP = 4
    POLL = 5  # polls are the supervisor's own schedule; anything queued goes first


@dataclass(frozen=True, slots=True)
class Batch(Generic[D]):
    """How an operation may run together with others: when the supervisor
    takes a batchable operation off the queue, every other queued one with the
    same `key` and the same priority joins it (never one of another priority:
    a batch runs at its priority's turn), and `run` gets the driver and every
    operation's `item` at once, as one operation (atomic to the device like
    any other). Each future gets its own outcome.

    If the batch fails with a DeviceError (the device refused or did not get
    there) or an unexpected error, its operations are queued again, unbatched,
    and run one by one with their own functions: one bad item does not fail
    the rest, and each caller gets its own item's outcome. A lost link or a
    timeout fails each of them, as it would fail a single operation (the
    device is reconnected; a write that fails like this is retried by its
    owner)."""

    key: str
    item: Any
    run: BatchFn[D]


class OperationTimeout(TransportError):
    """The device did not get to (or through) an operation within its time."""


@dataclass(eq=False, slots=True)
class _Operation:
    name: str
    priority: OpPriority
    fn: Callable[[Any], Awaitable[Any]]
    future: asyncio.Future[Any]
    key: str | None
    seq: int
    superseded: bool = False
    batch: Batch[Any] | None = None

    def sort_key(self) -> tuple[int, int]:
        return (self.priority, self.seq)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """For futures nobody awaits: take the exception so asyncio does not log it."""
    if not future.cancelled():
        future.exception()


def _follow(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Give `target` the outcome of `source` (a coalesced operation)."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


@dataclass(slots=True)
class _Queue:
    heap: list[tuple[tuple[int, int], _Operation]] = field(default_factory=list)
    by_key: dict[str, _Operation] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def push(self, op: _Operation) -> None:
        heapq.heappush(self.heap, (op.sort_key(), op))

    def pop(self) -> _Operation | None:
        while self.heap:
            _, op = heapq.heappop(self.heap)
            if op.superseded or op.future.done():
                continue  # replaced by a newer one, or its caller gave up
            if op.key is not None and self.by_key.get(op.key) is op:
                del self.by_key[op.key]
            return op
        return None

    def take_batch(self, first: _Operation) -> list[_Operation]:
        """Take off the queue every other live operation batched with `first`
        (same batch key, same priority), in queue order."""
        batch = first.batch
        if batch is None:
            return []
        taken: list[_Operation] = []
        kept: list[tuple[tuple[int, int], _Operation]] = []
        for entry in self.heap:
            op = entry[1]
            if (
                op.batch is not None
                and op.batch.key == batch.key
                and op.priority == first.priority
                and not op.superseded
                and not op.future.done()
            ):
                taken.append(op)
                if op.key is not None and self.by_key.get(op.key) is op:
                    del self.by_key[op.key]
            else:
                kept.append(entry)
        if taken:
            heapq.heapify(kept)
            self.heap = kept
        return sorted(taken, key=_Operation.sort_key)

    def requeue(self, op: _Operation) -> None:
        """Put a taken operation back, in its old place."""
        if op.key is not None and op.key not in self.by_key:
            self.by_key[op.key] = op  # a newer one with its key may have come meanwhile
        self.push(op)

    def __bool__(self) -> bool:
        return any(not op.superseded and not op.future.done() for _, op in self.heap)

    def cancel_all(self) -> None:
        for _, op in self.heap:
            op.future.cancel()
        self.heap.clear()
        self.by_key.clear()


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


def poll_phases(count: int, in_step: int) -> list[float]:
    """Phases for `count` devices of one family, at most `in_step` sharing one.

    Fully spread phases cost CPU: every exchange then wakes the event loop (and
    the peer) on its own, where devices in step share a wake-up; measured on
    the full pod, 144 BMCs on 144 phases took 5-8 pp more of a core (daemon)
    and 3-7 pp (simulator) than on one. A few devices per phase keep the
    bursts short and the wake-ups shared (bench/results/loops.md)."""
    slots = max(1, math.ceil(count / max(1, in_step)))
    return [(index % slots) / slots for index in range(count)]


@dataclass(slots=True)
class _GroupSchedule:
    group: PollGroup
    due_s: float
    points: frozenset[str] = frozenset()
    failures: int = 0
    last_ok_s: float = float("-inf")


class DeviceSupervisor(Generic[D]):
    def __init__(
        self,
        device_id: str,
        driver: D,
        store: PointStore,
        events: EventBus,
        settings: SupervisorSettings | None = None,
        on_connect: OnConnect[D] | None = None,
        wall_clock: Callable[[], float] = time.time,
        plausible: PlausibleLookup | None = None,
        phase: float = 0.0,
    ) -> None:
        self.device_id = device_id
        if not 0.0 <= phase < 1.0:
            raise ValueError(f"poll phase {phase} is not a fraction of the period in [0, 1)")
        # Where in each group's period this device's polls fall (see _next_due_s).
        self.phase = phase
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
        self._queue = _Queue()
        self._op_failures: dict[str, int] = {}
        self._connect_listeners: list[Callable[[], None]] = []
        self.polls_ok = 0
        self.polls_failed = 0
        # Every reading passes this gate before the store sees it (megapodd/plausibility.py).
        self._gate = PlausibilityGate(device_id, plausible, events) if plausible else None
        self.unconfirmed = 0  # readings the driver could not confirm (kept at the last good)
        store.add_device(device_id, driver.kind)

    @property
    def kind(self) -> str:
        return self.driver.kind

    def link_stats(self) -> dict[str, int]:
        """Poll counts and the driver's own link counters (retries, frame errors...)."""
        return {
            "polls_ok": self.polls_ok,
            "polls_failed": self.polls_failed,
            "implausible": self._gate.implausible if self._gate is not None else 0,
            "unconfirmed": self.unconfirmed,
            **self.driver.link_stats(),
        }

    def add_connect_listener(self, listener: Callable[[], None]) -> None:
        """Told each time the device is connected, before its first poll: a
        device that restarted may have lost what was written to it."""
        self._connect_listeners.append(listener)

    def poll_now(self) -> None:
        """Read every group at once (after a command, to confirm it quickly)."""
        now = asyncio.get_running_loop().time()
        for schedule in self._schedules:
            schedule.due_s = now
        self._wake.set()

    # -- the door ------------------------------------------------------------

    def submit(
        self,
        name: str,
        priority: OpPriority,
        fn: OperationFn[D, T],
        *,
        key: str | None = None,
        background: bool = False,
        batch: Batch[D] | None = None,
    ) -> asyncio.Future[T]:
        """Queue an operation on this device; the future has its result.

        Operations run one at a time on this supervisor's task, highest
        priority first, while the device is connected. A newer operation with
        the same `key` replaces a pending one (a heartbeat, or "bring this
        output to its winner", needs to happen once), takes the higher of the
        two priorities, and both futures get its outcome. `background`: nobody
        awaits the future (its failure is the supervisor's event). `batch`:
        this operation may run together with others (Batch); `fn` is how it
        runs alone."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        op = _Operation(name, priority, fn, future, key, next(self._queue.counter), batch=batch)
        if key is not None and (old := self._queue.by_key.get(key)) is not None:
            old.superseded = True
            op.priority = min(op.priority, old.priority)
            future.add_done_callback(functools.partial(_follow, target=old.future))
        if key is not None:
            self._queue.by_key[key] = op
        if background:
            future.add_done_callback(_retrieve)
        self._queue.push(op)
        self._wake.set()
        return future

    async def execute(
        self,
        name: str,
        priority: OpPriority,
        fn: OperationFn[D, T],
        *,
        key: str | None = None,
        timeout_s: float | None = None,
        batch: Batch[D] | None = None,
    ) -> T:
        """Queue an operation and wait for its outcome, within an outer timeout
        (its turn in the queue and the operation's own bound). An operation
        that has not started when the time is up is taken off the queue."""
        if timeout_s is None:
            timeout_s = self._settings.action_timeout_s + QUEUE_WAIT_S
        future = self.submit(name, priority, fn, key=key, batch=batch)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            future.cancel()  # if it is still queued, it never runs
            raise OperationTimeout(
                f"{self.device_id}: {name} not done within {timeout_s:g} s"
            ) from None

    async def _run_operations(self) -> None:
        while (op := self._queue.pop()) is not None:
            if op.batch is not None and (others := self._queue.take_batch(op)):
                await self._run_batch(op.batch, [op, *others])
            else:
                await self._run_operation(op)

    async def _run_batch(self, batch: Batch[Any], ops: list[_Operation]) -> None:
        name = f"{ops[0].name} (+{len(ops) - 1} batched)"
        try:
            async with asyncio.timeout(self._settings.action_timeout_s):
                results = await batch.run(self.driver, [op.batch.item for op in ops if op.batch])
        except (TimeoutError, TransportError) as exc:
            for op in ops:
                self._op_failed(op, exc)
                if not op.future.done():
                    op.future.set_exception(
                        OperationTimeout(f"{self.device_id}: {op.name} timed out")
                        if isinstance(exc, TimeoutError)
                        else exc
                    )
            raise TransportError(f"{name} failed: {_describe(exc)}") from exc
        except asyncio.CancelledError:
            for op in ops:
                op.future.cancel()
            raise
        except Exception as exc:  # refused, or a bug: each on its own, in order
            log.info(
                "batch_failed_one_by_one",
                device=self.device_id,
                operation=name,
                error=_describe(exc),
                exc_info=not isinstance(exc, DriverError),
            )
            for op in ops:
                op.batch = None
                self._queue.requeue(op)
            return
        if len(results) != len(ops):  # a bug in the batch: fail them, say so
            self._events.emit(
                "supervisor_error",
                Severity.ALARM,
                self.device_id,
                f"{self.device_id}: {name}: {len(results)} outcomes for {len(ops)} operations",
                {"operation": name, "error": "BatchMismatch"},
            )
            for op in ops:
                if not op.future.done():
                    op.future.set_exception(RuntimeError(f"{op.name}: batch gave no outcome"))
            return
        for op, result in zip(ops, results, strict=True):
            self._op_succeeded(op, result)

    async def _run_operation(self, op: _Operation) -> None:
        try:
            async with asyncio.timeout(self._settings.action_timeout_s):
                result = await op.fn(self.driver)
        except (TimeoutError, DriverError) as exc:
            self._op_failed(op, exc)
            if not op.future.done():
                op.future.set_exception(
                    OperationTimeout(f"{self.device_id}: {op.name} timed out")
                    if isinstance(exc, TimeoutError)
                    else exc
                )
            if isinstance(exc, TransportError | TimeoutError):
                raise TransportError(f"{op.name} failed: {_describe(exc)}") from exc
            return
        except asyncio.CancelledError:
            op.future.cancel()
            raise
        except Exception as exc:  # a bug in an operation must not end supervision
            log.exception("operation_failed", device=self.device_id, operation=op.name)
            self._events.emit(
                "supervisor_error",
                Severity.ALARM,
                self.device_id,
                f"{self.device_id}: {op.name} failed unexpectedly: {type(exc).__name__}: {exc}",
                {"operation": op.name, "error": type(exc).__name__},
            )
            if not op.future.done():
                op.future.set_exception(exc)
            return
        self._op_succeeded(op, result)

    def _op_succeeded(self, op: _Operation, result: object) -> None:
        if not op.future.done():
            op.future.set_result(result)
        if self._op_failures.pop(op.name, 0):
            self._events.emit(
                "device_write_recovered",
                Severity.INFO,
                self.device_id,
                f"{self.device_id}: {op.name} succeeds again",
                {"action": op.name},
            )

    def _op_failed(self, op: _Operation, exc: BaseException) -> None:
        streak = self._op_failures.get(op.name, 0) + 1
        self._op_failures[op.name] = streak
        if streak == 1:  # the first of a streak; the rest go to the debug log
            self._events.emit(
                "device_write_failed",
                Severity.WARNING,
                self.device_id,
                f"{self.device_id}: {op.name} failed: {_describe(exc)}",
                {"action": op.name},
            )
        else:
            log.debug("operation_failed_again", device=self.device_id, operation=op.name)

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
            self._queue.cancel_all()  # whoever waits on one must not wait forever
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
        if self._gate is not None:
            self._gate.forget_counters()
        for listener in self._connect_listeners:
            listener()  # queues work; it runs before the first poll

    async def _poll_until_lost(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for schedule in self._schedules:
            schedule.due_s = now
        while True:
            _raise_if_cancelling()
            await self._run_operations()
            now = loop.time()
            for schedule in self._schedules:
                if schedule.due_s <= now + _DUE_MARGIN_S:
                    schedule.due_s = self._next_due_s(schedule, now)
                    await self._poll_group(schedule, loop)
                    # Queued operations never wait behind more than one group read.
                    await self._run_operations()
            self._refresh_staleness(loop.time())
            next_due = min(s.due_s for s in self._schedules)
            self._wake.clear()
            delay = next_due - loop.time()
            if delay > _DUE_MARGIN_S and not self._queue:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _next_due_s(self, schedule: _GroupSchedule, now_s: float) -> float:
        """The poll after this one: the next slot of this device's grid
        (phase + k periods on the loop's clock) after this poll's due time.

        Devices of one family connect together and their lines answer alike;
        without the grid they poll in step for ever, and every exchange comes
        back as one burst of callbacks (144 BMCs: 10-15 ms that the control
        tick waits behind). Spread phases keep each burst a few devices wide.
        No interval is longer than a period (readings' ages, and what counts
        as stale, stay as they were): after a connect the second poll comes
        sooner, and a poll that fell behind runs at once, once, then the grid goes on."""
        period_s = schedule.group.period_s
        offset_s = self.phase * period_s

        def slot_after(time_s: float) -> float:
            periods = math.floor((time_s + _DUE_MARGIN_S - offset_s) / period_s)
            return offset_s + (periods + 1) * period_s

        slot_s = slot_after(schedule.due_s)
        # Behind (this poll runs late): the one after it comes on the next slot.
        return slot_s if slot_s > now_s else slot_after(now_s)

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
            if schedule.points:  # new names after a firmware update or a new SDR: say so
                log.warning(
                    "device_points_changed",
                    device=self.device_id,
                    group=schedule.group.name,
                    added=sorted(readings.keys() - schedule.points)[:20],
                    gone=sorted(gone)[:20],
                    detail="points no longer reported turn stale (and leave the metrics)",
                )
            schedule.points = frozenset(readings)
        self._failure_streak = 0
        self._backoff.reset()
        reasons: dict[str, str] = {}
        if self._gate is not None:
            readings, reasons = self._gate.check(readings, now_s)
        self.unconfirmed += sum(1 for point in readings.values() if point.unconfirmed)
        self._store.update(self.device_id, readings, self._wall_clock(), now_s, reasons)
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
