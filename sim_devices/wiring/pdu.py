"""Between the physical model and the simulated PDUs (sim_devices.pdu).

Each server's electrical power is the load behind its outlet; an outlet that
is off (switched, or its phase breaker tripped) powers its server off.
"""

from __future__ import annotations

from sim_devices.faults import FaultError
from sim_devices.pdu import PHASE_VOLTAGE_V as PDU_PHASE_VOLTAGE_V
from sim_devices.pdu import STICKABLE_POINTS, PduFarm, PduSpec
from sim_devices.physics import PodModel, PodSnapshot
from sim_devices.physics import constants as k
from sim_devices.profiles import PodLayout, PortPlan, breaker_rating_a

PDU_POINTS: frozenset[str] = STICKABLE_POINTS  # what sensor-stuck/sensor-range may touch


def pdu_specs(
    layout: PodLayout, ports: PortPlan, host: str, oversubscribe: float = 1.0
) -> list[PduSpec]:
    breaker_a = breaker_rating_a(layout, k.SERVER_PEAK_W, PDU_PHASE_VOLTAGE_V, oversubscribe)
    return [
        PduSpec(
            name=pdu,
            port=ports.pdu_port(pdu),
            host=host,
            outlets=layout.outlets_per_pdu,
            breaker_a=breaker_a,
        )
        for pdu in layout.pdu_ids()
    ]


class PduLink:
    def __init__(self, farm: PduFarm, model: PodModel, layout: PodLayout) -> None:
        self.farm = farm
        self.model = model
        self.plugs = {sid: layout.plug(sid) for sid in model.server_ids}
        # Outlets a breaker trip turned off, so clearing it restores only those.
        self._tripped_outlets: dict[tuple[str, int], list[int]] = {}

    def read_into_model(self) -> None:
        for sid, plug in self.plugs.items():
            self.model.servers[sid].outlet_on = self.farm[plug.pdu_id].model.outlet_is_on(
                plug.outlet
            )

    def write_from(self, snap: PodSnapshot) -> None:
        for server in snap.servers:
            plug = self.plugs[server.server]
            self.farm[plug.pdu_id].model.set_outlet_load_w(plug.outlet, server.power_w)

    # --- faults ---------------------------------------------------------------
    def trip(self, pdu: str, phase: int) -> None:
        model = self.farm[pdu].model
        was_on = [o.number for o in model.outlets if model.phase_of(o.number) == phase and o.on]
        self._tripped_outlets.setdefault((pdu, phase), was_on)
        model.trip_phase(phase)

    def reset_breaker(self, pdu: str, phase: int) -> None:
        """A technician closes the breaker and switches its outlets back on."""
        if (pdu, phase) not in self._tripped_outlets:
            raise FaultError(f"{pdu} phase {phase} was not tripped by an injected fault")
        model = self.farm[pdu].model
        for outlet in self._tripped_outlets.pop((pdu, phase)):
            model.switch(outlet, True)

    def stick(self, pdu: str, point: str, value: float | None) -> None:
        """A meter stuck at `value` (in the point's unit), or broken (None)."""
        self.farm[pdu].model.stuck[point] = value

    def clear_sensor(self, pdu: str, point: str) -> None:
        self.farm[pdu].model.stuck.pop(point, None)

    def set_silent(self, pdu: str, silent: bool) -> None:
        self.farm[pdu].silent = silent
