"""What the local API can be asked to do. Every acting command is checked,
audited as an event (with the caller's uid from the kernel) and answered with
the confirmed result or an error that names the problem."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from drivers.errors import DeviceError, DriverError, TransportError, ValueRejected
from drivers.ipmi.commands import ChassisAction
from drivers.snmp.rack_pdu import OutletAction
from megapodd.api.server import ApiError, Caller, Command, Role
from megapodd.config import INTERLOCK_OUTPUTS, Config
from megapodd.control.arbiter import MAX_OVERRIDE_S, Claim, OutputArbiter, Owner
from megapodd.devices import Devices
from megapodd.events import EventBus, Severity
from megapodd.safety.engine import InterlockEngine, ResetRefused
from megapodd.store import PointStore

Args = Mapping[str, object]


def arg_str(args: Args, key: str, choices: tuple[str, ...] | None = None) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(f"{key!r} must be a non-empty string")
    if choices is not None and value not in choices:
        raise ApiError(f"{key!r} must be one of {', '.join(choices)}; got {value!r}")
    return value


def arg_number(args: Args, key: str, low: float, high: float) -> float:
    value = args.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(f"{key!r} must be a number from {low:g} to {high:g}; got {value!r}")
    return float(value)


def arg_int(args: Args, key: str, low: int, high: int) -> int:
    value = args.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(f"{key!r} must be an integer from {low} to {high}; got {value!r}")
    return value


# megapodctl's words for IPMI chassis control actions.
SERVER_ACTIONS: dict[str, ChassisAction] = {
    "on": ChassisAction.ON,
    "off": ChassisAction.OFF,
    "cycle": ChassisAction.CYCLE,
    "reset": ChassisAction.HARD_RESET,
    "soft": ChassisAction.SOFT_SHUTDOWN,
}


def _check_output_range(name: str, value: float) -> None:
    """The values an output accepts (the same table the interlock config uses)."""
    _, _, output = name.partition(".")
    for ranges in INTERLOCK_OUTPUTS.values():
        if output in ranges:
            low, high = ranges[output]
            if not low <= value <= high:
                raise ValueRejected(f"{name} {value:g} is outside {low:g}–{high:g}")
            return


class CommandService:
    def __init__(
        self,
        config: Config,
        store: PointStore,
        events: EventBus,
        devices: Devices,
        arbiter: OutputArbiter,
        interlocks: InterlockEngine,
        clock: Callable[[], float],
        pod_info: Callable[[], dict[str, object]],
    ) -> None:
        self._config = config
        self._store = store
        self._events = events
        self._devices = devices
        self._arbiter = arbiter
        self._interlocks = interlocks
        self._clock = clock
        self._pod_info = pod_info

    def commands(self) -> dict[str, Command]:
        return {
            "status": Command(self._status, Role.READER, "pod and device status"),
            "events": Command(self._recent_events, Role.READER, "recent events"),
            "outlet": Command(self._outlet, Role.ADMIN, "switch a PDU outlet on/off/reboot"),
            "server": Command(self._server, Role.ADMIN, "server chassis power on/off/cycle/soft"),
            "outputs": Command(self._outputs, Role.READER, "actuator owners and values"),
            "override": Command(self._override, Role.ADMIN, "override an output for a while"),
            "release": Command(self._release, Role.ADMIN, "end an override"),
            "interlocks": Command(self._interlocks_status, Role.READER, "interlock states"),
            "reset": Command(self._reset, Role.ADMIN, "reset a latched interlock (local only)"),
        }

    def refused(self, name: str, args: Args, caller: Caller, error: str) -> None:
        """Audit an acting request refused before it ran (role, arguments)."""
        data = {"command": name, "args": dict(args), "caller": caller.as_json(), "error": error}
        self._events.emit(
            "command_rejected", Severity.WARNING, "megapodctl", f"{name} refused: {error}", data
        )

    # -- reading -------------------------------------------------------------

    async def _status(self, args: Args, _caller: Caller) -> object:
        device = args.get("device")
        links = {s.device_id: s.link_stats() for s in self._devices.supervisors}
        devices = [{**d.as_json(), "link": links.get(d.id, {})} for d in self._store.devices()]
        if device is not None:
            devices = [d for d in devices if d["id"] == device]
            if not devices:
                raise ApiError(f"no device {device!r}")
        return {"pod": self._pod_info(), "devices": devices}

    async def _recent_events(self, args: Args, _caller: Caller) -> object:
        count = arg_int(args, "count", 1, 500) if "count" in args else 20
        return [e.as_json() for e in list(self._events.recent)[-count:]]

    # -- acting --------------------------------------------------------------

    async def audited(
        self,
        name: str,
        source: str,
        args: Args,
        caller: Caller,
        action: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run an acting command; every outcome is an event (never dropped)."""
        data: dict[str, object] = {"command": name, "args": dict(args), "caller": caller.as_json()}
        started = time.monotonic()
        try:
            result = await action()
        except ValueRejected as exc:
            self._events.emit(
                "command_rejected", Severity.WARNING, source, f"{name} refused: {exc}", data
            )
            raise ApiError(f"refused: {exc}", audited=True) from None
        except DeviceError as exc:
            self._events.emit(
                "command_failed",
                Severity.WARNING,
                source,
                f"{name}: device refused: {exc}",
                {**data, "error": type(exc).__name__, "code": exc.code},
            )
            raise ApiError(f"device refused: {exc}", audited=True) from None
        except TransportError as exc:
            self._events.emit(
                "command_failed", Severity.WARNING, source, f"{name}: no answer: {exc}", data
            )
            raise ApiError(f"device did not answer: {exc}", audited=True) from None
        except DriverError as exc:
            self._events.emit("command_failed", Severity.WARNING, source, f"{name}: {exc}", data)
            raise ApiError(str(exc), audited=True) from None
        except ApiError:
            raise  # refused before acting: the API server audits it
        except Exception as exc:
            self._events.emit(
                "command_failed",
                Severity.ALARM,
                source,
                f"{name} failed unexpectedly: {type(exc).__name__}: {exc}",
                {**data, "error": type(exc).__name__},
            )
            raise
        data["result"] = result
        data["duration_s"] = round(time.monotonic() - started, 3)
        self._events.emit("command", Severity.INFO, source, f"{name} done: {result}", data)
        return result

    async def _outlet(self, args: Args, caller: Caller) -> object:
        pdu_id = arg_str(args, "pdu")
        pdu = self._devices.pdus.get(pdu_id)
        if pdu is None:
            raise ApiError(f"no PDU {pdu_id!r}; PDUs: {', '.join(sorted(self._devices.pdus))}")
        outlet = arg_int(args, "outlet", 1, pdu.config.outlets)
        action = OutletAction(arg_str(args, "action", tuple(a.value for a in OutletAction)))

        async def switch() -> dict[str, Any]:
            state = await pdu.driver.set_outlet(outlet, action)
            pdu.supervisor.poll_now()  # the store shows the new state at once
            return {"pdu": pdu_id, "outlet": outlet, "state": state}

        return await self.audited("outlet", pdu_id, args, caller, switch)

    async def _server(self, args: Args, caller: Caller) -> object:
        server_id = arg_str(args, "server")
        bmc = self._devices.bmcs.get(server_id)
        if bmc is None:
            raise ApiError(f"no server {server_id!r}")
        action = arg_str(args, "action", tuple(SERVER_ACTIONS))

        async def control() -> dict[str, Any]:
            status = await bmc.driver.chassis_control(SERVER_ACTIONS[action])
            bmc.supervisor.poll_now()
            return {"server": server_id, "action": action, "power_on": status.power_on}

        return await self.audited("server", server_id, args, caller, control)

    async def _outputs(self, _args: Args, _caller: Caller) -> object:
        return self._arbiter.snapshot()

    def _output_name(self, args: Args) -> str:
        name = f"{arg_str(args, 'device')}.{arg_str(args, 'output')}"
        if name not in self._arbiter.outputs:
            known = ", ".join(sorted(self._arbiter.outputs)) or "none"
            raise ApiError(f"no output {name!r}; outputs: {known}")
        return name

    async def _override(self, args: Args, caller: Caller) -> object:
        name = self._output_name(args)
        value = arg_number(args, "value", -1e9, 1e9)
        duration_s = arg_number(args, "duration_s", 1.0, MAX_OVERRIDE_S)
        output = self._arbiter.outputs[name]
        claim = Claim(Owner.OVERRIDE, value, caller.who, self._clock() + duration_s)

        async def apply() -> dict[str, Any]:
            # An override held behind an interlock reaches no driver now (whose
            # own check refuses a bad value before the wire): check it here, or
            # it would fail for hours once the trip resets.
            holder = output.winner()
            if holder is not None and holder.owner > Owner.OVERRIDE:
                _check_output_range(name, value)
            winner = await self._arbiter.claim(name, claim)
            held_by = None if winner is None or winner is claim else winner.owner.name.lower()
            return {"output": name, "value": value, "duration_s": duration_s, "held_by": held_by}

        return await self.audited("override", output.device_id, args, caller, apply)

    async def _release(self, args: Args, caller: Caller) -> object:
        name = self._output_name(args)
        output = self._arbiter.outputs[name]

        async def apply() -> dict[str, Any]:
            if Owner.OVERRIDE not in output.claims:
                raise ApiError(f"{name} has no override")
            winner = self._arbiter.release(name, Owner.OVERRIDE, f"released by {caller.who}")
            return {"output": name, "owner": winner.owner.name.lower() if winner else None}

        return await self.audited("release", output.device_id, args, caller, apply)

    async def _interlocks_status(self, _args: Args, _caller: Caller) -> object:
        return self._interlocks.snapshot()

    async def _reset(self, args: Args, caller: Caller) -> object:
        rule_id = arg_str(args, "interlock")

        async def apply() -> dict[str, Any]:
            try:
                self._interlocks.reset(rule_id, caller.who)
            except ResetRefused as exc:
                raise ApiError(str(exc)) from None
            return {"interlock": rule_id, "state": "normal"}

        return await self.audited("reset", "megapodctl", args, caller, apply)
