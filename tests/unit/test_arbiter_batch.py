"""Batched writes of one device's outputs (OutputSpec.write_many) through the
arbiter and a real supervisor: queued writes of one priority go in one call,
each output's bookkeeping is its own, a refused batch falls back to one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from drivers.base import DeviceKind
from drivers.errors import DeviceError
from megapodd.control.arbiter import Claim, Output, OutputArbiter, Owner
from megapodd.events import EventBus
from megapodd.outputs.catalog import OutputInstance
from megapodd.outputs.spec import OutputSpec, OutputValue
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, SupervisorSettings
from tests.fakes import QuietDriver

pytestmark = pytest.mark.looptime

OUTLETS = 6


@dataclass
class Pdu(QuietDriver):
    """Records single and batched outlet writes; `bad` outlets are refused."""

    singles: list[tuple[int, OutputValue]] = field(default_factory=list)
    batches: list[list[tuple[int, OutputValue]]] = field(default_factory=list)
    bad: set[int] = field(default_factory=set)
    gate: asyncio.Event | None = None  # the next write waits for it (the device is busy)
    poll_period_s = 1.0

    async def _wait(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    async def write(self, outlet: int, value: OutputValue) -> None:
        await self._wait()
        if outlet in self.bad:
            raise DeviceError(f"outlet {outlet} refused", code=4)
        self.singles.append((outlet, value))

    async def write_many(self, writes: Sequence[tuple[int, OutputValue]]) -> None:
        await self._wait()
        if refused := sorted(self.bad & {n for n, _ in writes}):
            raise DeviceError(f"outlets {refused} refused", code=4)
        self.batches.append(list(writes))


async def _write(pdu: Pdu, value: OutputValue, index: int | None) -> None:
    assert index is not None
    await pdu.write(index, value)


async def _write_many(pdu: Pdu, writes: Sequence[tuple[OutputValue, int | None]]) -> None:
    await pdu.write_many([(int(index or 0), value) for value, index in writes])


OUTLET: OutputSpec[Pdu] = OutputSpec(
    "outlet_{n}", DeviceKind.PDU, "an outlet", _write, "recorded",
    states=("on", "off"), ranks=(0, 1), write_many=_write_many,
)  # fmt: skip


@dataclass
class Rig:
    pdu: Pdu
    arbiter: OutputArbiter

    def off(self, outlets: Sequence[int], owner: Owner = Owner.INTERLOCK) -> None:
        for n in outlets:
            self.arbiter.claim_in_background(f"pdu.outlet_{n}", Claim(owner, "off", "leak"), "trip")

    def output(self, n: int) -> Output:
        return self.arbiter.outputs[f"pdu.outlet_{n}"]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pdu, events = Pdu(), EventBus()
    supervisor = DeviceSupervisor(
        "pdu", pdu, PointStore(), events, SupervisorSettings(1.0, 1.5, action_timeout_s=2.0)
    )
    arbiter = OutputArbiter(events, lambda: asyncio.get_running_loop().time())
    for n in range(1, OUTLETS + 1):
        arbiter.add(OutputInstance("pdu", OUTLET, n), supervisor)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.1)
    try:
        yield Rig(pdu, arbiter)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _hold_the_door(rig: Rig) -> asyncio.Task[OutputValue]:
    """A technician's slow single write holds the door while others queue."""
    rig.pdu.gate = asyncio.Event()
    busy = asyncio.create_task(rig.arbiter.act("pdu.outlet_6", "on", Owner.OVERRIDE, "uid 0"))
    await asyncio.sleep(0.1)
    return busy


async def test_queued_writes_of_one_priority_go_in_one_call(rig: Rig) -> None:
    busy = await _hold_the_door(rig)
    told: list[BaseException | None] = []
    for n in (1, 2, 3, 4):
        rig.arbiter.claim_in_background(
            f"pdu.outlet_{n}", Claim(Owner.INTERLOCK, "off", "leak"), "trip", on_done=told.append
        )
    rig.arbiter.claim_in_background("pdu.outlet_5", Claim(Owner.LOOP, "off", "budget"), "loop")
    assert all(rig.output(n).written is None for n in (1, 2, 3, 4))
    rig.pdu.gate.set()  # type: ignore[union-attr]
    await busy
    await asyncio.sleep(0.1)
    # The interlock's four in one call; the loop's write is not merged into it.
    assert rig.pdu.batches == [[(1, "off"), (2, "off"), (3, "off"), (4, "off")]]
    assert rig.pdu.singles == [(6, "on"), (5, "off")]
    now = asyncio.get_running_loop().time()
    for n in (1, 2, 3, 4, 5):
        output = rig.output(n)
        assert output.written == "off" and not output.force_write
        assert output.written_mono_s == pytest.approx(now, abs=0.2)
        assert output.retry_at_s is None
    assert told == [None] * 4  # each output's watcher hears its own write held


async def test_a_queued_lower_batch_never_lands_after_a_newer_claim(rig: Rig) -> None:
    busy = await _hold_the_door(rig)
    for n in (1, 2, 3):
        rig.arbiter.claim_in_background(f"pdu.outlet_{n}", Claim(Owner.LOOP, "on", "loop"), "x")
    rig.off([1, 2])  # a trip while the loop's writes wait
    rig.pdu.gate.set()  # type: ignore[union-attr]
    await busy
    await asyncio.sleep(0.1)
    # 1 and 2 run at the interlock's turn with what wins then; 3 alone later.
    assert rig.pdu.batches == [[(1, "off"), (2, "off")]]
    assert rig.pdu.singles == [(6, "on"), (3, "on")]
    assert [rig.output(n).written for n in (1, 2, 3)] == ["off", "off", "on"]


async def test_a_refused_batch_falls_back_to_one_by_one(rig: Rig) -> None:
    busy = await _hold_the_door(rig)
    rig.pdu.bad = {2}
    rig.off([1, 2, 3])
    rig.pdu.gate.set()  # type: ignore[union-attr]
    await busy
    await asyncio.sleep(0.1)
    assert rig.pdu.batches == []  # refused as a whole
    assert rig.pdu.singles == [(6, "on"), (1, "off"), (3, "off")]
    assert rig.output(1).written == rig.output(3).written == "off"
    bad = rig.output(2)
    assert bad.written is None and bad.force_write and bad.retry_at_s is not None
    rig.pdu.bad = set()
    await asyncio.sleep(1.5)
    rig.arbiter.tick()  # the retry of the one that failed
    await asyncio.sleep(0.1)
    assert rig.pdu.singles[-1] == (2, "off") and bad.written == "off"
