"""Commands from the fleet over MQTT: `<prefix>/<pod>/cmd/<verb>`.

Off unless `[mqtt] commands = true`. The payload is the command's arguments as
a JSON object; the reply goes to the MQTT 5 response topic with the request's
correlation data. Only some verbs are allowed here: an interlock can never be
reset or overridden from outside the pod (that is local only), and every
command is range-checked and audited exactly as one from megapodctl.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from megapodd.api.server import Caller, Command, RefusalAudit, Role, loads_strict, run_command

# What the fleet may do. Not "reset": interlock resets are local only.
MQTT_VERBS = frozenset({"outlet", "server", "override", "release"})

# The broker authenticated the client; what it may publish is the broker's ACL.
MQTT_CALLER = Caller(uid=-1, pid=0, role=Role.ADMIN, via="mqtt")


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    correlation: bytes | None
    payload: bytes


class MqttCommands:
    def __init__(self, commands: Mapping[str, Command], on_refused: RefusalAudit | None) -> None:
        self._commands = {verb: c for verb, c in commands.items() if verb in MQTT_VERBS}
        self._on_refused = on_refused

    async def handle(
        self, verb: str, payload: bytes, response_topic: str | None, correlation: bytes | None
    ) -> Reply | None:
        """Run one command; the reply, or None when the sender asked for none."""
        result = await self._run(verb, payload)
        if not response_topic:
            return None
        body = json.dumps(result, separators=(",", ":"), default=str).encode()
        return Reply(response_topic, correlation, body)

    async def _run(self, verb: str, payload: bytes) -> dict[str, object]:
        if verb not in MQTT_VERBS:
            allowed = ", ".join(sorted(MQTT_VERBS))
            return {
                "ok": False,
                "error": f"{verb!r} is not a command over MQTT; commands: {allowed}",
            }
        try:
            args = loads_strict(payload) if payload.strip() else {}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        if not isinstance(args, dict):
            return {"ok": False, "error": "the payload must be a JSON object of arguments"}
        return await run_command(self._commands, self._on_refused, verb, args, MQTT_CALLER)
