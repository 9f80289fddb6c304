"""The MQTT contract as the tests hold the daemon to it: every message under
`megapod/v1/` has a schema in schemas/ and validates against it, and every
reply to a fleet command validates against the reply schema.

`Contract` checks one message; `ContractRecorder` subscribes to a broker for
the length of a test (the integration tests' autouse fixture) and collects
what does not fit. Requests on `cmd/<verb>` come from the tests, not the
daemon, and may be wrong on purpose: a request the schema refuses must be
refused by the daemon too (its reply says `"ok": false`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.helpers import MosquittoBroker

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
PREFIX = "megapod/v1/"
# Keep a failure readable: the first problems, each with the start of its payload.
_MAX_PROBLEMS = 20
_EXCERPT = 300


def load_index(directory: Path = SCHEMAS_DIR) -> dict[str, Any]:
    index: dict[str, Any] = json.loads((directory / "topics.json").read_text())
    return index


def _matches(pattern: str, suffix: str) -> bool:
    """An MQTT topic filter with `+` (one level) against a topic suffix."""
    want, have = pattern.split("/"), suffix.split("/")
    return len(want) == len(have) and all(w in ("+", h) for w, h in zip(want, have, strict=True))


class Contract:
    def __init__(self, directory: Path = SCHEMAS_DIR) -> None:
        self.index = load_index(directory)
        self.schemas: dict[str, dict[str, Any]] = {
            path.name: json.loads(path.read_text()) for path in directory.glob("*.schema.json")
        }
        registry: Registry[Any] = Registry().with_resources(
            (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
            for schema in self.schemas.values()
        )
        self._registry = registry
        self._validators = {
            name: Draft202012Validator(schema, registry=registry)
            for name, schema in self.schemas.items()
        }

    def validator(self, name: str, pointer: str = "") -> Draft202012Validator:
        if not pointer:
            return self._validators[name]
        schema = self.schemas[name]
        return Draft202012Validator({"$ref": f"{schema['$id']}#{pointer}"}, registry=self._registry)

    def schema_for(self, suffix: str) -> str | None:
        """The schema of a topic the daemon publishes (suffix after `<prefix>/<pod>/`)."""
        published: dict[str, str] = self.index["published"]
        return next((s for pattern, s in published.items() if _matches(pattern, suffix)), None)

    def request_schema(self, verb: str) -> str | None:
        commands: dict[str, str] = self.index["commands"]
        return commands.get(f"cmd/{verb}")

    def problems(self, name: str, payload: object, pointer: str = "") -> list[str]:
        errors = sorted(self.validator(name, pointer).iter_errors(payload), key=str)
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]

    def check_published(self, topic: str, payload: bytes) -> list[str]:
        """Problems of one message the daemon published on `topic`."""
        if not topic.startswith(PREFIX) or topic.count("/") < 3:
            return [f"{topic}: not under {PREFIX}<pod>/"]
        suffix = topic[len(PREFIX) :].partition("/")[2]
        name = self.schema_for(suffix)
        if name is None:
            return [f"{topic}: no schema for this topic (schemas/topics.json)"]
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            return [f"{topic}: not JSON ({exc})"]
        return [f"{topic} ({name}) {p}" for p in self.problems(name, document)]

    def request_conforms(self, verb: str, payload: bytes) -> bool:
        name = self.request_schema(verb)
        if name is None:
            return False
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):
            return False
        return not self.problems(name, document)

    def check_reply(self, verb: str, conforming: bool, payload: bytes) -> list[str]:
        """Problems of a reply to a request on `cmd/<verb>`."""
        try:
            reply = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            return [f"reply to cmd/{verb}: not JSON ({exc})"]
        found = self.problems(self.index["reply"], reply)
        if not found and reply.get("ok") is True:
            if not conforming:
                found.append(f"the daemon accepted a cmd/{verb} request its schema refuses")
            else:
                found += self.problems(
                    self.index["reply"], reply["result"], f"/$defs/result_{verb}"
                )
        return [f"reply to cmd/{verb}: {p}" for p in found]


@dataclass(slots=True)
class _Request:
    verb: str
    conforming: bool


@dataclass(slots=True)
class ContractRecorder:
    """Watches a broker during a test; `check()` fails on any broken message."""

    broker: MosquittoBroker
    contract: Contract = field(default_factory=Contract)
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    # By response topic and correlation data, as the reply carries them.
    _requests: dict[tuple[str, bytes | None], _Request] = field(default_factory=dict)
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None
    # Messages as they came, checked at the end: validating while a daemon runs
    # in this loop would slow it down and change the timing the test checks.
    _seen: list[tuple[str, bytes, Any]] = field(default_factory=list)
    _marker: str = field(default_factory=lambda: f"megapod-contract/{uuid.uuid4().hex}")
    _flushed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> ContractRecorder:
        client = aiomqtt.Client(
            self.broker.host, self.broker.port, protocol=aiomqtt.ProtocolVersion.V5
        )
        await client.__aenter__()
        self._client = client
        # Everything (megapod/v1/# and the replies, which go to response topics
        # anywhere); one subscription, or overlapping ones would deliver twice.
        await client.subscribe("#", qos=1)
        self._task = asyncio.create_task(self._watch(client), name="mqtt-contract")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._client is not None and self._task is not None
        try:
            await self.settle()
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def settle(self) -> None:
        """Check everything published so far (it arrives before our own marker)."""
        assert self._client is not None
        self._flushed.clear()
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await self._client.publish(self._marker, b"", qos=1)
            async with asyncio.timeout(5.0):
                await self._flushed.wait()
        seen, self._seen = self._seen, []
        for topic, payload, properties in seen:
            self._on_message(topic, payload, properties)

    def check(self) -> None:
        shown = self.problems[:_MAX_PROBLEMS]
        more = len(self.problems) - len(shown)
        assert not shown, "MQTT messages break the contract (schemas/):\n  " + "\n  ".join(
            shown + ([f"… and {more} more"] if more > 0 else [])
        )

    async def _watch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            if topic == self._marker:
                self._flushed.set()
                continue
            if message.retain:
                continue  # history from before this test, checked when it was live
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self._seen.append((topic, payload, message.properties))

    def _on_message(self, topic: str, payload: bytes, properties: Any) -> None:
        if topic.startswith(PREFIX) and "/cmd/" in topic:
            verb = topic.rsplit("/cmd/", 1)[1]
            reply_to = getattr(properties, "ResponseTopic", None)
            if reply_to:
                key = (reply_to, getattr(properties, "CorrelationData", None))
                conforming = self.contract.request_conforms(verb, payload)
                self._requests[key] = _Request(verb, conforming)
            return
        key = (topic, getattr(properties, "CorrelationData", None))
        if topic.startswith(PREFIX):
            found = self.contract.check_published(topic, payload)
        elif key in self._requests:
            request = self._requests.pop(key)
            found = self.contract.check_reply(request.verb, request.conforming, payload)
        else:
            return  # a test's own topic
        self.checked += 1
        for problem in found:
            excerpt = payload[:_EXCERPT].decode(errors="replace")
            self.problems.append(f"{problem}\n      payload: {excerpt}")
