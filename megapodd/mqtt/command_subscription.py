"""Commands from the fleet over MQTT: `<prefix>/<pod>/cmd/<verb>`.

Off unless `[mqtt] commands = true`. The payload is the command's arguments as
a JSON object with a `request_id` (a redelivered command runs once); the reply
goes to the MQTT 5 response topic with the request's correlation data. Only
the commands marked for the fleet are taken: an interlock can never be reset
from outside the pod (that is local only). Fleet claims rank below a
technician's at the pod, and every command is range-checked and audited
exactly as one from megapodctl. A retained message is never a command: it
would run again on every reconnect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from megapodd.commands.caller import FLEET_CALLER
from megapodd.commands.dedup import RequestLog
from megapodd.commands.dispatch import Command, RefusalAudit, Reply, refused, run_command
from megapodd.commands.payload import loads_strict

log = structlog.get_logger("megapodd.mqtt")


def _valid_reply_topic(topic: str) -> bool:
    """A topic a reply can be published to: no wildcards, no NUL, not too long."""
    return not any(c in topic for c in "+#\0") and 0 < len(topic.encode()) <= 65535


@dataclass(frozen=True, slots=True)
class Answer:
    topic: str
    correlation: bytes | None
    payload: bytes


class CommandSubscription:
    def __init__(
        self,
        commands: Mapping[str, Command],
        on_refused: RefusalAudit | None,
        protected_prefix: str,
    ) -> None:
        self._commands = {verb: c for verb, c in commands.items() if c.fleet}
        self._on_refused = on_refused
        # Replies never go under the pods' own topics (another pod's cmd/, say).
        self._protected_prefix = protected_prefix.rstrip("/") + "/"
        self.requests = RequestLog()

    async def serve(self, client: aiomqtt.Client, prefix: str) -> None:
        """Answer commands on this connection until it ends."""
        await client.subscribe(f"{prefix}+", qos=1)
        try:
            async for message in client.messages:
                topic = str(message.topic)
                if not topic.startswith(prefix) or not isinstance(message.payload, bytes):
                    continue
                props = message.properties
                try:
                    answer = await self.handle(
                        topic.removeprefix(prefix),
                        message.payload,
                        getattr(props, "ResponseTopic", None),
                        getattr(props, "CorrelationData", None),
                        retained=message.retain,
                    )
                    if answer is not None:
                        await self._publish(client, answer)
                except aiomqtt.MqttError:
                    raise
                except Exception:  # one bad command must never stop publishing
                    log.exception("mqtt_command_failed", topic=topic)
        except aiomqtt.MqttError as exc:
            # The connection went; the session notices and reconnects.
            log.info("mqtt_commands_stopped", error=str(exc))

    @staticmethod
    async def _publish(client: aiomqtt.Client, answer: Answer) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
        if answer.correlation is not None:
            properties.CorrelationData = answer.correlation
        await client.publish(answer.topic, answer.payload, qos=1, properties=properties)

    async def handle(
        self,
        verb: str,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
        retained: bool = False,
    ) -> Answer | None:
        """Run one command; the answer, or None when the sender asked for none."""
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
        return Answer(response_topic, correlation, body)

    async def _run(self, verb: str, payload: bytes) -> Reply:
        if verb not in self._commands:
            allowed = ", ".join(sorted(self._commands))
            return self._refuse(verb, f"{verb!r} is not a command over MQTT; commands: {allowed}")
        try:
            args = loads_strict(payload) if payload.strip() else {}
        except ValueError as exc:
            return self._refuse(verb, str(exc))
        if not isinstance(args, dict):
            return self._refuse(verb, "the payload must be a JSON object of arguments")
        request_id = args.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            return self._refuse(
                verb,
                "a fleet command needs a 'request_id' (a string): MQTT may deliver it twice, "
                "and it must run once",
            )

        async def run() -> Reply:
            return await run_command(self._commands, self._on_refused, verb, args, FLEET_CALLER)

        return await self.requests.once(request_id, verb, args, run)

    def _refuse(self, verb: str, error: str) -> Reply:
        """Every refused fleet command leaves an audit event too."""
        if self._on_refused is not None:
            self._on_refused(verb, {}, FLEET_CALLER, error)
        return refused(error)
