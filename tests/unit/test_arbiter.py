"""OutputArbiter: priority, expiry on the loop clock, failed writes withdrawn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from drivers.errors import DeviceError
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.events import EventBus


class Device:
    def __init__(self) -> None:
        self.values: list[float] = []
        self.refuse = False
        self.background: list[Callable[[], Awaitable[None]]] = []

    async def write(self, value: float) -> None:
        if self.refuse:
            raise DeviceError("exception 04", code=4)
        self.values.append(value)

    def submit(self, _name: str, action: Callable[[], Awaitable[None]]) -> None:
        self.background.append(action)

    async def run_background(self) -> None:
        while self.background:
            action = self.background.pop(0)
            with contextlib.suppress(DeviceError):  # the supervisor raises the event
                await action()


def _arbiter(device: Device) -> tuple[OutputArbiter, EventBus]:
    events = EventBus()
    arbiter = OutputArbiter(events, lambda: asyncio.get_running_loop().time())
    arbiter.add_output("cdu1.pump", "cdu1", device.write, device.submit, default=None)
    return arbiter, events


@pytest.mark.looptime
async def test_priority_expiry_and_owner_events() -> None:
    device = Device()
    arbiter, events = _arbiter(device)
    now = asyncio.get_running_loop().time()
    await arbiter.claim("cdu1.pump", Claim(Owner.LOOP, 55.0, "loop"))
    await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0", now + 60))
    winner = await arbiter.claim("cdu1.pump", Claim(Owner.LOOP, 57.0, "loop"))
    assert winner is not None and winner.owner is Owner.OVERRIDE
    assert device.values == [55.0, 80.0]  # the loop's new value waits behind the override

    await arbiter.claim("cdu1.pump", Claim(Owner.INTERLOCK, 100.0, "leak"))
    assert device.values[-1] == 100.0

    await asyncio.sleep(61)
    arbiter.tick()  # the override expires under the interlock: nothing to write
    assert Owner.OVERRIDE not in arbiter.outputs["cdu1.pump"].claims
    arbiter.release("cdu1.pump", Owner.INTERLOCK, "reset")
    await device.run_background()
    assert device.values[-1] == 57.0  # back to the loop
    moves = [
        (e.data["from"], e.data["to"]) for e in events.recent if e.type == "output_owner_changed"
    ]
    assert moves == [
        ("none", "loop"),
        ("loop", "override"),
        ("override", "interlock"),
        ("interlock", "interlock"),
        ("interlock", "loop"),
    ][: len(moves)] or moves == [
        ("none", "loop"),
        ("loop", "override"),
        ("override", "interlock"),
        ("interlock", "loop"),
    ]


async def test_an_override_needs_an_expiry_of_at_most_8_hours() -> None:
    arbiter, _ = _arbiter(Device())
    now = asyncio.get_running_loop().time()
    with pytest.raises(ValueError, match="expiry"):
        await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0"))
    with pytest.raises(ValueError, match="at most 8 h"):
        await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0", now + 9 * 3600))


async def test_a_refused_write_withdraws_the_claim() -> None:
    device = Device()
    arbiter, _ = _arbiter(device)
    now = asyncio.get_running_loop().time()
    await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 70.0, "uid 0", now + 60))
    device.refuse = True
    with pytest.raises(DeviceError):
        await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 90.0, "uid 0", now + 60))
    claim = arbiter.outputs["cdu1.pump"].claims[Owner.OVERRIDE]
    assert claim.value == 70.0 and device.values == [70.0]


@pytest.mark.looptime
async def test_failed_background_writes_are_retried_with_backoff() -> None:
    device = Device()
    arbiter, _ = _arbiter(device)
    now = asyncio.get_running_loop().time()
    await arbiter.claim("cdu1.pump", Claim(Owner.LOOP, 50.0, "loop"))
    await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 70.0, "uid 0", now + 10))
    device.refuse = True
    await asyncio.sleep(11)
    arbiter.tick()  # expiry: back to the loop's 50, but the device refuses
    await device.run_background()
    assert arbiter.outputs["cdu1.pump"].written == 70.0
    device.refuse = False
    arbiter.tick()  # too early for the retry
    assert device.background == []
    await asyncio.sleep(1.5)
    arbiter.tick()
    await device.run_background()
    assert device.values[-1] == 50.0 and arbiter.outputs["cdu1.pump"].written == 50.0


async def test_a_queued_hand_back_never_undoes_a_newer_claim() -> None:
    device = Device()
    handed_back: list[bool] = []

    async def hand_back() -> None:
        handed_back.append(True)

    events = EventBus()
    arbiter = OutputArbiter(events, lambda: asyncio.get_running_loop().time())
    arbiter.add_output("cdu1.pump", "cdu1", device.write, device.submit, None, hand_back)
    now = asyncio.get_running_loop().time()
    await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0", now + 60))
    arbiter.release("cdu1.pump", Owner.OVERRIDE, "released")  # hand-back queued, not yet run
    await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 90.0, "uid 0", now + 60))
    await device.run_background()  # the queued action sees the newer claim
    assert device.values == [80.0, 90.0] and handed_back == []
    arbiter.release("cdu1.pump", Owner.OVERRIDE, "released")
    await device.run_background()
    assert handed_back == [True]
    assert arbiter.outputs["cdu1.pump"].handed_back


@pytest.mark.looptime
async def test_a_background_write_that_times_out_is_retried() -> None:
    device = Device()
    arbiter, _ = _arbiter(device)
    now = asyncio.get_running_loop().time()
    await arbiter.claim("cdu1.pump", Claim(Owner.LOOP, 50.0, "loop"))
    await arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 70.0, "uid 0", now + 5))
    hang = asyncio.Event()
    real_write = device.write

    async def hanging_write(value: float) -> None:
        await hang.wait()
        await real_write(value)

    arbiter.outputs["cdu1.pump"].writer = hanging_write
    await asyncio.sleep(6)
    arbiter.tick()  # expiry queues the write of the loop's 50; it hangs
    [action] = device.background
    device.background.clear()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2):  # the supervisor's action timeout
            await action()
    output = arbiter.outputs["cdu1.pump"]
    assert output.written == 70.0 and output.retry_at_s is not None
    arbiter.outputs["cdu1.pump"].writer = real_write
    await asyncio.sleep(2)
    arbiter.tick()
    await device.run_background()
    assert output.written == 50.0 and device.values[-1] == 50.0


async def test_an_interlock_that_wins_during_an_override_write_gets_the_device() -> None:
    device = Device()
    arbiter, _ = _arbiter(device)
    gate = asyncio.Event()
    real_write = device.write

    async def slow_write(value: float) -> None:
        await gate.wait()
        await real_write(value)

    arbiter.outputs["cdu1.pump"].writer = slow_write
    now = asyncio.get_running_loop().time()
    override = asyncio.create_task(
        arbiter.claim("cdu1.pump", Claim(Owner.OVERRIDE, 40.0, "uid 0", now + 60))
    )
    await asyncio.sleep(0)
    arbiter.claim_in_background("cdu1.pump", Claim(Owner.INTERLOCK, 100.0, "leak"), "trip")
    gate.set()
    winner = await override
    assert winner is not None and winner.owner is Owner.INTERLOCK
    arbiter.outputs["cdu1.pump"].writer = real_write
    await device.run_background()
    assert device.values[-1] == 100.0  # the device follows the interlock, not the override
    assert arbiter.outputs["cdu1.pump"].written == 100.0
