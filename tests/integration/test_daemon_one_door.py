"""One door to each device, against the simulators and read back with the
peer tools: an interlock holds a discrete output against a technician; a
technician's override holds against the fleet; a fleet command runs once per
request id; an interlock's write lands after, never under, a technician's
multi-step write; a failing consumer takes no device offline; a slow disk
never delays a trip's action."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from megapodd.api.client import call
from megapodd.app import Daemon
from megapodd.config import load_config
from megapodd.safety.persist import DiskFiles
from megapodd.store import DeviceState
from sim_devices.cdu import SimulatedCdu
from sim_devices.pdu import PduFarm, PduSpec, serve_pdus
from tests.daemon_helpers import fleet_command, megapodctl, running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until
from tests.peers import mbpoll_holding, snmpget_outlet

pytestmark = pytest.mark.integration

PUMP_SETPOINT_REGISTER = 102


def _pdu_section(port: int) -> str:
    return (
        f'[[pdu]]\nid = "pdu-r1a"\nhost = "127.0.0.1"\nport = {port}\nrack = 1\n'
        "outlets = 24\nfast_poll_s = 0.5\nslow_poll_s = 1.0\ntimeout_s = 0.5\n"
    )


@pytest.fixture
async def cdu() -> AsyncIterator[SimulatedCdu]:
    async with SimulatedCdu() as sim:
        await sim.start("127.0.0.1", 0)
        yield sim


@pytest.fixture
async def farm() -> AsyncIterator[PduFarm]:
    async with await serve_pdus([PduSpec("pdu-r1a", outlets=24)]) as pdus:
        yield pdus


@contextlib.asynccontextmanager
async def _events(broker: MosquittoBroker, pod: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event the daemon publishes while the block runs."""
    seen: list[dict[str, Any]] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"megapod/v1/{pod}/events", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.append(json.loads(message.payload))

        task = asyncio.create_task(collect())
        try:
            yield seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


LEAK_RULE = """
[[interlock]]
id = "leak-r1"
device = "cdu1"
point = "leak"
trip_when = "true"
actions = [{output = "pdu-r1a.outlet_3", value = "off"}]
"""


async def test_an_interlock_holds_an_outlet_off_against_a_technician(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu, farm: PduFarm
) -> None:
    pdu_port = farm["pdu-r1a"].port
    extra = _pdu_section(pdu_port) + LEAK_RULE
    config = write_config(tmp_path, mosquitto, "pod-door-1", cdu.port, extra=extra)
    async with running_daemon(config) as daemon, _events(mosquitto, "pod-door-1") as events:
        sock = str(daemon.config.api.socket)
        await wait_until(
            lambda: all(r.state is DeviceState.ONLINE for r in daemon.store.devices()), 10
        )
        assert await snmpget_outlet(pdu_port, 3, tmp_path) == "on"
        cdu.state.leak_zones = 0b1  # rack 1's drip tray is wet
        await wait_until(lambda: not farm["pdu-r1a"].model.outlet_is_on(3), timeout_s=5)
        assert await snmpget_outlet(pdu_port, 3, tmp_path) == "off"

        code, out, err = await megapodctl("--socket", sock, "outlet", "pdu-r1a", "3", "on")
        assert code == 1, (out, err)
        assert "held at off by interlock leak-r1" in err
        await wait_until(
            lambda: any(
                e["type"] == "command_rejected" and e["data"]["command"] == "outlet"
                for e in events
            ),
            timeout_s=5,
        )
        assert await snmpget_outlet(pdu_port, 3, tmp_path) == "off"

        cdu.state.leak_zones = 0
        await wait_until(
            lambda: daemon.interlocks.snapshot()["leak-r1"]["state"] == "latched",  # type: ignore[index]
            timeout_s=5,
        )
        code, _, err = await megapodctl("--socket", sock, "reset", "leak-r1")
        assert code == 0, err
        await asyncio.sleep(1.0)  # a poll later: nothing was switched back on by itself
        assert await snmpget_outlet(pdu_port, 3, tmp_path) == "off"
        code, out, err = await megapodctl("--socket", sock, "outlet", "pdu-r1a", "3", "on")
        assert code == 0, err
        assert await snmpget_outlet(pdu_port, 3, tmp_path) == "on"


