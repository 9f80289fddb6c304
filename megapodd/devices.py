"""Builds each configured device's driver and its supervisor."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import DeviceDriver
from drivers.modbus_cdu import CduDriver
from megapodd.config import CduConfig, Config
from megapodd.events import EventBus
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, SupervisorSettings


@dataclass(frozen=True, slots=True)
class CduHandle:
    config: CduConfig
    driver: CduDriver
    supervisor: DeviceSupervisor

    def heartbeat(self) -> None:
        """Ask for a comm-watchdog heartbeat (called from the control tick)."""
        self.supervisor.submit("heartbeat", self.driver.heartbeat)


@dataclass(slots=True)
class Devices:
    cdus: list[CduHandle]
    supervisors: list[DeviceSupervisor]


def build_devices(config: Config, store: PointStore, events: EventBus) -> Devices:
    cdus: list[CduHandle] = []
    supervisors: list[DeviceSupervisor] = []
    for cdu_cfg in config.cdu:
        driver = CduDriver(
            cdu_cfg.url,
            unit=cdu_cfg.unit,
            poll_s=cdu_cfg.poll_s,
            timeout_s=cdu_cfg.timeout_s,
            retries=cdu_cfg.retries,
        )

        async def on_connect(
            _driver: DeviceDriver, d: CduDriver = driver, c: CduConfig = cdu_cfg
        ) -> None:
            # Arm the CDU's own watchdog first: from here on, if we stop
            # heartbeating, it goes to its failsafe speed (invariant 5).
            await d.set_watchdog_timeout_s(c.watchdog_timeout_s)
            await d.heartbeat()

        supervisor = DeviceSupervisor(
            cdu_cfg.id,
            driver,
            store,
            events,
            SupervisorSettings(timeout_s=cdu_cfg.timeout_s),
            on_connect=on_connect,
        )
        cdus.append(CduHandle(cdu_cfg, driver, supervisor))
        supervisors.append(supervisor)
    return Devices(cdus=cdus, supervisors=supervisors)
