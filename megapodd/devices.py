"""Builds each configured device's driver and its supervisor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drivers.base import DeviceDriver
from drivers.errors import ValueRejected
from drivers.ipmi.bmc import BmcDriver
from drivers.modbus.cdu_map import ControlMode
from drivers.modbus_cdu import CduDriver
from drivers.snmp_pdu import SnmpPduDriver
from megapodd.config import BmcConfig, CduConfig, Config, ConfigError, PduConfig
from megapodd.control.arbiter import OutputArbiter
from megapodd.events import EventBus
from megapodd.safe_files import FileRefused, read_secret_text
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


@dataclass(frozen=True, slots=True)
class PduHandle:
    config: PduConfig
    driver: SnmpPduDriver
    supervisor: DeviceSupervisor


@dataclass(frozen=True, slots=True)
class BmcHandle:
    config: BmcConfig
    driver: BmcDriver
    supervisor: DeviceSupervisor


@dataclass(slots=True)
class Devices:
    cdus: dict[str, CduHandle] = field(default_factory=dict)
    pdus: dict[str, PduHandle] = field(default_factory=dict)
    bmcs: dict[str, BmcHandle] = field(default_factory=dict)
    supervisors: list[DeviceSupervisor] = field(default_factory=list)


def _secret(path: Path | None, key: str, config_path: Path) -> str:
    if path is None:
        return ""
    try:
        return read_secret_text(path)
    except FileRefused as exc:
        raise ConfigError(config_path, [f"{key}: {exc}"]) from None


def _bounds(
    timeout_s: float, retries: int, connect: int, read: int, act: int
) -> SupervisorSettings:
    """Outer timeouts from the worst case of the driver's own: each of `n`
    requests may take every retry (pymodbus and SNMP both wait up to about
    1.5 timeouts per attempt), plus a second of slack."""

    def worst(requests: int) -> float:
        return requests * (retries + 1) * timeout_s * 2.0 + 1.0

    return SupervisorSettings(
        connect_timeout_s=worst(connect), read_timeout_s=worst(read), action_timeout_s=worst(act)
    )


def _build_cdu(cfg: CduConfig, store: PointStore, events: EventBus) -> CduHandle:
    driver = CduDriver(
        cfg.url, unit=cfg.unit, poll_s=cfg.poll_s, timeout_s=cfg.timeout_s, retries=cfg.retries
    )

    async def on_connect(_driver: DeviceDriver) -> None:
        # Arm the CDU's own watchdog first: from here on, if we stop
        # heartbeating, it goes to its failsafe speed (invariant 5).
        await driver.set_watchdog_timeout_s(cfg.watchdog_timeout_s)
        await driver.heartbeat()

    supervisor = DeviceSupervisor(
        cfg.id,
        driver,
        store,
        events,
        # connect: open + watchdog timeout (write, read back) + heartbeat.
        _bounds(cfg.timeout_s, cfg.retries, connect=4, read=1, act=3),
        on_connect=on_connect,
    )
    return CduHandle(cfg, driver, supervisor)


def _build_pdu(
    cfg: PduConfig, index: int, store: PointStore, events: EventBus, config_path: Path
) -> PduHandle:
    driver = SnmpPduDriver(
        host=cfg.host,
        port=cfg.port,
        version=cfg.version,
        community=cfg.community,
        write_community=cfg.write_community,
        user=cfg.user,
        auth_passphrase=_secret(cfg.auth_key_file, f"pdu.{index}.auth_key_file", config_path),
        priv_passphrase=_secret(cfg.priv_key_file, f"pdu.{index}.priv_key_file", config_path),
        auth_protocol=cfg.auth_protocol,
        outlets=cfg.outlets,
        fast_poll_s=cfg.fast_poll_s,
        slow_poll_s=cfg.slow_poll_s,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
    )
    # connect: v3 discovery and a test GET; read: one GET, halved on tooBig.
    settings = _bounds(cfg.timeout_s, cfg.retries, connect=3, read=8, act=2)
    supervisor = DeviceSupervisor(cfg.id, driver, store, events, settings)
    return PduHandle(cfg, driver, supervisor)


def _build_bmc(cfg: BmcConfig, store: PointStore, events: EventBus) -> BmcHandle:
    driver = BmcDriver(
        cfg.port,
        baud=cfg.baud,
        poll_s=cfg.poll_s,
        slow_poll_s=cfg.slow_poll_s,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        name=cfg.id,
        slow_non_thermal=True,
    )
    # Many exchanges per step on one line: the SDR walk (read twice, ~150
    # exchanges) at connect, one exchange per sensor per poll.
    settings = _bounds(cfg.timeout_s, cfg.retries, connect=160, read=24, act=4)
    supervisor = DeviceSupervisor(cfg.id, driver, store, events, settings)
    return BmcHandle(cfg, driver, supervisor)


def build_devices(
    config: Config, store: PointStore, events: EventBus, config_path: Path = Path("<config>")
) -> Devices:
    devices = Devices()
    for cdu_cfg in config.cdu:
        cdu = _build_cdu(cdu_cfg, store, events)
        devices.cdus[cdu_cfg.id] = cdu
        devices.supervisors.append(cdu.supervisor)
    for index, pdu_cfg in enumerate(config.pdu):
        pdu = _build_pdu(pdu_cfg, index, store, events, config_path)
        devices.pdus[pdu_cfg.id] = pdu
        devices.supervisors.append(pdu.supervisor)
    for bmc_cfg in config.bmc:
        bmc = _build_bmc(bmc_cfg, store, events)
        devices.bmcs[bmc_cfg.id] = bmc
        devices.supervisors.append(bmc.supervisor)
    return devices


# Liquid takes the GPUs' and CPUs' heat; the fans still cool everything else.
MIN_FAN_DUTY_PCT = 20.0


def register_outputs(arbiter: OutputArbiter, devices: Devices) -> None:
    """The actuators the arbiter owns. Their defaults are None: with no claim,
    the daemon writes nothing and the device keeps what it has."""
    for cdu_id, cdu in devices.cdus.items():
        submit = cdu.supervisor.submit
        cdu_driver = cdu.driver

        async def drive_pumps(pct: float, driver: CduDriver = cdu_driver) -> None:
            # The setpoint counts only in remote-speed mode; write it first so
            # the pumps never run at a stale setpoint after the switch.
            await driver.set_pump_speed_pct(pct)
            await driver.set_control_mode(ControlMode.REMOTE_SPEED)

        async def hand_back(driver: CduDriver = cdu_driver) -> None:
            # Nobody drives the pumps: the CDU's own constant-Δp control takes over.
            await driver.set_control_mode(ControlMode.LOCAL_DP)

        arbiter.add_output(
            f"{cdu_id}.pump_speed_pct", cdu_id, drive_pumps, submit, None, on_unowned=hand_back
        )
        arbiter.add_output(
            f"{cdu_id}.facility_valve_pct", cdu_id, cdu.driver.set_facility_valve_pct, submit, None
        )
    for bmc_id, bmc in devices.bmcs.items():
        driver = bmc.driver

        async def set_fan_duty(pct: float, driver: BmcDriver = driver) -> None:
            if pct < MIN_FAN_DUTY_PCT:
                raise ValueRejected(
                    f"fan duty {pct:g} % is below the {MIN_FAN_DUTY_PCT:g} % floor "
                    "that keeps air over memory, NICs and PSUs"
                )
            for zone in driver.fan_zones:
                await driver.set_fan_duty_pct(zone, round(pct))

        async def set_power_limit(watts: float, driver: BmcDriver = driver) -> None:
            await driver.set_power_limit_w(round(watts))

        submit = bmc.supervisor.submit
        arbiter.add_output(f"{bmc_id}.fan_duty_pct", bmc_id, set_fan_duty, submit, None)
        arbiter.add_output(f"{bmc_id}.power_limit_w", bmc_id, set_power_limit, submit, None)
