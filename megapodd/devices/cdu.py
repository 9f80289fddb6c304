"""The CDU family: its driver, supervisor and comm-watchdog heartbeat."""

from __future__ import annotations

from drivers.modbus.cdu import CduDriver
from drivers.modbus.cdu_map import PLAUSIBLE
from megapodd.config import CduConfig
from megapodd.devices.common import outer_bounds
from megapodd.events import EventBus
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, OpPriority


def build_cdu(cfg: CduConfig, store: PointStore, events: EventBus) -> DeviceSupervisor[CduDriver]:
    driver = CduDriver(
        cfg.url, unit=cfg.unit, poll_s=cfg.poll_s, timeout_s=cfg.timeout_s, retries=cfg.retries
    )

    async def on_connect(connected: CduDriver) -> None:
        # Arm the CDU's own watchdog first: from here on, if we stop
        # heartbeating, it goes to its failsafe speed (invariant 5).
        await connected.set_watchdog_timeout_s(cfg.watchdog_timeout_s)
        await connected.heartbeat()

    return DeviceSupervisor(
        cfg.id,
        driver,
        store,
        events,
        # connect: open + watchdog timeout (write, read back) + heartbeat;
        # act: the longest output write (rack isolation: read, write, read back).
        outer_bounds(cfg.timeout_s, cfg.retries, connect=4, read=1, act=3),
        on_connect=on_connect,
        plausible=PLAUSIBLE.get,
    )


async def _heartbeat(driver: CduDriver) -> None:
    await driver.heartbeat()


def request_heartbeat(cdu: DeviceSupervisor[CduDriver]) -> None:
    """Queue a comm-watchdog heartbeat (from the control tick); a pending one is enough."""
    cdu.submit("heartbeat", OpPriority.HEARTBEAT, _heartbeat, key="heartbeat", background=True)
