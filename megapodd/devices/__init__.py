"""The pod's devices: each family's driver and supervisor, built from the config.

Each family's wiring lives in its own module (`cdu`, `pdu`, `bmc`); the
outputs each family offers are declared in `megapodd.outputs.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.base import DeviceKind
from drivers.ipmi.bmc import BmcDriver
from drivers.modbus.cdu import CduDriver
from drivers.snmp.rack_pdu import SnmpPduDriver
from megapodd.config import BmcConfig, CduConfig, Config, PduConfig
from megapodd.control.arbiter import OutputArbiter
from megapodd.devices.bmc import build_bmc
from megapodd.devices.cdu import build_cdu
from megapodd.devices.pdu import build_pdu
from megapodd.events import EventBus
from megapodd.outputs.catalog import device_outputs
from megapodd.store import PointStore
from megapodd.supervisor import DeviceSupervisor, poll_phases

# How many devices of a family poll in step. A PDU's poll ends in one long
# callback (~300 readings): one per phase. A BMC exchange's callbacks are short
# (~0.1 ms): 18 in step make a burst of ~1.5 ms, well inside the control tick's
# 5 ms, and share their wake-ups (bench/results/loops.md).
PDUS_IN_STEP = 1
BMCS_IN_STEP = 18


@dataclass(slots=True)
class Devices:
    cdus: dict[str, tuple[CduConfig, DeviceSupervisor[CduDriver]]] = field(default_factory=dict)
    pdus: dict[str, tuple[PduConfig, DeviceSupervisor[SnmpPduDriver]]] = field(
        default_factory=dict
    )
    bmcs: dict[str, tuple[BmcConfig, DeviceSupervisor[BmcDriver]]] = field(default_factory=dict)

    @property
    def supervisors(self) -> list[DeviceSupervisor[Any]]:
        found: list[DeviceSupervisor[Any]] = []
        for family in (self.cdus, self.pdus, self.bmcs):
            found += [supervisor for _, supervisor in family.values()]
        return found

    def supervisor(self, device_id: str) -> DeviceSupervisor[Any] | None:
        for family in (self.cdus, self.pdus, self.bmcs):
            entry = family.get(device_id)
            if entry is not None:
                return entry[1]
        return None


def build_devices(
    config: Config, store: PointStore, events: EventBus, config_path: Path = Path("<config>")
) -> Devices:
    devices = Devices()
    for cdu in config.cdu:
        devices.cdus[cdu.id] = (cdu, build_cdu(cdu, store, events))
    # Each family's polls spread over their periods (DeviceSupervisor._next_due_s).
    pdu_phases = poll_phases(len(config.pdu), PDUS_IN_STEP)
    for index, pdu in enumerate(config.pdu):
        devices.pdus[pdu.id] = (
            pdu,
            build_pdu(pdu, index, store, events, config_path, pdu_phases[index]),
        )
    bmc_phases = poll_phases(len(config.bmc), BMCS_IN_STEP)
    for index, bmc in enumerate(config.bmc):
        devices.bmcs[bmc.id] = (bmc, build_bmc(bmc, store, events, bmc_phases[index]))
    return devices


def register_outputs(arbiter: OutputArbiter, devices: Devices, config: Config) -> None:
    """Every output of every device, as the catalog declares them. Their
    defaults are None: with no claim the daemon writes nothing, and the device
    keeps what it has (or gets its own control back)."""
    racks = config.racks()
    for cdu_id, (_, cdu) in devices.cdus.items():
        for output in device_outputs(cdu_id, DeviceKind.CDU, racks=racks):
            arbiter.add(output, cdu)
    for pdu_id, (pdu_config, pdu) in devices.pdus.items():
        for output in device_outputs(pdu_id, DeviceKind.PDU, outlets=pdu_config.outlets):
            arbiter.add(output, pdu)
    for bmc_id, (_, bmc) in devices.bmcs.items():
        for output in device_outputs(bmc_id, DeviceKind.BMC):
            arbiter.add(output, bmc)
