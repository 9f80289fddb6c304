"""Supervisor state machine on the loop clock (looptime): a scripted driver
stands in for a device so that timing can be checked exactly."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
import structlog

from drivers.base import DeviceKind, Point, PollGroup, Quality
from drivers.errors import ConfigurationError, DeviceError, TransportError
from megapodd.events import EventBus
from megapodd.store import DeviceState, PointStore
from megapodd.supervisor import (
    Batch,
    DeviceSupervisor,
    OperationTimeout,
    OpPriority,
    SupervisorSettings,
    poll_phases,
)

pytestmark = pytest.mark.looptime


@dataclass
class ScriptedDriver:
    """Answers reads with a temperature; `fail` decides what goes wrong."""

    fail: Exception | None = None
    refuse_connect: Exception | None = None
    reads: list[float] = field(default_factory=list)
    connects: int = 0
    value: float = 30.0

    @property
    def kind(self) -> DeviceKind:
        return DeviceKind.CDU

    def link_stats(self) -> Mapping[str, int]:
        return {"requests": len(self.reads), "retries": 0, "timeouts": 0, "frame_errors": 0,
                "device_errors": 0}

    def poll_groups(self) -> Sequence[PollGroup]:
        return (PollGroup("fast", 1.0),)

    async def connect(self) -> None:
        self.connects += 1
        if self.refuse_connect is not None:
            raise self.refuse_connect

    async def close(self) -> None:
        return None

    async def read_group(self, group: str) -> Mapping[str, Point]:
        self.reads.append(asyncio.get_running_loop().time())
        if self.fail is not None:
            raise self.fail
        return {"supply_temp_c": Point(self.value, "degC")}


async def _run(supervisor: DeviceSupervisor[ScriptedDriver], seconds: float) -> None:
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _make(
    driver: ScriptedDriver,
) -> tuple[DeviceSupervisor[ScriptedDriver], PointStore, EventBus]:
    store, events = PointStore(), EventBus()
    supervisor = DeviceSupervisor("dev", driver, store, events, SupervisorSettings(1.0, 1.5, 1.5))
    return supervisor, store, events


async def test_polls_at_the_group_period_and_goes_online() -> None:
    driver = ScriptedDriver()
    supervisor, store, events = _make(driver)
    await _run(supervisor, 10.05)
    start = driver.reads[0]
    assert [round(t - start, 3) for t in driver.reads] == [float(i) for i in range(11)]
    assert store.device("dev").state is DeviceState.ONLINE
    assert [e.type for e in events.recent] == ["device_online"]


async def test_a_phase_puts_the_polls_after_the_first_on_the_devices_own_slots() -> None:
    driver = ScriptedDriver()
    store, events = PointStore(), EventBus()
    settings = SupervisorSettings(1.0, 1.5, 1.5)
    supervisor = DeviceSupervisor("dev", driver, store, events, settings, phase=0.25)
    start = asyncio.get_running_loop().time()
    await _run(supervisor, 4.5)
    # The first poll runs at connect; the rest at 0.25 s past each period's start.
    assert [round(t - start, 3) for t in driver.reads] == [0.0, 0.25, 1.25, 2.25, 3.25, 4.25]


async def test_a_family_with_spread_phases_never_polls_in_step() -> None:
    drivers = [ScriptedDriver() for _ in range(8)]
    store, events = PointStore(), EventBus()
    supervisors = [
        DeviceSupervisor(
            f"dev{i}", d, store, events, SupervisorSettings(1.0, 1.5, 1.5), phase=i / 8
        )
        for i, d in enumerate(drivers)
    ]
    tasks = [asyncio.create_task(s.run()) for s in supervisors]
    await asyncio.sleep(5.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Every device still polls once a period ...
    for driver in drivers:
        gaps = [b - a for a, b in itertools.pairwise(driver.reads[1:])]
        assert gaps and all(abs(gap - 1.0) < 1e-6 for gap in gaps)
    # ... and after the first polls at connect, never two devices at one time.
    later = sorted(round(t % 1.0, 3) for d in drivers for t in d.reads[1:])
    assert sorted(set(later)) == [round(i / 8, 3) for i in range(8)]


async def test_a_poll_that_overran_its_period_goes_to_the_nearest_slot() -> None:
    driver = ScriptedDriver()
    supervisor, _, _ = _make(driver)
    slow = True
    read_group = driver.read_group

    async def slow_once(group: str) -> Mapping[str, Point]:
        nonlocal slow
        if slow:  # the first read takes 1.3 periods (a slow line, retries)
            slow = False
            await asyncio.sleep(1.3)
        return await read_group(group)

    driver.read_group = slow_once  # type: ignore[method-assign]
    start = asyncio.get_running_loop().time()
    await _run(supervisor, 3.5)
    # The poll due at 1.0 s is found late at 1.3 s: it runs at once, and the
    # grid holds after it.
    assert [round(t - start, 3) for t in driver.reads] == [1.3, 1.3, 2.0, 3.0]


async def test_a_poll_periods_behind_runs_once_at_once_not_once_per_missed_period() -> None:
    driver = ScriptedDriver()
    slow = True
    read_group = driver.read_group

    async def slow_once(group: str) -> Mapping[str, Point]:
        nonlocal slow
        if slow:  # a read that hangs for 3.4 periods (within its outer timeout)
            slow = False
            await asyncio.sleep(3.4)
        return await read_group(group)

    driver.read_group = slow_once  # type: ignore[method-assign]
    store, events = PointStore(), EventBus()
    supervisor = DeviceSupervisor("dev", driver, store, events, SupervisorSettings(1.0, 5.0))
    start = asyncio.get_running_loop().time()
    await _run(supervisor, 5.5)
    assert [round(t - start, 3) for t in driver.reads] == [3.4, 3.4, 4.0, 5.0]


def test_a_phase_outside_the_period_is_refused() -> None:
    with pytest.raises(ValueError, match=r"poll phase 1\.0"):
        DeviceSupervisor("dev", ScriptedDriver(), PointStore(), EventBus(), phase=1.0)


async def test_transport_errors_make_it_stale_then_offline_then_it_reconnects() -> None:
    driver = ScriptedDriver()
    supervisor, store, events = _make(driver)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(2.5)
    driver.fail = TransportError("no answer")
    await asyncio.sleep(1.0)
    assert store.device("dev").state is DeviceState.STALE
    await asyncio.sleep(1.0)
    assert store.device("dev").state is DeviceState.OFFLINE
    point = store.get("dev", "supply_temp_c")
    assert point is not None
    # The last good value is kept but, after 3 periods without a good one, marked stale.
    await asyncio.sleep(1.5)
    point = store.get("dev", "supply_temp_c")
    assert point is not None and point.quality is Quality.STALE and point.value == 30.0
    driver.fail = None
    await asyncio.sleep(5.0)
    assert store.device("dev").state is DeviceState.ONLINE
    assert driver.connects >= 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [e.type for e in events.recent] == [
        "device_online",
        "device_stale",
        "device_offline",
        "device_online",
    ]


async def test_reconnect_backoff_grows_and_is_capped() -> None:
    driver = ScriptedDriver(refuse_connect=TransportError("refused"))
    supervisor, store, _ = _make(driver)
    attempts: list[float] = []
    original = driver.connect

    async def connect() -> None:
        attempts.append(asyncio.get_running_loop().time())
        await original()

    driver.connect = connect  # type: ignore[method-assign]
    await _run(supervisor, 30.0)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] < 0.7  # about the initial 0.5 s, with jitter
    assert max(gaps) <= 3.0 * 1.2 + 0.51  # capped (plus the staleness tick granularity)
    assert gaps[3] > gaps[0]
    assert store.device("dev").state is DeviceState.OFFLINE


async def test_a_device_refusal_keeps_the_link_and_raises_an_event() -> None:
    driver = ScriptedDriver()
    supervisor, store, events = _make(driver)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(1.5)
    driver.fail = DeviceError("illegal address", code=2)
    await asyncio.sleep(3.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert driver.connects == 1
    refusals = [e for e in events.recent if e.type == "device_error"]
    assert refusals and refusals[0].data["code"] == 2
    assert store.device("dev").state is DeviceState.STALE


async def test_configuration_error_stops_fast_retries_and_says_why() -> None:
    driver = ScriptedDriver(refuse_connect=ConfigurationError("bad credentials"))
    supervisor, store, _ = _make(driver)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(59.0)
    assert driver.connects == 1  # no fast retries: they cannot help
    record = store.device("dev")
    assert record.state is DeviceState.OFFLINE and "bad credentials" in record.reason
    driver.refuse_connect = None  # the device was fixed (or the refusal was forged)
    await asyncio.sleep(2.0)
    assert driver.connects == 2
    assert store.device("dev").state.value == "online"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_operations_run_between_polls_and_failures_are_events() -> None:
    driver = ScriptedDriver()
    supervisor, _, events = _make(driver)
    done: list[str] = []

    async def ok(_driver: ScriptedDriver) -> str:
        done.append("ok")
        return "done"

    async def refused(_driver: ScriptedDriver) -> None:
        raise DeviceError("exception 04", code=4)

    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    first = supervisor.submit("heartbeat", OpPriority.HEARTBEAT, ok, key="heartbeat")
    second = supervisor.submit("heartbeat", OpPriority.HEARTBEAT, ok, key="heartbeat")
    failing = supervisor.submit("set", OpPriority.TECHNICIAN, refused)
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert done == ["ok"]  # coalesced with the pending one
    assert first.result() == second.result() == "done"  # both callers get its outcome
    with pytest.raises(DeviceError, match="exception 04"):
        failing.result()
    [failed] = [e for e in events.recent if e.type == "device_write_failed"]
    assert "exception 04" in failed.message


async def test_the_queue_runs_by_priority_and_each_operation_alone() -> None:
    driver = ScriptedDriver()
    supervisor, _, _ = _make(driver)
    steps: list[str] = []

    def operation(name: str) -> Callable[[ScriptedDriver], Awaitable[None]]:
        async def run(_driver: ScriptedDriver) -> None:
            steps.append(f"{name} start")
            await asyncio.sleep(0.2)  # a multi-step write: nothing may slip in between
            steps.append(f"{name} end")

        return run

    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    supervisor.submit("loop", OpPriority.LOOP, operation("loop"))
    await asyncio.sleep(0.05)  # "loop" is running now; others queue behind it
    supervisor.submit("fleet", OpPriority.FLEET, operation("fleet"))
    supervisor.submit("tech", OpPriority.TECHNICIAN, operation("tech"))
    supervisor.submit("interlock", OpPriority.INTERLOCK, operation("interlock"))
    await asyncio.sleep(2.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert steps == [
        "loop start", "loop end",  # already running: atomic, finishes first
        "interlock start", "interlock end",
        "tech start", "tech end",
        "fleet start", "fleet end",
    ]


@dataclass
class _Switches:
    """Batched and single writes of numbered switches, as they reach the device."""

    calls: list[tuple[str, list[int]]] = field(default_factory=list)
    bad: set[int] = field(default_factory=set)  # a write naming one of these is refused
    lost: bool = False  # the link is gone

    def single(self, n: int) -> Callable[[ScriptedDriver], Awaitable[str]]:
        async def run(_driver: ScriptedDriver) -> str:
            self.calls.append(("single", [n]))
            await asyncio.sleep(0.01)
            if n in self.bad:
                raise DeviceError(f"switch {n} refused", code=4)
            return f"switch {n} done"

        return run

    async def many(self, _driver: ScriptedDriver, items: Sequence[object]) -> list[str]:
        numbers = [int(str(n)) for n in items]
        self.calls.append(("batch", numbers))
        await asyncio.sleep(0.01)
        if self.lost:
            raise TransportError("no answer")
        if self.bad & set(numbers):
            raise DeviceError(f"switches {sorted(self.bad & set(numbers))} refused", code=4)
        return [f"switch {n} done" for n in numbers]

    def submit(
        self, supervisor: DeviceSupervisor[ScriptedDriver], n: int, priority: OpPriority
    ) -> asyncio.Future[str]:
        return supervisor.submit(
            f"switch {n}",
            priority,
            self.single(n),
            key=f"switch:{n}",
            batch=Batch("switches", n, self.many),
        )


async def _busy(_driver: ScriptedDriver) -> None:
    await asyncio.sleep(0.1)  # holds the door while the others queue


async def test_queued_batchable_operations_of_one_priority_run_as_one() -> None:
    supervisor, _, _ = _make(ScriptedDriver())
    switches = _Switches()
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    supervisor.submit("busy", OpPriority.LOOP, _busy)
    await asyncio.sleep(0.01)
    loop_ops = {n: switches.submit(supervisor, n, OpPriority.LOOP) for n in (7, 8)}
    interlock = {n: switches.submit(supervisor, n, OpPriority.INTERLOCK) for n in (1, 2, 3)}
    plain = supervisor.submit("other", OpPriority.INTERLOCK, _busy)
    fleet = switches.submit(supervisor, 5, OpPriority.FLEET)  # alone at its priority
    again = switches.submit(supervisor, 2, OpPriority.INTERLOCK)  # replaces the queued 2
    await asyncio.sleep(1.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Each priority's turn in order; never merged across priorities.
    assert switches.calls == [("batch", [1, 3, 2]), ("single", [5]), ("batch", [7, 8])]
    for n, future in {**interlock, **loop_ops}.items():
        assert future.result() == f"switch {n} done"  # each its own outcome
    assert again.result() == "switch 2 done" and fleet.result() == "switch 5 done"
    assert plain.done() and plain.exception() is None


async def test_a_refused_batch_runs_one_by_one_and_each_gets_its_outcome() -> None:
    supervisor, _, events = _make(ScriptedDriver())
    switches = _Switches(bad={2})
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    supervisor.submit("busy", OpPriority.LOOP, _busy)
    await asyncio.sleep(0.01)
    futures = {n: switches.submit(supervisor, n, OpPriority.INTERLOCK) for n in (1, 2, 3)}
    await asyncio.sleep(1.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert switches.calls == [
        ("batch", [1, 2, 3]), ("single", [1]), ("single", [2]), ("single", [3])
    ]  # fmt: skip
    assert futures[1].result() == "switch 1 done" and futures[3].result() == "switch 3 done"
    with pytest.raises(DeviceError, match="switch 2 refused"):
        futures[2].result()
    [failed] = [e for e in events.recent if e.type == "device_write_failed"]
    assert "switch 2" in failed.message


async def test_a_batch_that_loses_the_link_fails_each_and_reconnects() -> None:
    driver = ScriptedDriver()
    supervisor, _, _ = _make(driver)
    switches = _Switches(lost=True)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    supervisor.submit("busy", OpPriority.LOOP, _busy)
    await asyncio.sleep(0.01)
    futures = [switches.submit(supervisor, n, OpPriority.INTERLOCK) for n in (1, 2)]
    await asyncio.sleep(2.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert switches.calls == [("batch", [1, 2])]
    for future in futures:
        with pytest.raises(TransportError, match="no answer"):
            future.result()
    assert driver.connects >= 2


async def test_an_operation_that_waits_too_long_is_taken_off_the_queue() -> None:
    driver = ScriptedDriver(refuse_connect=TransportError("no route"))
    supervisor, _, _ = _make(driver)
    ran: list[str] = []

    async def write(_driver: ScriptedDriver) -> None:
        ran.append("write")

    task = asyncio.create_task(supervisor.run())
    with pytest.raises(OperationTimeout, match="not done within 3 s"):
        await supervisor.execute("write", OpPriority.TECHNICIAN, write, timeout_s=3.0)
    driver.refuse_connect = None  # the device is back: the abandoned write must not run
    await asyncio.sleep(5.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert ran == [] and driver.connects >= 2


async def test_a_bug_in_an_operation_is_an_alarm_and_the_device_stays_online() -> None:
    driver = ScriptedDriver()
    supervisor, store, events = _make(driver)

    async def buggy(_driver: ScriptedDriver) -> None:
        raise KeyError("bug")

    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    with pytest.raises(KeyError):
        await supervisor.execute("buggy", OpPriority.LOOP, buggy)
    await asyncio.sleep(1.0)
    assert store.device("dev").state is DeviceState.ONLINE
    assert any(e.type == "supervisor_error" and "buggy" in e.message for e in events.recent)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_hung_connect_or_a_driver_bug_never_ends_supervision() -> None:
    driver = ScriptedDriver()
    supervisor, store, events = _make(driver)
    hang = asyncio.Event()

    async def connect() -> None:
        driver.connects += 1
        if driver.connects == 1:
            await hang.wait()  # never answers: the outer bound must catch it
        if driver.connects == 2:
            raise KeyError("bug in a driver")

    driver.connect = connect  # type: ignore[method-assign]
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(10.0)
    assert not task.done()
    assert driver.connects >= 3
    assert store.device("dev").state is DeviceState.ONLINE
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    [bug] = [e for e in events.recent if e.type == "supervisor_error"]
    assert "unexpected KeyError" in bug.message


async def test_points_age_while_a_read_hangs_when_the_tick_asks() -> None:
    driver = ScriptedDriver()
    store = PointStore()
    # The read's outer bound (10 s) is far beyond the points' stale_after (3 s).
    settings = SupervisorSettings(1.0, 10.0, 1.5)
    supervisor = DeviceSupervisor("dev", driver, store, EventBus(), settings)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    hang = asyncio.Event()
    original = driver.read_group

    async def hung_read(group: str) -> Mapping[str, Point]:
        await hang.wait()
        return await original(group)

    driver.read_group = hung_read  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    for _ in range(12):  # the control tick, every 0.25 s, to t = 3.5 s
        await asyncio.sleep(0.25)
        supervisor.refresh_staleness(loop.time())
    point = store.get("dev", "supply_temp_c")
    assert point is not None and point.quality is Quality.STALE  # 3 periods, read still hung
    assert store.device("dev").state is DeviceState.STALE
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_configuration_error_leaves_no_good_values_behind() -> None:
    driver = ScriptedDriver()
    supervisor, store, _ = _make(driver)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(1.5)
    driver.fail = ConfigurationError("wrong SNMPv3 key")
    await asyncio.sleep(1.1)
    point = store.get("dev", "supply_temp_c")
    assert point is not None and point.quality is Quality.STALE
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_point_names_that_change_are_logged_and_the_old_ones_go_stale() -> None:
    """A firmware update gives the device new point names: one clear log line."""
    driver = ScriptedDriver()
    supervisor, store, _events = _make(driver)
    renamed = False

    async def read_group(group: str) -> Mapping[str, Point]:
        driver.reads.append(asyncio.get_running_loop().time())
        name = "supply_t_c" if renamed else "supply_temp_c"
        return {name: Point(30.0, "degC")}

    driver.read_group = read_group  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(supervisor.run())
        await asyncio.sleep(2.5)
        renamed = True
        await asyncio.sleep(2.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    changed = [e for e in logs if e["event"] == "device_points_changed"]
    assert len(changed) == 1
    assert changed[0]["added"] == ["supply_t_c"] and changed[0]["gone"] == ["supply_temp_c"]
    assert store.get("dev", "supply_temp_c").quality is Quality.STALE  # type: ignore[union-attr]
    assert store.get("dev", "supply_t_c").quality is Quality.GOOD  # type: ignore[union-attr]


def test_poll_phases_put_at_most_so_many_devices_on_one_phase() -> None:
    phases = poll_phases(144, 18)
    assert len(phases) == 144
    assert sorted(set(phases)) == [i / 8 for i in range(8)]
    assert max(phases.count(p) for p in set(phases)) == 18
    assert poll_phases(16, 1) == [i / 16 for i in range(16)]
    assert poll_phases(1, 18) == [0.0]
    assert poll_phases(0, 18) == []
