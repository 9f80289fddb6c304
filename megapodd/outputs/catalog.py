"""Every actuator of every device family, declared once.

This is the one place in the daemon that calls a driver's write API: each
entry says how its value is written and confirmed, and the device's
supervisor runs that as one atomic operation on its queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.base import DeviceKind
from drivers.ipmi.bmc import BmcDriver
from drivers.ipmi.commands import ChassisAction
from drivers.modbus.cdu import CduDriver
from drivers.modbus.cdu_map import ControlMode, LeadPump
from drivers.snmp.rack_pdu import OutletAction, SnmpPduDriver
from megapodd.outputs.spec import OutputSpec, OutputValue, SafeDirection

# -- CDU ---------------------------------------------------------------------


async def _write_pump_speed(driver: CduDriver, pct: OutputValue, _index: int | None) -> None:
    # The setpoint counts only in remote-speed mode; write it first so the
    # pumps never run at a stale setpoint after the switch.
    await driver.set_pump_speed_pct(float(pct))
    await driver.set_control_mode(ControlMode.REMOTE_SPEED)


async def _pumps_to_cdu(driver: CduDriver, _index: int | None) -> None:
    # Nobody drives the pumps: the CDU's own constant-Δp control takes over.
    await driver.set_control_mode(ControlMode.LOCAL_DP)


async def _write_valve(driver: CduDriver, pct: OutputValue, _index: int | None) -> None:
    await driver.set_facility_valve_pct(float(pct))


_LEAD_PUMPS = {"auto": LeadPump.AUTO, "pump1": LeadPump.PUMP1, "pump2": LeadPump.PUMP2}


async def _write_lead_pump(driver: CduDriver, lead: OutputValue, _index: int | None) -> None:
    await driver.set_lead_pump(_LEAD_PUMPS[str(lead)])


def _observe_state(reading: object, _index: int | None) -> str | None:
    """Points that read as the output's own states ("on", "closed", "pump1")."""
    return reading if isinstance(reading, str) else None


def _observe_isolation(mask: object, rack: int | None) -> str | None:
    if rack is None or isinstance(mask, bool) or not isinstance(mask, int):
        return None
    return "closed" if mask >> (rack - 1) & 1 else "open"


async def _write_isolation(driver: CduDriver, state: OutputValue, rack: int | None) -> None:
    if rack is None:
        raise ValueError("rack isolation needs a rack number")
    await driver.set_rack_isolated(rack, state == "closed")


CDU_OUTPUTS: tuple[OutputSpec[CduDriver], ...] = (
    OutputSpec(
        "pump_speed_pct",
        DeviceKind.CDU,
        "secondary pump speed setpoint (remote-speed mode)",
        _write_pump_speed,
        "registers 102 and 101 read back",
        unit="%",
        low=20.0,
        high=100.0,
        safe_direction=SafeDirection.HIGHER,
        failsafe=100.0,
        # The pump must follow the load (docs/control.md: at 5 %/s the hottest GPU
        # peaks 5 K higher in a 30 -> 90 % step).
        slew_per_s=20.0,
        hand_back=_pumps_to_cdu,
        feedback_point="pump*_speed_pct",  # the running pump's speed (the faster of two)
    ),
    OutputSpec(
        "facility_valve_pct",
        DeviceKind.CDU,
        "facility-water valve setpoint (0 % = full bypass)",
        _write_valve,
        "register 104 read back",
        unit="%",
        low=0.0,
        high=100.0,
        safe_direction=SafeDirection.HIGHER,
        failsafe=100.0,
        slew_per_s=5.0,  # the simulated actuator strokes at 10 %/s (docs/control.md)
        feedback_point="facility_valve_position_pct",
    ),
    OutputSpec(
        "lead_pump",
        DeviceKind.CDU,
        "which pump leads (the other stands by)",
        _write_lead_pump,
        "register 103 read back",
        states=("auto", "pump1", "pump2"),
        ranks=(0, 0, 0),
        aliases={"1": "pump1", "2": "pump2"},
        feedback_point="lead_pump",
        observe=_observe_state,
    ),
    OutputSpec(
        "rack_{n}_isolation",
        DeviceKind.CDU,
        "rack n's coolant supply isolation valve",
        _write_isolation,
        "register 108 read back (read, set the rack's bit, write)",
        states=("open", "closed"),
        ranks=(0, 1),
        feedback_point="rack_isolation_mask",
        observe=_observe_isolation,
    ),
)

# -- PDU ---------------------------------------------------------------------


async def _write_outlet(driver: SnmpPduDriver, state: OutputValue, outlet: int | None) -> None:
    if outlet is None:
        raise ValueError("an outlet needs its number")
    await driver.set_outlet(outlet, OutletAction(str(state)))


async def _write_outlets(
    driver: SnmpPduDriver, writes: Sequence[tuple[OutputValue, int | None]]
) -> None:
    actions: dict[int, OutletAction] = {}
    for state, outlet in writes:
        if outlet is None:
            raise ValueError("an outlet needs its number")
        actions[outlet] = OutletAction(str(state))
    await driver.set_outlets(actions)


async def _pulse_outlet(driver: SnmpPduDriver, operation: str, outlet: int | None) -> None:
    if outlet is None:
        raise ValueError("an outlet needs its number")
    await driver.set_outlet(outlet, OutletAction(operation))


