"""Acceptance: nothing is lost across a broker outage, whatever the daemon does.

The broker (mosquitto with persistence, so the fleet subscriber's session
survives it) is stopped for 60 s while the small simulated pod raises more
than 50 events. Meanwhile the daemon is stopped with SIGTERM and started
again, then killed with SIGKILL and started again. Once the broker is back,
the subscriber, de-duplicating by (boot_id, seq) as docs/mqtt.md describes,
has every event of the three runs exactly once, in order per boot, and every
message it received fits its schema.

This is the suite's one long test (the outage is real time: the daemon's
reconnect backoff runs on the wall clock).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from megapodd.api.client import ApiClientError, DaemonUnreachable, call
from megapodd.config import load_config
from tests.helpers import MosquittoBroker, free_tcp_port, wait_tcp_port, wait_until
from tests.integration.sim_process import running_sim
from tests.mqtt_contract import Contract

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

OUTAGE_S = 60.0
POD = "pod-outage"
BIN = Path(sys.executable).parent


class Broker:
    """A mosquitto that keeps sessions and queued messages across a restart."""

    def __init__(self, directory: Path, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {directory}/\n"
            # Started as root, mosquitto would become its own user and could
            # not write its database here.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "max_queued_messages 0\nlog_dest stderr\nlog_type error\n"
        )
        self.address = MosquittoBroker("127.0.0.1", port)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_tcp_port(self.address.host, self.address.port, timeout_s=10.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # saves sessions and queued messages
            self.proc.wait(timeout=10)
        self.proc = None


def _subscriber(broker: MosquittoBroker) -> aiomqtt.Client:
    """The fleet's subscriber: a persistent session, QoS 1, as docs/mqtt.md advises."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"fleet-{POD}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    )


