"""A held state the device loses is written again: after a reconnect (a
restarted device forgets what it was told) and when its feedback reading
contradicts it, but only towards safety."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest

from drivers.base import DeviceKind, Point
from drivers.errors import TransportError
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.events import EventBus, Severity
from megapodd.outputs.catalog import OutputInstance
from megapodd.outputs.spec import OutputSpec, OutputValue
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, SupervisorSettings
from tests.fakes import QuietDriver

pytestmark = pytest.mark.looptime


@dataclass
class Switch(QuietDriver):
    """One outlet whose state can change behind the daemon's back."""

    device_kind = DeviceKind.PDU
    poll_period_s = 1.0
    state: str = "on"
    drop_reads: int = 0  # this many reads fail: two take the link down
    log: list[str] = field(default_factory=list)

    async def read_group(self, group: str) -> Mapping[str, Point]:
        if self.drop_reads:
            self.drop_reads -= 1
            raise TransportError("link reset")
        self.log.append("read")
        return {"outlet_03_state": Point(self.state)}

    async def set(self, state: OutputValue) -> None:
        self.log.append(f"write {state}")
        self.state = str(state)


async def _write(device: Switch, state: OutputValue, _index: int | None) -> None:
    await device.set(state)


def _observe(reading: object, _index: int | None) -> str | None:
    return reading if isinstance(reading, str) else None


OUTLET: OutputSpec[Switch] = OutputSpec(
    "outlet_{n}", DeviceKind.PDU, "an outlet", _write, "recorded", states=("on", "off"),
    ranks=(0, 1), feedback_point="outlet_{n:02d}_state", observe=_observe,
)


@dataclass
class Rig:
    switch: Switch
    arbiter: OutputArbiter
    events: EventBus

    def mismatches(self) -> list[tuple[Severity, bool]]:
        return [
            (e.severity, bool(e.data["written_again"]))
            for e in self.events.recent
            if e.type == "output_mismatch"
        ]


@contextlib.asynccontextmanager
async def running_rig() -> AsyncIterator[Rig]:
    """Started inside each test: timers armed in a fixture would run on the
    wall clock, before looptime takes the loop over."""
    switch, events, store = Switch(), EventBus(), PointStore()
    supervisor = DeviceSupervisor(
        "pdu", switch, store, events, SupervisorSettings(1.0, 1.5, action_timeout_s=2.0,
                                                         reconnect_initial_s=0.5)
    )
    arbiter = OutputArbiter(events, lambda: asyncio.get_running_loop().time())
    arbiter.add(OutputInstance("pdu", OUTLET, 3), supervisor)
    supervisor.add_connect_listener(lambda: arbiter.device_connected("pdu"))

    async def tick() -> None:  # the daemon checks feedback every 0.25 s
        while True:
            arbiter.tick()
            arbiter.check_feedback(store.get)
            await asyncio.sleep(0.25)

    tasks = [asyncio.create_task(supervisor.run()), asyncio.create_task(tick())]
    await asyncio.sleep(0.1)
    try:
        yield Rig(switch, arbiter, events)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_outlet_switched_on_under_an_interlock_is_switched_off_again() -> None:
    async with running_rig() as rig:
        await _test_an_outlet_switched_on_under_an_interlock_is_switched_off_again(rig)


async def _test_an_outlet_switched_on_under_an_interlock_is_switched_off_again(rig: Rig) -> None:
    rig.arbiter.claim_in_background("pdu.outlet_3", Claim(Owner.INTERLOCK, "off", "leak"), "trip")
    await asyncio.sleep(2.0)
    assert rig.switch.state == "off" and rig.mismatches() == []  # readings agree: quiet
    rig.switch.state = "on"  # someone at the PDU's panel
    await asyncio.sleep(2.6)  # two polls that show it
    assert rig.switch.state == "off"
    assert rig.mismatches() == [(Severity.CRITICAL, True)]
    await asyncio.sleep(5.0)
    assert rig.mismatches() == [(Severity.CRITICAL, True)]  # once: it holds again


async def test_one_contradicting_reading_is_not_enough() -> None:
    async with running_rig() as rig:
        await _test_one_contradicting_reading_is_not_enough(rig)


async def _test_one_contradicting_reading_is_not_enough(rig: Rig) -> None:
    rig.arbiter.claim_in_background("pdu.outlet_3", Claim(Owner.INTERLOCK, "off", "leak"), "trip")
    await asyncio.sleep(2.0)
    rig.switch.state = "on"
    await asyncio.sleep(1.0)  # one poll reads it...
    rig.switch.state = "off"  # ...and the next one no longer does
    await asyncio.sleep(3.0)
    assert rig.mismatches() == []
    assert rig.switch.log.count("write off") == 1


async def test_nothing_is_switched_on_again_by_itself() -> None:
    async with running_rig() as rig:
        await _test_nothing_is_switched_on_again_by_itself(rig)


async def _test_nothing_is_switched_on_again_by_itself(rig: Rig) -> None:
    # A fleet claim holds the outlet on; the PDU's breaker switches it off.
    await rig.arbiter.claim(
        "pdu.outlet_3", Claim(Owner.FLEET, "on", "mqtt", asyncio.get_running_loop().time() + 600)
    )
    rig.switch.state = "off"
    await asyncio.sleep(3.0)
    assert rig.switch.state == "off"
    assert rig.mismatches() == [(Severity.WARNING, False)]
    assert rig.arbiter.outputs["pdu.outlet_3"].written == "off"  # what the device shows


async def test_a_reconnected_device_is_told_again_before_its_first_poll() -> None:
    async with running_rig() as rig:
        await _test_a_reconnected_device_is_told_again_before_its_first_poll(rig)


async def _test_a_reconnected_device_is_told_again_before_its_first_poll(rig: Rig) -> None:
    rig.arbiter.claim_in_background("pdu.outlet_3", Claim(Owner.INTERLOCK, "off", "leak"), "trip")
    await asyncio.sleep(1.5)
    # The PDU restarts: the link drops and it comes back with the outlet on.
    rig.switch.drop_reads, rig.switch.state = 2, "on"
    rig.switch.log.clear()
    await asyncio.sleep(4.0)
    assert [e.type for e in rig.events.recent].count("device_offline") == 1
    assert rig.switch.log[:2] == ["write off", "read"]
    assert rig.switch.state == "off"
