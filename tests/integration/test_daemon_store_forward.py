"""Events are never dropped: queued while the broker is away, kept across a
daemon restart, delivered in order once a broker is there."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from megapodd.config import load_config
from sim_devices.cdu import SimulatedCdu
from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, free_tcp_port, wait_until

pytestmark = pytest.mark.integration


async def test_events_queued_without_a_broker_survive_a_restart(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    nowhere = MosquittoBroker("127.0.0.1", free_tcp_port())  # nothing listens there
    async with SimulatedCdu() as cdu:
        await cdu.start("127.0.0.1", 0)
        offline_cfg = write_config(tmp_path, nowhere, "pod-saf", cdu.port)
        async with running_daemon(offline_cfg) as daemon:
            await wait_until(
                lambda: any(e.type == "device_online" for e in daemon.events.recent), 5
            )
            assert not daemon.mqtt.connected
            queued = [e.as_json() for e in daemon.events.recent]
            first_boot = daemon.boot_id
        spill = tmp_path / "state" / "events-outbox.jsonl"
        assert [json.loads(line)["seq"] for line in spill.read_text().splitlines()] == [
            e["seq"] for e in queued
        ]

        online_cfg = write_config(tmp_path, mosquitto, "pod-saf", cdu.port)
        received: list[dict[str, object]] = []
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as subscriber:
            await subscriber.subscribe("megapod/v1/pod-saf/events", qos=1)
            async with running_daemon(load_config(online_cfg)):

                async def collect() -> None:
                    async for message in subscriber.messages:
                        assert isinstance(message.payload, bytes)
                        received.append(json.loads(message.payload))
                        if sum(e["boot_id"] == first_boot for e in received) == len(queued):
                            return

                async with asyncio.timeout(10):
                    await collect()
    earlier = [e for e in received if e["boot_id"] == first_boot]
    assert earlier == queued  # all of them, in order, unchanged
    assert not spill.exists()