@asynccontextmanager
async def _daemon(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    log = (config.parent / "megapodd.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "megapodd"), "--config", str(config), stdout=log, stderr=log
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def _api(sock: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    return await call(sock, cmd, args or {}, timeout_s=10.0)


async def _api_up(sock: Path) -> None:
    async def answers() -> bool:
        try:
            await _api(sock, "status")
        except (DaemonUnreachable, ApiClientError, OSError):
            return False
        return True

    await wait_until(answers, timeout_s=30, interval_s=0.1)


async def _refusals(sock: Path, count: int) -> None:
    """`count` audited refusals: an override below the pumps' safety floor."""
    for _ in range(count):
        with suppress(ApiClientError):
            await _api(
                sock,
                "override",
                {"device": "cdu1", "output": "pump_speed_pct", "value": 5, "duration_s": 60},
            )


async def _last_seq(sock: Path) -> tuple[str, int]:
    [event] = await _api(sock, "events", {"count": 1})
    return str(event["boot_id"]), int(event["seq"])


def _journalled(journal: Path) -> dict[str, int]:
    """boot_id -> highest seq in the event journal."""
    highest: dict[str, int] = {}
    if journal.exists():
        for line in journal.read_bytes().splitlines():
            with suppress(ValueError):
                event = json.loads(line)
                highest[event["boot_id"]] = max(highest.get(event["boot_id"], 0), event["seq"])
    return highest


async def test_no_event_is_lost_or_doubled_across_an_outage_with_sigterm_and_sigkill(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "mq", free_tcp_port())
    broker.start()
    received: list[tuple[str, bytes]] = []
    config = tmp_path / "pod.toml"
    extra = ["--profile", "small", "--write-config", str(config), "--pod-id", POD,
             "--mqtt-url", broker.address.url, "--metrics-listen", ""]  # fmt: skip
    try:
        async with _subscriber(broker.address) as subscriber:
            await subscriber.subscribe(f"megapod/v1/{POD}/#", qos=1)
        async with running_sim(tmp_path / "sim", free_tcp_port(), extra) as sim:
            settings = load_config(config)
            sock, journal = settings.api.socket, settings.state.dir / "events-outbox.jsonl"

            # Run A: connected, then the broker goes; events; SIGTERM.
            async with _daemon(config) as run_a:
                await _api_up(sock)

                async def all_sent() -> bool:
                    mqtt = (await _api(sock, "status"))["pod"]["mqtt"]
                    return bool(mqtt["connected"]) and mqtt["pending_events"] == 0

                await wait_until(all_sent, timeout_s=30, interval_s=0.2)
                broker.stop()
                outage_started_s, outage_wall_s = time.monotonic(), time.time()
                assert (await sim.cli("inject", "leak", "r1")).returncode == 0
                await _refusals(sock, 10)
                boot_a, _ = await _last_seq(sock)
                run_a.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    assert await run_a.wait() == 0

            # Run B: more events, all journalled; then SIGKILL.
            async with _daemon(config) as run_b:
                await _api_up(sock)
                assert (await sim.cli("inject", "--clear", "leak", "r1")).returncode == 0
                await _refusals(sock, 10)
                boot_b, seq_b = await _last_seq(sock)
                await wait_until(lambda: _journalled(journal).get(boot_b, 0) >= seq_b, 10)
                run_b.send_signal(signal.SIGKILL)
                await run_b.wait()

            # Run C starts late enough that its reconnect backoff is short when
            # the broker returns.
            await asyncio.sleep(max(0.0, outage_started_s + OUTAGE_S - 15.0 - time.monotonic()))
            async with _daemon(config) as run_c:
                await _api_up(sock)
                await _refusals(sock, 5)
                await asyncio.sleep(max(0.0, outage_started_s + OUTAGE_S - time.monotonic()))
                outage_ended_wall_s = time.time()
                journalled = _journalled(journal)
                broker.start()
                async with _subscriber(broker.address) as subscriber:

                    async def collect() -> None:
                        async for message in subscriber.messages:
                            assert isinstance(message.payload, bytes)
                            received.append((str(message.topic), message.payload))

                    collecting = asyncio.create_task(collect())
                    try:
                        boot_c, seq_c = await _last_seq(sock)
                        expected = {boot_a: journalled[boot_a], boot_b: journalled[boot_b],
                                    boot_c: seq_c}  # fmt: skip
                        try:
                            await wait_until(lambda: _has_all(received, expected), timeout_s=60)
                        except TimeoutError:
                            raise AssertionError(_missing(received, expected)) from None
                    finally:
                        collecting.cancel()
                        with suppress(asyncio.CancelledError):
                            await collecting
                run_c.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    assert await run_c.wait() == 0
    finally:
        broker.stop()

    events = [json.loads(p) for t, p in received if t.endswith("/events")]
    unique = _deduplicated(events)
    for boot, last in expected.items():
        assert [e["seq"] for e in unique if e["boot_id"] == boot] == list(range(1, last + 1))
    during = [e for e in unique if outage_wall_s <= e["ts"] <= outage_ended_wall_s]
    assert len(during) >= 50, f"only {len(during)} events during the outage"
    assert {e["boot_id"] for e in during} == {boot_a, boot_b, boot_c}
    assert any(e["type"] == "interlock_tripped" for e in during)
    contract = Contract()
    problems = [p for t, payload in received for p in contract.check_published(t, payload)]
    assert not problems, problems[:10]


def _deduplicated(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The subscriber's side of docs/mqtt.md: drop what is not past the last seq of its boot."""
    seen: dict[str, int] = {}
    unique = []
    for event in events:
        if event["seq"] <= seen.get(event["boot_id"], 0):
            continue
        seen[event["boot_id"]] = event["seq"]
        unique.append(event)
    return unique


def _seqs(received: list[tuple[str, bytes]]) -> dict[str, set[int]]:
    seqs: dict[str, set[int]] = {}
    for topic, payload in received:
        if topic.endswith("/events"):
            event = json.loads(payload)
            seqs.setdefault(event["boot_id"], set()).add(event["seq"])
    return seqs


def _has_all(received: list[tuple[str, bytes]], expected: dict[str, int]) -> bool:
    seqs = _seqs(received)
    return all(set(range(1, last + 1)) <= seqs.get(boot, set()) for boot, last in expected.items())


def _missing(received: list[tuple[str, bytes]], expected: dict[str, int]) -> str:
    seqs = _seqs(received)
    return "; ".join(
        f"boot {boot[:8]}: missing {sorted(set(range(1, last + 1)) - seqs.get(boot, set()))[:20]}"
        for boot, last in expected.items()
    )