async def test_a_technicians_override_holds_against_the_fleet_and_fleet_commands_run_once(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu
) -> None:
    pod = "pod-door-2"
    config = write_config(tmp_path, mosquitto, pod, cdu.port)
    config.write_text(config.read_text().replace("[mqtt]\n", "[mqtt]\ncommands = true\n"))
    async with running_daemon(config) as daemon:
        sock = str(daemon.config.api.socket)
        await wait_until(
            lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE
            and daemon.mqtt.connected,
            timeout_s=10,
        )
        code, _, err = await megapodctl(
            "--socket", sock, "override", "cdu1", "pump_speed_pct", "70", "--for", "10m"
        )
        assert code == 0, err
        assert await mbpoll_holding(cdu.port, PUMP_SETPOINT_REGISTER) == [7000]
        pump = {"device": "cdu1", "output": "pump_speed_pct"}
        held = await fleet_command(
            mosquitto, pod, "override",
            {"request_id": "f-1", **pump, "value": 40, "duration_s": 600},
        )
        assert held["ok"] and held["result"]["held_by"] == "override"
        assert await mbpoll_holding(cdu.port, PUMP_SETPOINT_REGISTER) == [7000]
        released = await fleet_command(mosquitto, pod, "release", {"request_id": "f-2", **pump})
        assert released["ok"] and released["result"]["owner"] == "override"
        assert await mbpoll_holding(cdu.port, PUMP_SETPOINT_REGISTER) == [7000]
        # The fleet cannot end the technician's override either.
        refused = await fleet_command(mosquitto, pod, "release", {"request_id": "f-3", **pump})
        assert not refused["ok"] and "the fleet cannot end it" in refused["error"]
        assert await mbpoll_holding(cdu.port, PUMP_SETPOINT_REGISTER) == [7000]

        # With the technician gone, the same fleet command twice acts once.
        code, _, err = await megapodctl("--socket", sock, "release", "cdu1", "pump_speed_pct")
        assert code == 0, err
        writes_before = len(cdu.writes)
        command = {"request_id": "f-4", **pump, "value": 45, "duration_s": 600}
        first = await fleet_command(mosquitto, pod, "override", command)
        second = await fleet_command(mosquitto, pod, "override", command)
        assert first["ok"] and second == first
        assert await mbpoll_holding(cdu.port, PUMP_SETPOINT_REGISTER) == [4500]
        pump_writes = [w for w in list(cdu.writes)[writes_before:] if w == (102, 4500)]
        assert len(pump_writes) == 1
        audits = [
            e
            for e in daemon.events.recent
            if e.type == "command" and e.data["args"].get("request_id") == "f-4"  # type: ignore[attr-defined]
        ]
        assert len(audits) == 1


HOT_PDU_RULE = """
[[interlock]]
id = "rack-power-high"
device = "pdu-r1a"
point = "power_w"
trip_when = "above"
limit = 5000
actions = [{output = "cdu1.pump_speed_pct", value = 100}]
"""


async def test_an_interlock_lands_after_a_technicians_multi_step_write_never_under_it(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu, farm: PduFarm
) -> None:
    extra = _pdu_section(farm["pdu-r1a"].port) + HOT_PDU_RULE
    config = write_config(tmp_path, mosquitto, "pod-door-3", cdu.port, extra=extra)
    # The CDU answers slowly in this test: give its requests time (the CDU section is first).
    config.write_text(config.read_text().replace("timeout_s = 0.5", "timeout_s = 2.0", 1))
    async with running_daemon(config) as daemon:
        sock = daemon.config.api.socket
        await wait_until(
            lambda: all(r.state is DeviceState.ONLINE for r in daemon.store.devices()), 10
        )
        # A slow controller: the override's two writes and read-backs take > 2 s.
        cdu.write_latency_s = 1.0
        writes_before = len(cdu.writes)
        override = asyncio.create_task(
            call(
                sock,
                "override",
                {"device": "cdu1", "output": "pump_speed_pct", "value": 40, "duration_s": 600},
                timeout_s=20,
            )
        )
        pump = daemon.arbiter.outputs["cdu1.pump_speed_pct"]
        # The override's operation has started: what is on the device is unknown now.
        await wait_until(lambda: pump.written is None and bool(pump.claims), timeout_s=5)
        # Mid-write, the rack's power goes high: read from the PDU, another door.
        for outlet in range(1, 13):
            farm["pdu-r1a"].model.set_outlet_load_w(outlet, 1000.0)
        await wait_until(
            lambda: daemon.interlocks.snapshot()["rack-power-high"]["state"] == "tripped",  # type: ignore[index]
            timeout_s=5,
        )
        assert not override.done()  # the trip came while the write was in flight
        result: Any = await override
        assert result["held_by"] == "interlock"
        await wait_until(lambda: cdu.state.pump_speed_setpoint_pct == 100.0, timeout_s=10)
        cdu.write_latency_s = 0.0
        assert await mbpoll_holding(cdu.port, PUMP_SETPOINT_REGISTER) == [10000]
        pump_writes = [v for a, v in list(cdu.writes)[writes_before:] if a == 102]
        assert pump_writes == [4000, 10000]  # the technician's, then the interlock's: none after


