"""The rack PDU family: its SNMP driver and supervisor."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from drivers.snmp.rack_pdu import SnmpPduDriver
from megapodd.config import PduConfig
from megapodd.devices.common import outer_bounds, read_secret
from megapodd.events import EventBus
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor

# An outlet write polls its state until it shows (a reboot: off, then on 5 s later).
OUTLET_CONFIRM_S = 10.0


def build_pdu(
    cfg: PduConfig,
    index: int,
    store: PointStore,
    events: EventBus,
    config_path: Path,
    phase: float = 0.0,
) -> DeviceSupervisor[SnmpPduDriver]:
    driver = SnmpPduDriver(
        host=cfg.host,
        port=cfg.port,
        version=cfg.version,
        community=cfg.community,
        write_community=cfg.write_community,
        user=cfg.user,
        auth_passphrase=read_secret(cfg.auth_key_file, f"pdu.{index}.auth_key_file", config_path),
        priv_passphrase=read_secret(cfg.priv_key_file, f"pdu.{index}.priv_key_file", config_path),
        auth_protocol=cfg.auth_protocol,
        outlets=cfg.outlets,
        fast_poll_s=cfg.fast_poll_s,
        slow_poll_s=cfg.slow_poll_s,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        confirm_timeout_s=OUTLET_CONFIRM_S,
        breaker_a=cfg.breaker_a,
        supply_v_max=cfg.supply_v_max,
    )
    # connect: v3 discovery and a test GET; read: one GET, halved on tooBig;
    # act: a SET and its confirmation (read back until the state shows).
    settings = outer_bounds(cfg.timeout_s, cfg.retries, connect=3, read=8, act=2)
    settings = replace(settings, action_timeout_s=settings.action_timeout_s + OUTLET_CONFIRM_S)
    return DeviceSupervisor(
        cfg.id, driver, store, events, settings, plausible=driver.plausible, phase=phase
    )
