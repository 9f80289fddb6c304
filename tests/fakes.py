"""A scripted device for unit tests of what sits above the drivers: it speaks
the drivers' write API (the one the output catalog calls) and records every
call, so tests see exactly what would have reached the wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.base import DeviceKind, Point, PollGroup
from drivers.errors import DeviceError
from megapodd.control.arbiter import OutputArbiter
from megapodd.events import EventBus
from megapodd.outputs.catalog import device_outputs
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, SupervisorSettings


class QuietDriver:
    """A DeviceDriver that is always there and reads one point: what a
    supervisor needs to run operations on it."""

    device_kind = DeviceKind.CDU
    poll_period_s = 10.0

    @property
    def kind(self) -> DeviceKind:
        return self.device_kind

    def poll_groups(self) -> Sequence[PollGroup]:
        return (PollGroup("g", self.poll_period_s),)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def read_group(self, group: str) -> Mapping[str, Point]:
        return {"ok": Point(True)}

    def link_stats(self) -> Mapping[str, int]:
        return {}


@dataclass
class RecordingDriver(QuietDriver):
    """Stands in for a CDU, PDU or BMC driver; `refuse` makes every write fail."""

    device_kind: DeviceKind = DeviceKind.CDU
    calls: list[tuple[str, Any]] = field(default_factory=list)
    refuse: bool = False
    batches: list[list[int]] = field(default_factory=list)  # set_outlets calls
    fan_zones: tuple[int, ...] = (0,)

    def _record(self, name: str, value: Any) -> None:
        if self.refuse:
            raise DeviceError(f"{name} refused", code=4)
        self.calls.append((name, value))

    def values(self, name: str) -> list[Any]:
        return [v for n, v in self.calls if n == name]

    # The write API the catalog uses.
    async def set_pump_speed_pct(self, pct: float) -> None:
        self._record("pump_speed_pct", pct)

    async def set_control_mode(self, mode: Any) -> None:
        self._record("control_mode", getattr(mode, "label", mode))

    async def set_facility_valve_pct(self, pct: float) -> None:
        self._record("facility_valve_pct", pct)

    async def set_lead_pump(self, lead: Any) -> None:
        self._record("lead_pump", getattr(lead, "label", lead))

    async def set_rack_isolated(self, rack: int, closed: bool) -> None:
        self._record(f"rack_{rack}_isolation", "closed" if closed else "open")

    async def set_outlet(self, outlet: int, action: Any) -> str:
        self._record(f"outlet_{outlet}", str(action))
        return str(action)

    async def set_outlets(self, actions: Mapping[int, Any]) -> dict[int, str]:
        """Several outlets in one call: each recorded as its own `outlet_n`,
        and the call's outlets in `batches`."""
        if self.refuse:
            raise DeviceError(f"outlets {sorted(actions)} refused", code=4)
        self.batches.append(sorted(actions))
        for n, action in actions.items():
            self._record(f"outlet_{n}", str(action))
        return {n: str(a) for n, a in actions.items()}

    async def chassis_control(self, action: Any) -> None:
        self._record("chassis_power", getattr(action, "name", action))

    async def set_fan_duty_pct(self, zone: int, pct: int) -> None:
        self._record("fan_duty_pct", pct)

    async def set_power_limit_w(self, limit_w: int | None) -> None:
        self._record("power_limit_w", limit_w)


@dataclass
class FakePod:
    store: PointStore
    events: EventBus
    arbiter: OutputArbiter
    drivers: dict[str, RecordingDriver]


@contextlib.asynccontextmanager
async def fake_pod(
    devices: Mapping[str, DeviceKind], outlets: int = 24, racks: Sequence[int] = (1, 2)
) -> AsyncIterator[FakePod]:
    """Supervisors running on recording drivers, with every catalog output
    registered in an arbiter, as the daemon wires them."""
    events = EventBus("boot")
    store = PointStore(events)
    arbiter = OutputArbiter(events, lambda: asyncio.get_running_loop().time())
    drivers: dict[str, RecordingDriver] = {}
    tasks: list[asyncio.Task[None]] = []
    for device_id, kind in devices.items():
        driver = RecordingDriver(kind)
        supervisor = DeviceSupervisor(
            device_id, driver, store, events, SupervisorSettings(1.0, 1.5, 2.0)
        )
        for output in device_outputs(device_id, kind, outlets=outlets, racks=racks):
            arbiter.add(output, supervisor)
        drivers[device_id] = driver
        tasks.append(asyncio.create_task(supervisor.run(), name=f"supervisor:{device_id}"))
    try:
        yield FakePod(store, events, arbiter, drivers)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
