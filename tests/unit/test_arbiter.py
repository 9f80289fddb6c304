"""OutputArbiter over a real device supervisor (its queue is the only door):
priority, expiry on the loop clock, failed writes withdrawn and retried,
discrete outputs held by higher owners, fleet claims below a technician's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from drivers.base import DeviceKind
from drivers.errors import DeviceError, ValueRejected
from megapodd.control.arbiter import Claim, OutputArbiter, OutputHeld, Owner
from megapodd.events import EventBus
from megapodd.outputs.catalog import OutputInstance
from megapodd.outputs.spec import OutputSpec, OutputValue, SafeDirection
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, SupervisorSettings
from tests.fakes import QuietDriver

pytestmark = pytest.mark.looptime


@dataclass
class FakeDevice(QuietDriver):
    """A device that records what reaches it; `refuse` and `gate` script trouble."""

    values: list[OutputValue] = field(default_factory=list)
    handed_back: int = 0
    pulses: list[str] = field(default_factory=list)
    refuse: bool = False
    gate: asyncio.Event | None = None  # a write waits for it (a slow or hung device)
    poll_period_s = 1.0

    async def write(self, value: OutputValue) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            raise DeviceError("exception 04", code=4)
        self.values.append(value)


async def _write(device: FakeDevice, value: OutputValue, _index: int | None) -> None:
    await device.write(value)


async def _hand_back(device: FakeDevice, _index: int | None) -> None:
    device.handed_back += 1


async def _pulse(device: FakeDevice, operation: str, _index: int | None) -> None:
    device.pulses.append(operation)


PUMP: OutputSpec[FakeDevice] = OutputSpec(
    "pump", DeviceKind.CDU, "a pump", _write, "recorded", unit="%", low=20.0, high=100.0,
    safe_direction=SafeDirection.HIGHER, hand_back=_hand_back,
)
OUTLET: OutputSpec[FakeDevice] = OutputSpec(
    "outlet_{n}", DeviceKind.PDU, "an outlet", _write, "recorded", states=("on", "off"),
    ranks=(0, 1), pulses=("reboot",), pulse=_pulse,
)


@dataclass
class Rig:
    device: FakeDevice
    arbiter: OutputArbiter
    events: EventBus

    def owner_moves(self) -> list[tuple[object, object]]:
        return [
            (e.data["from"], e.data["to"])
            for e in self.events.recent
            if e.type == "output_owner_changed"
        ]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    device, events = FakeDevice(), EventBus()
    supervisor = DeviceSupervisor(
        "dev", device, PointStore(), events, SupervisorSettings(1.0, 1.5, action_timeout_s=2.0)
    )
    arbiter = OutputArbiter(events, lambda: asyncio.get_running_loop().time())
    arbiter.add(OutputInstance("dev", PUMP, None), supervisor)
    arbiter.add(OutputInstance("dev", OUTLET, 3), supervisor)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.1)
    try:
        yield Rig(device, arbiter, events)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _now() -> float:
    return asyncio.get_running_loop().time()


async def test_priority_expiry_and_owner_events(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.pump", Claim(Owner.LOOP, 55.0, "loop"))
    await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0", _now() + 60))
    winner = await arbiter.claim("dev.pump", Claim(Owner.LOOP, 57.0, "loop"))
    assert winner is not None and winner.owner is Owner.OVERRIDE
    assert device.values == [55.0, 80.0]  # the loop's new value waits behind the override
    arbiter.claim_in_background("dev.pump", Claim(Owner.INTERLOCK, 100.0, "leak"), "trip")
    await asyncio.sleep(0.1)
    assert device.values[-1] == 100.0
    await asyncio.sleep(61)
    arbiter.tick()  # the override expires under the interlock: nothing to write
    assert Owner.OVERRIDE not in arbiter.outputs["dev.pump"].claims
    assert device.values[-1] == 100.0
    arbiter.release("dev.pump", Owner.INTERLOCK, "reset")
    await asyncio.sleep(0.1)
    assert device.values[-1] == 57.0  # back to the loop
    assert rig.owner_moves() == [
        ("none", "loop"),
        ("loop", "override"),
        ("override", "interlock"),
        ("interlock", "loop"),
    ]


async def test_claims_are_checked_against_the_spec_before_the_wire(rig: Rig) -> None:
    arbiter = rig.arbiter
    with pytest.raises(ValueRejected, match="always has an expiry"):
        await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0"))
    with pytest.raises(ValueRejected, match="at most 8 h"):
        await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0", _now() + 9 * 3600))
    with pytest.raises(ValueRejected, match=r"dev.pump 10.0 is outside 20–100 %"):
        await arbiter.claim("dev.pump", Claim(Owner.LOOP, 10.0, "loop"))
    with pytest.raises(ValueRejected, match=r"takes one of on \| off"):
        arbiter.claim_in_background("dev.outlet_3", Claim(Owner.INTERLOCK, "dim", "x"), "trip")
    # Even an override held behind an interlock is checked now, not when it would apply.
    arbiter.claim_in_background("dev.pump", Claim(Owner.INTERLOCK, 100.0, "leak"), "trip")
    with pytest.raises(ValueRejected, match="outside"):
        await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 120.0, "uid 0", _now() + 60))
    await asyncio.sleep(0.1)
    assert rig.device.values == [100.0]


async def test_a_refused_write_withdraws_the_claim(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 70.0, "uid 0", _now() + 60))
    device.refuse = True
    with pytest.raises(DeviceError):
        await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 90.0, "uid 0", _now() + 60))
    claim = arbiter.outputs["dev.pump"].claims[Owner.OVERRIDE]
    assert claim.value == 70.0 and device.values == [70.0]


async def test_failed_background_writes_are_retried_with_backoff(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.pump", Claim(Owner.LOOP, 50.0, "loop"))
    await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 70.0, "uid 0", _now() + 10))
    device.refuse = True
    await asyncio.sleep(11)
    arbiter.tick()  # expiry: back to the loop's 50, but the device refuses
    await asyncio.sleep(0.1)
    output = arbiter.outputs["dev.pump"]
    assert output.written is None and output.retry_at_s is not None  # unknown, retried
    device.refuse = False
    arbiter.tick()  # too early for the retry
    await asyncio.sleep(0.1)
    assert device.values == [50.0, 70.0]
    await asyncio.sleep(1.5)
    arbiter.tick()
    await asyncio.sleep(0.1)
    assert device.values[-1] == 50.0 and output.written == 50.0


async def test_a_queued_hand_back_never_undoes_a_newer_claim(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0", _now() + 60))
    device.gate = asyncio.Event()  # the device is busy with a slow outlet write
    busy = asyncio.create_task(arbiter.act("dev.outlet_3", "on", Owner.OVERRIDE, "uid 0"))
    await asyncio.sleep(0.1)
    arbiter.release("dev.pump", Owner.OVERRIDE, "released")  # hand-back queued behind it
    claim = asyncio.create_task(
        arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 90.0, "uid 0", _now() + 60))
    )
    await asyncio.sleep(0.1)
    device.gate.set()
    await claim
    await busy
    assert device.values == [80.0, "on", 90.0] and device.handed_back == 0
    arbiter.release("dev.pump", Owner.OVERRIDE, "released")
    await asyncio.sleep(0.1)
    assert device.handed_back == 1 and arbiter.outputs["dev.pump"].handed_back


async def test_a_background_write_that_times_out_is_retried(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.pump", Claim(Owner.LOOP, 50.0, "loop"))
    await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 70.0, "uid 0", _now() + 5))
    device.gate = asyncio.Event()  # hangs
    await asyncio.sleep(6)
    arbiter.tick()  # expiry queues the write of the loop's 50; it hangs past 2 s
    await asyncio.sleep(2.5)
    output = arbiter.outputs["dev.pump"]
    assert output.written is None and output.retry_at_s is not None
    device.gate.set()
    await asyncio.sleep(3)
    arbiter.tick()
    await asyncio.sleep(0.1)
    assert output.written == 50.0 and device.values[-1] == 50.0


async def test_an_interlock_during_an_override_write_lands_after_it(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    device.gate = asyncio.Event()
    override = asyncio.create_task(
        arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 40.0, "uid 0", _now() + 60))
    )
    await asyncio.sleep(0.1)  # the override's write is on the wire
    arbiter.claim_in_background("dev.pump", Claim(Owner.INTERLOCK, 100.0, "leak"), "trip")
    device.gate.set()
    winner = await override
    await asyncio.sleep(0.1)
    assert winner is not None and winner.owner is Owner.INTERLOCK
    assert device.values == [40.0, 100.0]  # nothing of the override after the interlock
    assert arbiter.outputs["dev.pump"].written == 100.0
    assert rig.owner_moves() == [("none", "override"), ("override", "interlock")]


async def test_the_fleet_never_replaces_or_ends_a_technicians_claim(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.pump", Claim(Owner.OVERRIDE, 80.0, "uid 0", _now() + 600))
    winner = await arbiter.claim("dev.pump", Claim(Owner.FLEET, 30.0, "mqtt", _now() + 600))
    assert winner is not None and winner.owner is Owner.OVERRIDE
    arbiter.release("dev.pump", Owner.FLEET, "released by mqtt")
    await asyncio.sleep(0.1)
    assert device.values == [80.0]  # no write at all: the winner never changed
    winner = arbiter.outputs["dev.pump"].winner()
    assert winner is not None and (winner.owner, winner.value) == (Owner.OVERRIDE, 80.0)


async def test_discrete_actions_are_refused_while_a_higher_owner_holds(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    arbiter.claim_in_background("dev.outlet_3", Claim(Owner.INTERLOCK, "off", "leak-r1"), "trip")
    await asyncio.sleep(0.1)
    assert device.values == ["off"]
    with pytest.raises(OutputHeld, match="held at off by interlock leak-r1"):
        await arbiter.act("dev.outlet_3", "on", Owner.OVERRIDE, "uid 0")
    with pytest.raises(OutputHeld, match="interlock leak-r1"):
        await arbiter.pulse("dev.outlet_3", "reboot", Owner.OVERRIDE, "uid 0")
    arbiter.release("dev.outlet_3", Owner.INTERLOCK, "reset")
    await asyncio.sleep(0.1)
    assert device.values == ["off"]  # nothing is re-energised by itself
    assert await arbiter.act("dev.outlet_3", "on", Owner.OVERRIDE, "uid 0") == "on"
    await arbiter.pulse("dev.outlet_3", "reboot", Owner.OVERRIDE, "uid 0")
    assert device.values == ["off", "on"] and device.pulses == ["reboot"]


async def test_a_technicians_action_ends_a_fleet_claim_but_not_the_reverse(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.outlet_3", Claim(Owner.FLEET, "off", "mqtt", _now() + 600))
    await arbiter.act("dev.outlet_3", "on", Owner.OVERRIDE, "uid 0")
    assert Owner.FLEET not in arbiter.outputs["dev.outlet_3"].claims
    await arbiter.claim("dev.outlet_3", Claim(Owner.OVERRIDE, "on", "uid 0", _now() + 600))
    with pytest.raises(OutputHeld, match="override"):
        await arbiter.act("dev.outlet_3", "off", Owner.FLEET, "mqtt")
    assert device.values == ["off", "on", "on"]


async def test_an_interlock_reset_never_switches_an_outlet_back_on(rig: Rig) -> None:
    arbiter, device = rig.arbiter, rig.device
    await arbiter.claim("dev.outlet_3", Claim(Owner.FLEET, "on", "mqtt", _now() + 600))
    arbiter.claim_in_background("dev.outlet_3", Claim(Owner.INTERLOCK, "off", "leak"), "trip")
    await asyncio.sleep(0.1)
    assert device.values == ["on", "off"]
    arbiter.release("dev.outlet_3", Owner.INTERLOCK, "reset")
    await asyncio.sleep(1.0)
    assert device.values == ["on", "off"]  # the fleet's "on" ended with the interlock
    assert arbiter.outputs["dev.outlet_3"].claims == {}
    assert ("fleet", "none") in rig.owner_moves()
