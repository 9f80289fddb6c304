"""Commands from the fleet over MQTT: `<prefix>/<pod>/cmd/<verb>`.

Off unless `[mqtt] commands = true`. The payload is the command's arguments as
a JSON object with a `request_id` (a redelivered command runs once); the reply
goes to the MQTT 5 response topic with the request's correlation data. Only
the commands marked for the fleet are taken: an interlock can never be reset
from outside the pod (that is local only). Fleet claims rank below a
technician's at the pod, and every command is range-checked and audited
exactly as one from megapodctl. A retained message is never a command: it
would run again on every reconnect.

Commands are read as they arrive and checked against the rate and size
limits (megapodd/mqtt/command_limits.py) before they queue; they run one at
a time, in order. Every refusal is answered when the request has a usable
response topic, and counted either way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from megapodd.commands.caller import FLEET_CALLER
from megapodd.commands.dedup import RequestLog
from megapodd.commands.dispatch import Command, RefusalAudit, Reply, refused, run_command
from megapodd.commands.payload import loads_strict
from megapodd.mqtt.command_limits import MAX_COMMAND_BYTES, FleetStats, RateLimit

log = structlog.get_logger("megapodd.mqtt")


def _valid_reply_topic(topic: str) -> bool:
    """A topic a reply can be published to: no wildcards, no NUL, not too long."""
    return not any(c in topic for c in "+#\0") and 0 < len(topic.encode()) <= 65535


@dataclass(frozen=True, slots=True)
class Answer:
    topic: str
    correlation: bytes | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Request:
    verb: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


class CommandSubscription:
    def __init__(
        self,
        commands: Mapping[str, Command],
        on_refused: RefusalAudit | None,
        protected_prefix: str,
        rate_per_s: float = 2.0,
        burst: int = 30,
        on_published: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._commands = {verb: c for verb, c in commands.items() if c.fleet}
        self._on_refused = on_refused
        # Replies never go under the pods' own topics (another pod's cmd/, say).
        self._protected_prefix = protected_prefix.rstrip("/") + "/"
        self.requests = RequestLog()
        self.limit = RateLimit(rate_per_s, burst)
        self.stats = FleetStats()
        self._on_published = on_published
        self._flooding = 0  # refused in a row for rate or queue; only the first is audited

    async def serve(self, client: aiomqtt.Client, prefix: str) -> None:
        """Answer commands on this connection until it ends: read and check them
        as they come, run them one at a time in a task of their own."""
        queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=self.limit.burst)
        await client.subscribe(f"{prefix}+", qos=1)
        try:
            async with asyncio.TaskGroup() as group:
                runner = group.create_task(
                    self._run_queued(client, queue), name="mqtt-command-runner"
                )
                try:
                    await self._read(client, prefix, queue)
                finally:
                    runner.cancel()  # what still waits is not run on a lost connection
        except* aiomqtt.MqttError as lost:
            # The connection went; the session notices and reconnects.
            log.info("mqtt_commands_stopped", error=str(lost.exceptions[0]))

    async def _read(
        self, client: aiomqtt.Client, prefix: str, queue: asyncio.Queue[_Request]
    ) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            if not topic.startswith(prefix) or not isinstance(message.payload, bytes):
                continue
            props = message.properties
            request = _Request(
                topic.removeprefix(prefix),
                message.payload,
                getattr(props, "ResponseTopic", None),
                getattr(props, "CorrelationData", None),
            )
            answer = self.admit(request, queue, retained=message.retain)
            if answer is not None:
                await self._publish(client, answer)

    def admit(
        self, request: _Request, queue: asyncio.Queue[_Request], retained: bool = False
    ) -> Answer | None:
        """Queue a command, or refuse it now: the refusal's answer, if it can have one."""
        reply_to = request.response_topic
        if reply_to and not _valid_reply_topic(reply_to):
            self._refuse(
                request.verb, f"response topic {reply_to[:80]!r} is not a topic to publish to"
            )
            self._unanswered("reply_topic")
            return None
        if reply_to and reply_to.startswith(self._protected_prefix):
            self._refuse(
                request.verb, f"response topic {reply_to!r} is under {self._protected_prefix}"
            )
            self._unanswered("reply_topic")
            return None
        if retained:
            error = "a retained message is not a command (it would rerun)"
            return self._refused_now(request, "retained", error)
        now_s = asyncio.get_running_loop().time()
        if not self.limit.take(now_s):
            error = (
                f"rate limited: at most {self.limit.burst} commands at once and "
                f"{self.limit.rate_per_s:g} per second; not run"
            )
            return self._refused_now(request, "rate", error, flood=True)
        if len(request.payload) > MAX_COMMAND_BYTES:
            error = f"request is {len(request.payload)} bytes; at most {MAX_COMMAND_BYTES}"
            return self._refused_now(request, "size", error)
        try:
            queue.put_nowait(request)
        except asyncio.QueueFull:
            error = f"busy: {queue.maxsize} commands are waiting; not run"
            return self._refused_now(request, "busy", error, flood=True)
        if self._flooding:
            log.info("fleet_commands_taken_again", refused_in_a_row=self._flooding)
            self._flooding = 0
        return None

    def _refused_now(
        self, request: _Request, reason: str, error: str, flood: bool = False
    ) -> Answer | None:
        self.stats.refusal(reason)
        if flood:
            self._flooding += 1
            if self._flooding > 1:  # the first of a flood is audited; the rest are counted
                log.debug("fleet_command_refused_again", reason=reason, verb=request.verb[:64])
            else:
                self._refuse(request.verb, error + " (more like it are counted, not audited)")
        else:
            self._refuse(request.verb, error)
        if not request.response_topic:
            self.stats.unanswered += 1
            return None
        return self._answer(request, refused(error))

    def _unanswered(self, reason: str) -> None:
        self.stats.refusal(reason)
        self.stats.unanswered += 1

    async def _run_queued(self, client: aiomqtt.Client, queue: asyncio.Queue[_Request]) -> None:
        while True:
            request = await queue.get()
            try:
                reply = await self._run(request.verb, request.payload)
                self.stats.result(reply.get("ok") is True)
                if request.response_topic:
                    await self._publish(client, self._answer(request, reply))
            except aiomqtt.MqttError:
                raise
            except Exception:  # one bad command must never stop the others
                log.exception("mqtt_command_failed", verb=request.verb[:64])

    @staticmethod
    def _answer(request: _Request, reply: Reply) -> Answer:
        assert request.response_topic is not None  # noqa: S101 - callers check
        body = json.dumps(reply, separators=(",", ":"), default=str).encode()
        return Answer(request.response_topic, request.correlation, body)

    async def _publish(self, client: aiomqtt.Client, answer: Answer) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
        if answer.correlation is not None:
            properties.CorrelationData = answer.correlation
        await client.publish(answer.topic, answer.payload, qos=1, properties=properties)
        if self._on_published is not None:
            self._on_published(answer.topic, answer.payload)

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
