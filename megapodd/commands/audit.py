"""The audit trail: every acting command's outcome is an event (never dropped)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from drivers.errors import DeviceError, DriverError, TransportError, ValueRejected
from megapodd.commands.caller import Caller
from megapodd.commands.dispatch import CommandRefused
from megapodd.events import EventBus, Severity


class Audit:
    def __init__(self, events: EventBus) -> None:
        self._events = events

    def refused(self, name: str, args: Mapping[str, object], caller: Caller, error: str) -> None:
        """An acting request refused before it ran (role, arguments)."""
        data = {"command": name, "args": dict(args), "caller": caller.as_json(), "error": error}
        source = "fleet" if caller.via == "mqtt" else "megapodctl"
        self._events.emit(
            "command_rejected", Severity.WARNING, source, f"{name} refused: {error}", data
        )

    async def run(
        self,
        name: str,
        source: str,
        args: Mapping[str, object],
        caller: Caller,
        action: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run an acting command; every outcome is an event."""
        data: dict[str, object] = {"command": name, "args": dict(args), "caller": caller.as_json()}
        started = time.monotonic()
        emit = self._events.emit
        try:
            result = await action()
        except ValueRejected as exc:
            emit("command_rejected", Severity.WARNING, source, f"{name} refused: {exc}",
                 {**data, "error": str(exc)})
            raise CommandRefused(f"refused: {exc}", audited=True) from None
        except DeviceError as exc:
            emit("command_failed", Severity.WARNING, source, f"{name}: device refused: {exc}",
                 {**data, "error": type(exc).__name__, "code": exc.code})
            raise CommandRefused(f"device refused: {exc}", audited=True) from None
        except TransportError as exc:
            emit("command_failed", Severity.WARNING, source, f"{name}: no answer: {exc}",
                 {**data, "error": type(exc).__name__})
            raise CommandRefused(f"device did not answer: {exc}", audited=True) from None
        except DriverError as exc:
            emit("command_failed", Severity.WARNING, source, f"{name}: {exc}",
                 {**data, "error": type(exc).__name__})
            raise CommandRefused(str(exc), audited=True) from None
        except CommandRefused:
            raise  # refused before acting: dispatch audits it
        except Exception as exc:
            emit("command_failed", Severity.ALARM, source,
                 f"{name} failed unexpectedly: {type(exc).__name__}: {exc}",
                 {**data, "error": type(exc).__name__})
            raise
        data["result"] = result
        data["duration_s"] = round(time.monotonic() - started, 3)
        emit("command", Severity.INFO, source, f"{name} done: {summary(result)}", data)
        return result


def summary(result: Mapping[str, object]) -> str:
    """A command's result as the words a technician reads in an event line:
    `pdu=pdu-r2a outlet=7 state=off`; nested values as compact JSON."""
    return " ".join(f"{key}={_word(value)}" for key, value in result.items())


def _word(value: object) -> str:
    if value is None or isinstance(value, str | int | float | bool):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)
