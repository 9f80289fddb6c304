"""The server BMC family: its driver, supervisor and polling policy."""

from __future__ import annotations

from drivers.ipmi.bmc import BmcDriver, BmcPollGroup
from drivers.ipmi.sdr import SensorRecord
from megapodd.config import BmcConfig
from megapodd.devices.common import outer_bounds
from megapodd.events import EventBus
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor


def _thermal_or_discrete(record: SensorRecord) -> bool:
    """Temperatures and discrete states (leak): what safety and the loops act on."""
    return record.unit_symbol in ("C", "")


def _other_sensors(record: SensorRecord) -> bool:
    return not _thermal_or_discrete(record)


def bmc_poll_groups(poll_s: float, slow_poll_s: float) -> tuple[BmcPollGroup, ...]:
    """Temperatures and leak every poll_s; fans and PSU power, which nothing
    acts on within seconds, with chassis state and DCMI power every
    slow_poll_s. A full pod's BMC lines then carry a third fewer exchanges."""
    return (
        BmcPollGroup("sensors", poll_s, _thermal_or_discrete),
        BmcPollGroup("slow", slow_poll_s, _other_sensors, status=True),
    )


def build_bmc(
    cfg: BmcConfig, store: PointStore, events: EventBus, phase: float = 0.0
) -> DeviceSupervisor[BmcDriver]:
    driver = BmcDriver(
        cfg.port,
        baud=cfg.baud,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        name=cfg.id,
        groups=bmc_poll_groups(cfg.poll_s, cfg.slow_poll_s),
    )
    # Many exchanges per step on one line: the SDR walk (read twice, ~150
    # exchanges) at connect, one exchange per sensor per poll; act: a power
    # limit (set, activate, read back) or fan duty on two zones.
    settings = outer_bounds(cfg.timeout_s, cfg.retries, connect=160, read=24, act=4)
    return DeviceSupervisor(
        cfg.id, driver, store, events, settings, plausible=driver.plausible, phase=phase
    )
