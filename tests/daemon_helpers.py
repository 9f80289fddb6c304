"""Helpers for tests that run megapodd: configs, in-process daemons, MQTT reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from megapodd.app import Daemon
from megapodd.config import Config, load_config
from tests.helpers import MosquittoBroker


def write_config(
    directory: Path,
    broker: MosquittoBroker,
    pod_id: str,
    cdu_port: int | None = None,
    poll_s: float = 0.25,
    extra: str = "",
    metrics_port: int | None = None,
) -> Path:
    """A daemon config with its socket and state under `directory`; /metrics
    off unless a port is given (daemons of parallel tests must not share 9108)."""
    listen = f"127.0.0.1:{metrics_port}" if metrics_port is not None else ""
    lines = [
        f'[pod]\nid = "{pod_id}"',
        f'[mqtt]\nurl = "{broker.url}"\nsnapshot_s = 5.0',
        f'[api]\nsocket = "{directory / "d.sock"}"',
        f'[state]\ndir = "{directory / "state"}"',
        f'[metrics]\nlisten = "{listen}"',
    ]
    if cdu_port is not None:
        lines.append(
            f'[[cdu]]\nid = "cdu1"\nurl = "modbus+tcp://127.0.0.1:{cdu_port}"\n'
            f"poll_s = {poll_s}\ntimeout_s = 0.5"
        )
    path = directory / "megapodd.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@contextlib.asynccontextmanager
async def running_daemon(config: Config | Path) -> AsyncIterator[Daemon]:
    """Run a Daemon in this loop; stop it the way SIGTERM does."""
    if isinstance(config, Path):
        config = load_config(config)
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run(), name="daemon-under-test")
    try:
        yield daemon
    finally:
        daemon.request_stop()
        async with asyncio.timeout(10):
            await task


async def retained_when(
    broker: MosquittoBroker,
    topic: str,
    ready: Callable[[Any], bool],
    timeout_s: float = 10.0,
) -> Any:
    """The retained message on `topic` once it satisfies `ready` (the daemon
    publishes a moment after its store changes, so wait for the broker's copy)."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                payload = json.loads(message.payload)
                if ready(payload):
                    return payload
    raise AssertionError("unreachable")


async def read_retained(broker: MosquittoBroker, topic: str, timeout_s: float = 5.0) -> object:
    """The retained message on `topic`, decoded from JSON."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return json.loads(message.payload)
    raise AssertionError("unreachable")


async def megapodctl(*args: str, timeout_s: float = 30.0) -> tuple[int, str, str]:
    """Run the installed megapodctl; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "megapodctl"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def fleet_command(
    broker: MosquittoBroker,
    pod: str,
    verb: str,
    args: object,
    timeout_s: float = 15.0,
    reply_topic: str | None = None,
) -> dict[str, Any]:
    """Publish a command as a fleet client would (MQTT 5, response topic and
    correlation data; a fresh request id unless the arguments name one) and
    wait for its reply, checking the correlation data comes back."""
    reply_topic = reply_topic or f"fleet/replies/{pod}/{uuid.uuid4().hex}"
    if isinstance(args, dict) and "request_id" not in args:
        args = {"request_id": uuid.uuid4().hex, **args}
    correlation = uuid.uuid4().bytes
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(reply_topic, qos=1)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = correlation
        payload = args if isinstance(args, bytes) else json.dumps(args).encode()
        await client.publish(f"megapod/v1/{pod}/cmd/{verb}", payload, qos=1, properties=properties)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                assert message.properties is not None
                assert getattr(message.properties, "CorrelationData", None) == correlation
                assert isinstance(message.payload, bytes)
                reply: dict[str, Any] = json.loads(message.payload)
                return reply
    raise AssertionError("unreachable")
