"""MQTT publisher: status with a Will, device state, events (MQTT 5, QoS 1).

Publishing runs in its own task and never blocks polling: the store and the
event bus only mark what needs sending and wake this task. Events wait in a
store-and-forward outbox until the broker acknowledges them (QoS 1 PUBACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from megapodd.backoff import Backoff
from megapodd.config import MqttConfig
from megapodd.events import Event
from megapodd.mqtt.commands import MqttCommands
from megapodd.mqtt.deadband import changed_beyond_deadband
from megapodd.mqtt.outbox import EventOutbox
from megapodd.safe_files import MAX_CERT_BYTES, FileRefused, read_secret_text
from megapodd.store import PointStore

log = structlog.get_logger("megapodd.mqtt")

# Gather changes for this long before publishing, so a group read of 300
# points becomes one message per device rather than 300.
_COALESCE_S = 0.05


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


@dataclass(slots=True)
class _Published:
    values: dict[str, object] = field(default_factory=dict)
    state: str = ""


class MqttPublisher:
    def __init__(
        self,
        config: MqttConfig,
        pod_id: str,
        store: PointStore,
        state_dir: Path,
        version: str,
        boot_id: str,
    ) -> None:
        self._config = config
        self._store = store
        self._prefix = f"{config.topic_prefix}/{pod_id}"
        self._version = version
        self._boot_id = boot_id
        self._outbox = EventOutbox(state_dir / "events-outbox.jsonl", config.queue_max_events)
        self._dirty: set[str] = set()
        self._retained: dict[str, Callable[[], object]] = {}
        self._commands: MqttCommands | None = None
        self._dirty_topics: set[str] = set()
        self._published: dict[str, _Published] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._backoff = Backoff(initial_s=0.5, max_s=30.0)
        self.connected = False
        self.connect_failures = 0
        store.add_listener(self._on_change)

    # -- inputs (synchronous, never block) ---------------------------------

    def _on_change(self, device_id: str, _names: frozenset[str]) -> None:
        self._dirty.add(device_id)
        self._wake.set()

    def accept_commands(self, commands: MqttCommands) -> None:
        """Subscribe to cmd/+ and run what arrives (only if the config enables it)."""
        self._commands = commands

    def add_retained_topic(self, suffix: str, snapshot: Callable[[], object]) -> None:
        """A retained topic (e.g. `interlocks`) published on connect and on change."""
        self._retained[suffix] = snapshot
        self._dirty_topics.add(suffix)

    def topic_changed(self, suffix: str) -> None:
        self._dirty_topics.add(suffix)
        self._wake.set()

    def on_event(self, event: Event) -> None:
        self._outbox.put(event.as_json())
        self._wake.set()

    @property
    def pending_events(self) -> int:
        return len(self._outbox)

    def topic(self, suffix: str) -> str:
        return f"{self._prefix}/{suffix}"

    # -- the task ------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff; returns after stop().

        Events still queued when it ends are written to the spill file, so the
        next start sends them (nothing is dropped on a restart)."""
        try:
            await self._connect_loop()
        finally:
            self._outbox.persist()
            self._outbox.close()

    async def _connect_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client = self._client()
                async with client:
                    self.connected = True
                    self._backoff.reset()
                    log.info("mqtt_connected", host=self._config.host, port=self._config.port)
                    await self._publish_status(client, "online")
                    self._dirty.update(d.id for d in self._store.devices())
                    self._dirty_topics.update(self._retained)
                    self._published.clear()  # a fresh session gets full state
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        # Cancelled without stop(): the daemon is failing. Leaving
                        # with a clean DISCONNECT would make the broker discard the
                        # Will, so say offline ourselves while we still can.
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            async with asyncio.timeout(1.0):
                                await self._publish_status(client, "offline")
                        raise
                    await self._publish_status(client, "offline")
                    return
            except aiomqtt.MqttError as exc:
                self.connect_failures += 1
                delay_s = self._backoff.next_delay_s()
                log.warning("mqtt_disconnected", error=str(exc), retry_in_s=round(delay_s, 2))
            except (OSError, ssl.SSLError, FileRefused) as exc:
                # Unreadable password file, bad CA or client certificate: say so
                # and keep trying (the file may be fixed without a restart).
                delay_s = self._backoff.next_delay_s()
                log.warning(
                    "mqtt_client_setup_failed", error=str(exc), retry_in_s=round(delay_s, 2)
                )
            finally:
                self.connected = False
            try:
                async with asyncio.timeout(delay_s):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    async def stop(self) -> None:
        """Ask run() to publish offline and disconnect (SIGTERM path, invariant 7)."""
        self._stopping.set()
        self._wake.set()

    def _client(self) -> aiomqtt.Client:
        cfg = self._config
        # Read the way validation did (megapodd/safe_files.py): never blocks, bounded.
        password = None
        if cfg.password_file is not None:
            password = read_secret_text(cfg.password_file)
        tls_context = None
        if cfg.tls:
            tls_context = ssl.create_default_context(
                cadata=read_secret_text(cfg.ca_file, MAX_CERT_BYTES) if cfg.ca_file else None
            )
            if cfg.cert_file is not None:
                # ssl loads these by path only: check them first so a FIFO or a
                # device put there cannot hang or flood the loader.
                read_secret_text(cfg.cert_file, MAX_CERT_BYTES)
                if cfg.key_file is not None:
                    read_secret_text(cfg.key_file)
                tls_context.load_cert_chain(
                    str(cfg.cert_file), str(cfg.key_file) if cfg.key_file else None
                )
        will = aiomqtt.Will(
            self.topic("status"), self._status_payload("offline"), qos=1, retain=True
        )
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=password,
            will=will,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=cfg.keepalive_s,
            tls_context=tls_context,
            timeout=10.0,
        )

    def _status_payload(self, state: str) -> bytes:
        return _dumps(
            {"state": state, "ts": time.time(), "version": self._version, "boot_id": self._boot_id}
        )

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        await client.publish(self.topic("status"), self._status_payload(state), qos=1, retain=True)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_snapshot_s = loop.time() + self._config.snapshot_s
        while not self._stopping.is_set():
            await self._drain_events(client)
            await self._publish_retained_topics(client)
            if self._dirty:
                await asyncio.sleep(_COALESCE_S)
                dirty, self._dirty = self._dirty, set()
                for device_id in sorted(dirty):
                    await self._publish_device(client, device_id, force=False)
            if loop.time() >= next_snapshot_s - 1e-3:  # not a sliver below the clock resolution
                next_snapshot_s = loop.time() + self._config.snapshot_s
                for record in list(self._store.devices()):
                    await self._publish_device(client, record.id, force=True)
            self._wake.clear()
            if self._dirty or self._dirty_topics or self._outbox.peek() is not None:
                continue
            try:
                async with asyncio.timeout(max(0.0, next_snapshot_s - loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass
        await self._drain_events(client)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish; and, with commands enabled, answer them in a task of this
        connection's own (a command that waits on a device must not hold up
        publishing)."""
        if self._commands is None:
            await self._publish_loop(client)
            return
        await client.subscribe(self.topic("cmd/+"), qos=1)
        try:
            async with asyncio.TaskGroup() as group:
                commands = group.create_task(
                    self._command_loop(client, self._commands), name="mqtt-commands"
                )
                await self._publish_loop(client)
                commands.cancel()
        except* aiomqtt.MqttError as lost:
            # A dropped connection, as without commands: the caller reconnects.
            raise lost.exceptions[0] from None

    async def _command_loop(self, client: aiomqtt.Client, commands: MqttCommands) -> None:
        prefix = self.topic("cmd/")
        try:
            async for message in client.messages:
                topic = str(message.topic)
                if not topic.startswith(prefix) or not isinstance(message.payload, bytes):
                    continue
                props = message.properties
                response_topic = getattr(props, "ResponseTopic", None)
                correlation = getattr(props, "CorrelationData", None)
                try:
                    reply = await commands.handle(
                        topic.removeprefix(prefix),
                        message.payload,
                        response_topic,
                        correlation,
                        retained=message.retain,
                    )
                    if reply is not None:
                        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
                        if reply.correlation is not None:
                            properties.CorrelationData = reply.correlation
                        await client.publish(
                            reply.topic, reply.payload, qos=1, properties=properties
                        )
                except aiomqtt.MqttError:
                    raise
                except Exception:  # one bad command must never stop publishing
                    log.exception("mqtt_command_failed", topic=topic)
        except aiomqtt.MqttError as exc:
            # The connection went; the publish loop notices and reconnects.
            log.info("mqtt_commands_stopped", error=str(exc))

    async def _publish_retained_topics(self, client: aiomqtt.Client) -> None:
        while self._dirty_topics:
            suffix = self._dirty_topics.pop()
            payload = {"ts": time.time(), suffix: self._retained[suffix]()}
            await client.publish(self.topic(suffix), _dumps(payload), qos=1, retain=True)

    async def _drain_events(self, client: aiomqtt.Client, batch: int = 100) -> None:
        """Send queued events, a batch at a time so a backlog after an outage
        does not hold device state back."""
        for _ in range(batch):
            if (payload := self._outbox.peek()) is None:
                return
            await client.publish(self.topic("events"), _dumps(payload), qos=1)
            self._outbox.pop()  # only once the broker has it

    async def _publish_device(self, client: aiomqtt.Client, device_id: str, force: bool) -> None:
        record = self._store.device(device_id)
        seen = self._published.setdefault(device_id, _Published())
        points = record.points
        worth_it = force or seen.state != record.state.value
        if not worth_it:
            for name, point in points.items():
                old = seen.values.get(name)
                if (
                    old is None
                    or not isinstance(old, dict)
                    or old["quality"] != point.quality.value
                    or changed_beyond_deadband(old["value"], point.value, point.unit)
                ):
                    worth_it = True
                    break
        if not worth_it:
            return
        payload_points = {name: p.as_json() for name, p in sorted(points.items())}
        payload = {
            "ts": time.time(),
            "kind": record.kind,
            "state": record.state.value,
            "reason": record.reason,
            "points": payload_points,
        }
        await client.publish(
            self.topic(f"devices/{device_id}/state"), _dumps(payload), qos=1, retain=True
        )
        seen.values = dict(payload_points)
        seen.state = record.state.value
