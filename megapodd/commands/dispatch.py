"""Dispatch: look a command up, check the caller's role and the arguments,
run it, and make sure every refusal of an acting command is audited."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from megapodd.commands.caller import Caller, Role
from megapodd.commands.requests import Request, RequestError, parse_request

log = structlog.get_logger("megapodd.commands")


class CommandRefused(Exception):
    """A request was refused; the message goes back to the caller."""

    def __init__(self, message: str, audited: bool = False) -> None:
        super().__init__(message)
        self.audited = audited  # an event already records this refusal


Handler = Callable[[Any, Caller], Awaitable[object]]
# Told of every acting request refused before its handler ran (for the audit trail).
RefusalAudit = Callable[[str, Mapping[str, object], Caller, str], None]


@dataclass(frozen=True, slots=True)
class Command:
    handler: Handler  # takes the parsed request
    request: type[Request]
    role: Role  # the least role allowed to call it
    help: str
    fleet: bool = False  # may come from the fleet over MQTT


Reply = dict[str, object]


def refused(error: str) -> Reply:
    return {"ok": False, "error": error}


async def run_command(
    commands: Mapping[str, Command],
    on_refused: RefusalAudit | None,
    name: str,
    args: Mapping[str, object],
    caller: Caller,
) -> Reply:
    """Check the caller's role and the arguments, run the command, and audit
    refusals of acting ones. Never raises for a bad request."""
    command = commands.get(name)
    if command is None:
        return refused(f"unknown command {name!r}; known: {sorted(commands)}")
    acting = command.role is Role.ADMIN

    def refuse(error: str) -> Reply:
        if acting and on_refused is not None:
            on_refused(name, args, caller, error)
        return refused(error)

    if caller.role < command.role:
        return refuse(f"{name!r} needs the {command.role.name.lower()} role")
    try:
        request = parse_request(command.request, dict(args))
    except RequestError as exc:
        return refuse(str(exc))
    try:
        result = await command.handler(request, caller)
    except CommandRefused as exc:
        if exc.audited:
            return refused(str(exc))
        return refuse(str(exc))
    except Exception as exc:  # the daemon must outlive a bad request
        log.exception("command_failed", cmd=name)
        return refused(f"{name} failed: {type(exc).__name__}: {exc}")
    return {"ok": True, "result": result}
