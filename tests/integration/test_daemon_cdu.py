"""The daemon against the simulated CDU over real TCP, in one event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from megapodd.api.client import call
from megapodd.store import DeviceState
from sim_devices.cdu import SimulatedCdu
from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, free_tcp_port, wait_until

pytestmark = pytest.mark.integration

POLL_S = 0.25


async def test_status_over_the_local_api_shows_live_cdu_points(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    async with SimulatedCdu() as cdu:
        await cdu.start("127.0.0.1", 0)
        cdu.state.supply_temp_c = 31.25
        config = write_config(tmp_path, mosquitto, "pod-api", cdu.port, POLL_S)
        async with running_daemon(config) as daemon:
            await wait_until(
                lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, timeout_s=5
            )
            status: Any = await call(daemon.config.api.socket, "status")
    assert status["pod"]["id"] == "pod-api"
    tick = status["pod"]["tick"]  # the control tick's timing over its newest ticks
    assert tick["tick_ms"] == 100.0 and tick["ticks"] >= 1
    assert tick["lateness"]["samples"] == tick["ticks"]
    assert {"p50_ms", "p99_ms", "max_ms"} <= tick["lateness"].keys() <= tick["work"].keys()
    assert "control loops" in tick["duties"] and "safety" in tick["duties"]
    [device] = status["devices"]
    assert device["id"] == "cdu1" and device["kind"] == "cdu" and device["state"] == "online"
    supply = device["points"]["supply_temp_c"]
    # The placeholder physics moves the temperature; it started at what we set.
    assert supply["quality"] == "good"
    assert abs(supply["value"] - 31.25) < 2.0
    assert device["points"]["flow_lpm"]["unit"] == "lpm"


async def test_cdu_goes_offline_when_the_simulator_stops_and_returns_by_itself(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    port = free_tcp_port()
    config = write_config(tmp_path, mosquitto, "pod-offline", port, POLL_S)
    loop = asyncio.get_running_loop()
    cdu = SimulatedCdu()
    await cdu.start("127.0.0.1", port)
    async with running_daemon(config) as daemon:
        record = daemon.store.device("cdu1")
        await wait_until(lambda: record.state is DeviceState.ONLINE, timeout_s=5)

        stopped_at = loop.time()
        await cdu.close()
        await wait_until(lambda: record.state is DeviceState.OFFLINE, timeout_s=3 * POLL_S + 0.5)
        offline_after_s = loop.time() - stopped_at
        assert offline_after_s <= 3 * POLL_S
        offline_events = [e for e in daemon.events.recent if e.type == "device_offline"]
        assert offline_events and offline_events[-1].source == "cdu1"

        cdu = SimulatedCdu()
        await cdu.start("127.0.0.1", port)
        restarted_at = loop.time()
        try:
            await wait_until(lambda: record.state is DeviceState.ONLINE, timeout_s=5)
            assert loop.time() - restarted_at < 5.0
            assert daemon.events.recent[-1].type == "device_online"
        finally:
            await cdu.close()


async def test_points_turn_stale_while_the_cdu_is_unreachable(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    port = free_tcp_port()
    config = write_config(tmp_path, mosquitto, "pod-stale", port, POLL_S)
    async with SimulatedCdu() as cdu:
        await cdu.start("127.0.0.1", port)
        async with running_daemon(config) as daemon:
            await wait_until(
                lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, timeout_s=5
            )
            cdu.silent = True  # answers nothing: requests time out

            def supply_is_stale() -> bool:
                point = daemon.store.get("cdu1", "supply_temp_c")
                return point is not None and point.quality == "stale"

            await wait_until(supply_is_stale, timeout_s=5)
            assert daemon.store.device("cdu1").state is not DeviceState.ONLINE
