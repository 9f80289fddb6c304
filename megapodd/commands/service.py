"""What each command does. Reads come from the store, the arbiter and the
engines; every action goes through the arbiter (which checks it against the
output's spec and its owners) and is audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.errors import ValueRejected
from megapodd.commands.audit import Audit
from megapodd.commands.caller import Caller, Role
from megapodd.commands.dispatch import Command, CommandRefused
from megapodd.commands.requests import (
    EmptyRequest,
    EventsRequest,
    OutletRequest,
    OverrideRequest,
    PointsRequest,
    PowerBudgetRequest,
    RackRequest,
    ReleaseRequest,
    ResetRequest,
    ServerRequest,
    SetpointRequest,
    StatusRequest,
)
from megapodd.commands.views import device_list, event_list, no_such, point_list
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.control.loops import LoopEngine, SetpointRefused
from megapodd.devices import Devices
from megapodd.events import EventBus
from megapodd.power.controller import PowerController
from megapodd.safety.engine import InterlockEngine, ResetRefused
from megapodd.store import PointStore

# megapodctl's words for chassis power: a state to set, or a one-shot operation.
SERVER_STATES = {"on": "on", "off": "off", "soft": "soft_off"}
SERVER_PULSES = frozenset({"cycle", "reset"})


class CommandService:
    def __init__(
        self,
        store: PointStore,
        events: EventBus,
        devices: Devices,
        arbiter: OutputArbiter,
        interlocks: InterlockEngine,
        loops: LoopEngine,
        clock: Callable[[], float],
        pod_info: Callable[[], dict[str, object]],
        power: PowerController | None = None,
    ) -> None:
        self._power = power
        self._store = store
        self._events = events
        self._devices = devices
        self._arbiter = arbiter
        self._interlocks = interlocks
        self._loops = loops
        self._clock = clock
        self._pod_info = pod_info
        self.audit = Audit(events)

    def commands(self) -> dict[str, Command]:
        reader, admin = Role.READER, Role.ADMIN
        return {
            "status": Command(self._status, StatusRequest, reader, "pod and device status"),
            "events": Command(self._recent_events, EventsRequest, reader, "recent events"),
            "devices": Command(self._devices_list, EmptyRequest, reader, "devices and cabling"),
            "points": Command(self._points, PointsRequest, reader, "points, filtered"),
            "outlet": Command(
                self._outlet, OutletRequest, admin, "switch a PDU outlet on/off/reboot", fleet=True
            ),
            "server": Command(
                self._server, ServerRequest, admin, "server power on/off/cycle/reset/soft",
                fleet=True,
            ),
            "outputs": Command(self._outputs, EmptyRequest, reader, "actuator owners and values"),
            "override": Command(
                self._override, OverrideRequest, admin, "hold an output for a while", fleet=True
            ),
            "release": Command(self._release, ReleaseRequest, admin, "end an override", fleet=True),
            "interlocks": Command(
                self._interlocks_status, EmptyRequest, reader, "interlock states"
            ),
            "loops": Command(self._loops_status, EmptyRequest, reader, "control loop states"),
            "power": Command(
                self._power_status, EmptyRequest, reader, "power budget, phase loads, caps"
            ),
            "power_budget": Command(
                self._power_budget, PowerBudgetRequest, admin,
                "change the pod's power budget (within [power] bounds)", fleet=True,
            ),
            "setpoint": Command(
                self._setpoint, SetpointRequest, admin, "change a loop's setpoint (within limits)"
            ),
            # Local only: coolant back into a rack is for someone who has looked at it.
            "rack": Command(
                self._rack, RackRequest, admin, "open or isolate a rack's coolant supply"
            ),
            # Never over MQTT: interlock resets are local only.
            "reset": Command(
                self._reset, ResetRequest, admin, "reset a latched interlock (local only)"
            ),
        }

    # -- reading -------------------------------------------------------------

    async def _status(self, request: StatusRequest, _caller: Caller) -> object:
        links = {s.device_id: s.link_stats() for s in self._devices.supervisors}
        devices = [{**d.as_json(), "link": links.get(d.id, {})} for d in self._store.devices()]
        if request.device is not None:
            devices = [d for d in devices if d["id"] == request.device]
            if not devices:
                raise no_such("device", request.device, (d.id for d in self._store.devices()))
        return {"pod": self._pod_info(), "devices": devices}

    async def _recent_events(self, request: EventsRequest, _caller: Caller) -> object:
        return event_list(self._events.recent, request, str(self._pod_info()["boot_id"]))

    async def _devices_list(self, _request: EmptyRequest, _caller: Caller) -> object:
        return device_list(self._store, self._devices)

    async def _points(self, request: PointsRequest, _caller: Caller) -> object:
        return point_list(self._store, request)

    async def _outputs(self, _request: EmptyRequest, _caller: Caller) -> object:
        return self._arbiter.snapshot()

    async def _interlocks_status(self, _request: EmptyRequest, _caller: Caller) -> object:
        return self._interlocks.snapshot()

    async def _loops_status(self, _request: EmptyRequest, _caller: Caller) -> object:
        return self._loops.snapshot()

    def _power_controller(self) -> PowerController:
        if self._power is None:
            raise CommandRefused("this pod has no power budget: add [power] to the config")
        return self._power

    async def _power_status(self, _request: EmptyRequest, _caller: Caller) -> object:
        return self._power_controller().snapshot()

    # -- acting --------------------------------------------------------------

    @staticmethod
    def _args(request: Any) -> dict[str, object]:
        return dict(request.model_dump(exclude_none=True))

    async def _outlet(self, request: OutletRequest, caller: Caller) -> object:
        entry = self._devices.pdus.get(request.pdu)
        if entry is None:
            known = ", ".join(sorted(self._devices.pdus)) or "none"
            raise CommandRefused(f"no PDU {request.pdu!r}; PDUs: {known}")
        outlets = entry[0].outlets
        if request.outlet > outlets:
            raise CommandRefused(
                f"'outlet' must be an integer from 1 to {outlets} on {request.pdu}; "
                f"got {request.outlet}"
            )
        name = f"{request.pdu}.outlet_{request.outlet}"

        async def switch() -> dict[str, Any]:
            if request.action == "reboot":
                await self._arbiter.pulse(name, "reboot", caller.owner, caller.who)
                state = "on"
            else:
                state = str(await self._arbiter.act(name, request.action, caller.owner, caller.who))
            return {"pdu": request.pdu, "outlet": request.outlet, "state": state}

        return await self.audit.run("outlet", request.pdu, self._args(request), caller, switch)

    async def _server(self, request: ServerRequest, caller: Caller) -> object:
        if request.server not in self._devices.bmcs:
            raise no_such("server", request.server, self._devices.bmcs)
        name = f"{request.server}.chassis_power"

        async def control() -> dict[str, Any]:
            if request.action in SERVER_PULSES:
                await self._arbiter.pulse(name, request.action, caller.owner, caller.who)
                state = "on"
            else:
                target = SERVER_STATES[request.action]
                state = str(await self._arbiter.act(name, target, caller.owner, caller.who))
            return {"server": request.server, "action": request.action, "state": state}

        return await self.audit.run("server", request.server, self._args(request), caller, control)

    def _output_name(self, device: str, output: str) -> str:
        name = f"{device}.{output}"
        try:
            self._arbiter.output(name)
        except ValueRejected as exc:
            raise CommandRefused(str(exc)) from None
        return name

    async def _override(self, request: OverrideRequest, caller: Caller) -> object:
        name = self._output_name(request.device, request.output)
        output = self._arbiter.outputs[name]
        spec = output.spec
        if not spec.continuous and len(set(spec.ranks)) > 1:
            # A standing "on" or "open" parked under an interlock would take
            # effect at its reset: coolant or power back by itself.
            raise CommandRefused(
                f"{name} is switched, not overridden: use megapodctl outlet, server or rack"
            )
        claim = Claim(caller.owner, request.value, caller.who, self._clock() + request.duration_s)

        async def apply() -> dict[str, Any]:
            winner = await self._arbiter.claim(name, claim)
            held_by = None
            if winner is not None and winner.owner > claim.owner:
                held_by = winner.owner.name.lower()
            value = output.claims[claim.owner].value if claim.owner in output.claims else None
            return {
                "output": name,
                "value": value,
                "duration_s": request.duration_s,
                "held_by": held_by,
            }

        return await self.audit.run(
            "override", output.device_id, self._args(request), caller, apply
        )

    async def _release(self, request: ReleaseRequest, caller: Caller) -> object:
        name = self._output_name(request.device, request.output)
        output = self._arbiter.outputs[name]

        async def apply() -> dict[str, Any]:
            # A technician may end the fleet's claim too; the fleet never ends a technician's.
            mine = [o for o in (Owner.OVERRIDE, Owner.FLEET) if o <= caller.owner]
            ended = next((o for o in mine if o in output.claims), None)
            if ended is None:
                above = output.claims.get(Owner.OVERRIDE)
                if above is not None and caller.owner < Owner.OVERRIDE:
                    raise CommandRefused(
                        f"{name} is held by a technician's override ({above.by}); "
                        "the fleet cannot end it"
                    )
                raise CommandRefused(f"{name} has no override")
            winner = self._arbiter.release(name, ended, f"released by {caller.who}")
            return {
                "output": name,
                "released": ended.name.lower(),
                "owner": winner.owner.name.lower() if winner else None,
            }

        return await self.audit.run(
            "release", output.device_id, self._args(request), caller, apply
        )

    async def _rack(self, request: RackRequest, caller: Caller) -> object:
        names = [f"{cdu}.rack_{request.rack}_isolation" for cdu in self._devices.cdus]
        missing = [n for n in names if n not in self._arbiter.outputs]
        if not names or missing:
            raise CommandRefused(f"rack {request.rack} has no isolation valve in this pod")
        state = "open" if request.action == "open" else "closed"

        async def apply() -> dict[str, Any]:
            for name in names:
                await self._arbiter.act(name, state, caller.owner, caller.who)
            return {"rack": request.rack, "isolation": state}

        return await self.audit.run("rack", "megapodctl", self._args(request), caller, apply)

    async def _setpoint(self, request: SetpointRequest, caller: Caller) -> object:
        async def apply() -> dict[str, Any]:
            try:
                changed = self._loops.set_setpoint(request.loop, request.setpoint)
            except SetpointRefused as exc:
                raise CommandRefused(str(exc)) from None
            return {"loop": request.loop, "setpoint": request.setpoint, "loops": changed}

        return await self.audit.run("setpoint", "megapodctl", self._args(request), caller, apply)

    async def _power_budget(self, request: PowerBudgetRequest, caller: Caller) -> object:
        power = self._power_controller()

        async def apply() -> dict[str, Any]:
            watts = power.set_budget(request.watts, caller.who)  # BudgetRefused: audited
            low, high = power.bounds_w()
            return {"budget_w": watts, "min_budget_w": low, "max_budget_w": high}

        return await self.audit.run(
            "power_budget", "megapodd", self._args(request), caller, apply
        )

    async def _reset(self, request: ResetRequest, caller: Caller) -> object:
        async def apply() -> dict[str, Any]:
            try:
                done = self._interlocks.reset(request.interlock, caller.who)
            except ResetRefused as exc:
                raise CommandRefused(str(exc)) from None
            return {"interlock": request.interlock, "state": "normal", "reset": done}

        return await self.audit.run("reset", "megapodctl", self._args(request), caller, apply)
