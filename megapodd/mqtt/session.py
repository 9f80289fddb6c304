"""The MQTT session: connect (MQTT 5, TLS, password), Will, birth, reconnect.

On each connection it says `online` on the retained status topic (the Will
says `offline` if the daemon vanishes), then runs the telemetry and, when
enabled, the fleet command subscription until the connection drops (then it
reconnects with backoff) or the daemon stops (then it says `offline` itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import aiomqtt
import structlog

from megapodd.backoff import Backoff
from megapodd.config import MqttConfig
from megapodd.mqtt.command_subscription import CommandSubscription
from megapodd.mqtt.telemetry import Telemetry, dumps
from megapodd.safe_files import MAX_CERT_BYTES, FileRefused, read_secret_text

log = structlog.get_logger("megapodd.mqtt")


class MqttSession:
    def __init__(
        self,
        config: MqttConfig,
        pod_id: str,
        telemetry: Telemetry,
        version: str,
        boot_id: str,
        commands: CommandSubscription | None = None,
    ) -> None:
        self._config = config
        self._prefix = f"{config.topic_prefix}/{pod_id}"
        self._telemetry = telemetry
        self._commands = commands
        self._version = version
        self._boot_id = boot_id
        self._stopping = asyncio.Event()
        self._backoff = Backoff(initial_s=0.5, max_s=30.0)
        self.connected = False
        self.connect_failures = 0

    def topic(self, suffix: str) -> str:
        return f"{self._prefix}/{suffix}"

    @property
    def commands(self) -> CommandSubscription | None:
        return self._commands

    @property
    def pending_events(self) -> int:
        return len(self._telemetry.outbox)

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff; returns after stop().

        Events still queued when it ends are written to the journal, so the
        next start sends them (nothing is dropped on a restart)."""
        try:
            await self._connect_loop()
        finally:
            self._telemetry.outbox.persist()
            self._telemetry.outbox.close()

    async def stop(self) -> None:
        """Ask run() to publish offline and disconnect (SIGTERM path, invariant 7)."""
        self._stopping.set()
        self._telemetry.wake()

    async def _connect_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self._client() as client:
                    self.connected = True
                    self._backoff.reset()
                    log.info("mqtt_connected", host=self._config.host, port=self._config.port)
                    await self._publish_status(client, "online")
                    self._telemetry.new_session()
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

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Telemetry; and, with commands enabled, answer them in a task of this
        connection's own (a command that waits on a device must not hold up
        publishing)."""
        if self._commands is None:
            await self._telemetry.publish_until(client, self._stopping)
            return
        try:
            async with asyncio.TaskGroup() as group:
                commands = group.create_task(
                    self._commands.serve(client, self.topic("cmd/")), name="mqtt-commands"
                )
                await self._telemetry.publish_until(client, self._stopping)
                commands.cancel()
        except* aiomqtt.MqttError as lost:
            # A dropped connection, as without commands: the caller reconnects.
            raise lost.exceptions[0] from None

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
        return dumps(
            {"state": state, "ts": time.time(), "version": self._version, "boot_id": self._boot_id}
        )

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        payload = self._status_payload(state)
        await client.publish(self.topic("status"), payload, qos=1, retain=True)
        self._telemetry.stats.published("status", self.topic("status"), payload)