PDU_OUTPUTS: tuple[OutputSpec[SnmpPduDriver], ...] = (
    OutputSpec(
        "outlet_{n}",
        DeviceKind.PDU,
        "switched outlet n",
        _write_outlet,
        "outlet state read back with no command pending",
        states=("on", "off"),
        ranks=(0, 1),
        pulses=("reboot",),
        pulse=_pulse_outlet,
        feedback_point="outlet_{n:02d}_state",
        observe=_observe_state,
        write_many=_write_outlets,
    ),
)

# -- BMC ---------------------------------------------------------------------

_CHASSIS = {
    "on": ChassisAction.ON,
    "off": ChassisAction.OFF,
    "soft_off": ChassisAction.SOFT_SHUTDOWN,
    "cycle": ChassisAction.CYCLE,
    "reset": ChassisAction.HARD_RESET,
}


async def _write_chassis(driver: BmcDriver, state: OutputValue, _index: int | None) -> None:
    await driver.chassis_control(_CHASSIS[str(state)])


async def _pulse_chassis(driver: BmcDriver, operation: str, _index: int | None) -> None:
    await driver.chassis_control(_CHASSIS[operation])


async def _write_fan_duty(driver: BmcDriver, pct: OutputValue, _index: int | None) -> None:
    for zone in driver.fan_zones:
        await driver.set_fan_duty_pct(zone, round(float(pct)))


async def _write_power_limit(driver: BmcDriver, watts: OutputValue, _index: int | None) -> None:
    await driver.set_power_limit_w(round(float(watts)))


async def _no_power_limit(driver: BmcDriver, _index: int | None) -> None:
    await driver.set_power_limit_w(None)


BMC_OUTPUTS: tuple[OutputSpec[BmcDriver], ...] = (
    OutputSpec(
        "chassis_power",
        DeviceKind.BMC,
        "server power (soft_off: the OS shuts down, then power goes off)",
        _write_chassis,
        "on/off: power state read back; soft_off: the BMC's completion code",
        states=("on", "soft_off", "off"),
        ranks=(0, 1, 2),
        aliases={"soft": "soft_off"},
        pulses=("cycle", "reset"),
        pulse=_pulse_chassis,
        feedback_point="chassis_power",
        observe=_observe_state,
        unobservable=("soft_off",),
    ),
    OutputSpec(
        "fan_duty_pct",
        DeviceKind.BMC,
        "fan duty of every zone",
        _write_fan_duty,
        "each zone's duty read back",
        unit="%",
        # Liquid takes the GPUs' and CPUs' heat; the fans still cool memory,
        # NICs and PSUs, so never below 20 %.
        low=20.0,
        high=100.0,
        safe_direction=SafeDirection.HIGHER,
        failsafe=100.0,
        slew_per_s=10.0,
    ),
    OutputSpec(
        "power_limit_w",
        DeviceKind.BMC,
        "DCMI power cap (none: the server runs uncapped)",
        _write_power_limit,
        "DCMI Get Power Limit read back, active",
        unit="W",
        low=100.0,
        high=30_000.0,
        safe_direction=SafeDirection.LOWER,
        hand_back=_no_power_limit,
        feedback_point="power_limit_w",
    ),
)

CATALOG: dict[DeviceKind, Sequence[OutputSpec[Any]]] = {
    DeviceKind.CDU: CDU_OUTPUTS,
    DeviceKind.PDU: PDU_OUTPUTS,
    DeviceKind.BMC: BMC_OUTPUTS,
}


@dataclass(frozen=True, slots=True)
class OutputInstance:
    """One output of one device, e.g. `pdu-r1a.outlet_3`."""

    device_id: str
    spec: OutputSpec[Any]
    index: int | None

    @property
    def name(self) -> str:
        return f"{self.device_id}.{self.spec.instance_name(self.index)}"


def device_outputs(
    device_id: str, kind: DeviceKind, outlets: int = 0, racks: Iterable[int] = ()
) -> list[OutputInstance]:
    """Every output of one device: one per outlet of a PDU, one per rack for
    the CDU's isolation valves, one of each other kind."""
    result: list[OutputInstance] = []
    for spec in CATALOG[kind]:
        if not spec.indexed:
            result.append(OutputInstance(device_id, spec, None))
        elif kind is DeviceKind.PDU:
            result += [OutputInstance(device_id, spec, n) for n in range(1, outlets + 1)]
        else:
            result += [OutputInstance(device_id, spec, n) for n in sorted(set(racks))]
    return result


def describe_outputs(outputs: Iterable[OutputInstance]) -> str:
    """A device's outputs for a message: `pump_speed_pct, outlet_1 … outlet_24`."""
    parts: list[str] = []
    runs: dict[str, list[int]] = {}
    for output in outputs:
        if output.index is None:
            parts.append(output.spec.name)
        else:
            if output.spec.name not in runs:
                runs[output.spec.name] = []
                parts.append(output.spec.name)
            runs[output.spec.name].append(output.index)
    described: list[str] = []
    for part in parts:
        indexes = runs.get(part)
        if indexes is None:
            described.append(part)
        elif len(indexes) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
            described.append(
                f"{part.replace('{n}', str(indexes[0]))} … {part.replace('{n}', str(indexes[-1]))}"
            )
        else:
            described += [part.replace("{n}", str(n)) for n in indexes]
    return ", ".join(described) or "none"
