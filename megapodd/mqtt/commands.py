"""Commands from the fleet over MQTT: `<prefix>/<pod>/cmd/<verb>`.

Off unless `[mqtt] commands = true`. The payload is the command's arguments as
a JSON object; the reply goes to the MQTT 5 response topic with the request's
correlation data. Only some verbs are allowed here: an interlock can never be
reset from outside the pod (that is local only; an override from the fleet
still ranks below a tripped interlock), and every command is range-checked
and audited exactly as one from megapodctl. A retained message is never a
command: it would run again on every reconnect.
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


def _valid_reply_topic(topic: str) -> bool:
    """A topic a reply can be published to: no wildcards, no NUL, not too long."""
    return not any(c in topic for c in "+#\0") and 0 < len(topic.encode()) <= 65535


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    correlation: bytes | None
    payload: bytes


class MqttCommands:
    def __init__(
        self,
        commands: Mapping[str, Command],
        on_refused: RefusalAudit | None,
        protected_prefix: str,
    ) -> None:
        self._commands = {verb: c for verb, c in commands.items() if verb in MQTT_VERBS}
        self._on_refused = on_refused
        # Replies never go under the pods' own topics (another pod's cmd/, say).
        self._protected_prefix = protected_prefix.rstrip("/") + "/"

    async def handle(
        self,
        verb: str,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
        retained: bool = False,
    ) -> Reply | None:
        """Run one command; the reply, or None when the sender asked for none."""
        if retained:
            self._refuse(verb, "a retained message is not a command (it would rerun)")
            return None
        if response_topic and not _valid_reply_topic(response_topic):
            self._refuse(
                verb, f"response topic {response_topic[:80]!r} is not a topic to publish to"
            )
            return None
        if response_topic and response_topic.startswith(self._protected_prefix):
            self._refuse(
                verb, f"response topic {response_topic!r} is under {self._protected_prefix}"
            )
            return None
        result = await self._run(verb, payload)
        if not response_topic:
            return None
        body = json.dumps(result, separators=(",", ":"), default=str).encode()
        return Reply(response_topic, correlation, body)

    async def _run(self, verb: str, payload: bytes) -> dict[str, object]:
        if verb not in MQTT_VERBS:
            allowed = ", ".join(sorted(MQTT_VERBS))
            return self._refuse(verb, f"{verb!r} is not a command over MQTT; commands: {allowed}")
        try:
            args = loads_strict(payload) if payload.strip() else {}
        except ValueError as exc:
            return self._refuse(verb, str(exc))
        if not isinstance(args, dict):
            return self._refuse(verb, "the payload must be a JSON object of arguments")
        return await run_command(self._commands, self._on_refused, verb, args, MQTT_CALLER)

    def _refuse(self, verb: str, error: str) -> dict[str, object]:
        """Every refused fleet command leaves an audit event too."""
        if self._on_refused is not None:
            self._on_refused(verb, {}, MQTT_CALLER, error)
        return {"ok": False, "error": error}
