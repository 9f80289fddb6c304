"""The fleet's side of the power budget: `cmd/power_budget` within its bounds,
refused with the bounds outside them, audited; the retained `power` topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from megapodd.store import DeviceState
from sim_devices.pdu import PduFarm, PduSpec, serve_pdus
from tests.daemon_helpers import fleet_command, running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def farm() -> AsyncIterator[PduFarm]:
    pdus = await serve_pdus([PduSpec("pdu-r1a", outlets=24, breaker_a=63.0)])
    try:
        yield pdus
    finally:
        await pdus.close()


async def _power_with_budget(broker: MosquittoBroker, pod: str, budget_w: float) -> Any:
    """The `power` topic once it carries this budget (the retained one may be older)."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"megapod/v1/{pod}/power", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                payload: dict[str, Any] = json.loads(message.payload)
                if payload["power"]["budget_w"] == budget_w:
                    return payload["power"]
    raise AssertionError("no power message")


async def test_the_fleet_changes_the_budget_within_its_bounds_and_sees_it(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: PduFarm
) -> None:
    pod = "pod-power"
    config = write_config(
        tmp_path,
        mosquitto,
        pod,
        extra=f'[[pdu]]\nid = "pdu-r1a"\nhost = "127.0.0.1"\nport = {farm["pdu-r1a"].port}\n'
        "rack = 1\noutlets = 24\nbreaker_a = 63\nfast_poll_s = 0.5\n"
        "[power]\nbudget_w = 40000\nmax_budget_w = 50000\n",
    )
    config.write_text(config.read_text().replace("[mqtt]\n", "[mqtt]\ncommands = true\n"))
    async with running_daemon(config) as daemon:
        await wait_until(
            lambda: (
                daemon.store.device("pdu-r1a").state is DeviceState.ONLINE
                and daemon.mqtt.connected
                and daemon.power is not None
                and daemon.power.last is not None
            ),
            timeout_s=10,
        )
        reply = await fleet_command(mosquitto, pod, "power_budget", {"watts": 45000})
        assert reply == {
            "ok": True,
            "result": {"budget_w": 45000.0, "min_budget_w": 0.0, "max_budget_w": 50000.0},
        }
        refused = await fleet_command(mosquitto, pod, "power_budget", {"watts": 60000})
        assert refused["ok"] is False
        assert "budget 60000 W is outside 0–50000 W" in refused["error"]
        assert daemon.power is not None and daemon.power.budget.budget_w == 45000.0
        kinds = [e.type for e in daemon.events.recent]
        assert "power_budget_changed" in kinds and "command_rejected" in kinds
        power = await _power_with_budget(mosquitto, pod, 45000.0)
        phases = power["phases"]
        assert [(p["pdu"], p["phase"], p["limit_a"]) for p in phases] == [
            ("pdu-r1a", n, 50.4) for n in (1, 2, 3)
        ]