async def test_a_consumer_that_fails_on_every_reading_takes_no_device_offline(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu
) -> None:
    config = write_config(tmp_path, mosquitto, "pod-door-4", cdu.port)
    async with running_daemon(config) as daemon:

        def broken(_device: str, _names: frozenset[str]) -> None:
            raise RuntimeError("consumer bug")

        daemon.store.readings.add("broken test consumer", broken)
        await wait_until(
            lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, timeout_s=5
        )
        polls = daemon.devices.cdus["cdu1"][1].polls_ok
        await asyncio.sleep(2.0)  # eight safety polls, each one raising in the consumer
        assert daemon.devices.cdus["cdu1"][1].polls_ok >= polls + 4
        assert daemon.store.device("cdu1").state is DeviceState.ONLINE
        assert not [e for e in daemon.events.recent if e.type == "device_offline"]
        [alarm] = [e for e in daemon.events.recent if e.type == "consumer_failed"]
        assert alarm.data["consumer"] == "broken test consumer"
        assert "broken test consumer" in alarm.message and alarm.severity == "alarm"


class SlowFsync(DiskFiles):
    """A state disk whose every fsync takes 500 ms."""

    def fsync(self, fd: int) -> None:
        time.sleep(0.5)  # runs in the writer's thread, as a slow disk would block it
        super().fsync(fd)


def _leak_config(directory: Path, broker: MosquittoBroker, cdu_port: int, pod: str) -> Path:
    rule = """
[[interlock]]
id = "leak"
device = "cdu1"
point = "leak"
trip_when = "true"
actions = [{output = "cdu1.pump_speed_pct", value = 100}]
"""
    directory.mkdir()
    return write_config(directory, broker, pod, cdu_port, extra=rule)


async def _leak_to_action_s(
    tmp_path: Path, broker: MosquittoBroker, cdu: SimulatedCdu, slow: bool
) -> float:
    name = "slow" if slow else "fast"
    config = _leak_config(tmp_path / name, broker, cdu.port, f"pod-door-5-{name}")
    daemon = Daemon(load_config(config), state_files=SlowFsync() if slow else None)
    task = asyncio.create_task(daemon.run(), name="daemon-under-test")
    try:
        await wait_until(lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, 5)
        await asyncio.sleep(1.5)  # the start-up save is done
        loop = asyncio.get_running_loop()
        cdu.state.leak_zones = 0b10
        leaked = loop.time()
        await wait_until(lambda: cdu.state.pump_speed_setpoint_pct == 100.0, 5, interval_s=0.005)
        latency_s = loop.time() - leaked
        state_file = daemon.config.state.dir / "interlocks.json"
        await wait_until(
            lambda: "leak" in json.loads(state_file.read_text())["rules"], timeout_s=1.0
        )
        return latency_s
    finally:
        cdu.state.leak_zones = 0
        daemon.request_stop()
        async with asyncio.timeout(10):
            await task


async def test_a_slow_disk_never_sits_between_a_leak_and_the_pumps(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu
) -> None:
    fast = await _leak_to_action_s(tmp_path, mosquitto, cdu, slow=False)
    cdu.state.pump_speed_setpoint_pct = 60.0
    cdu.state.control_mode = 1
    slow = await _leak_to_action_s(tmp_path, mosquitto, cdu, slow=True)
    # One poll (0.25 s) plus wire time either way; a blocking save would add 1 s (two fsyncs).
    assert fast < 0.6 and slow < 0.6, (fast, slow)
