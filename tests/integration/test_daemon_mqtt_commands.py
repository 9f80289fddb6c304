"""Fleet commands over MQTT 5: off unless enabled; replies on the response
topic with the correlation data; checked and audited like local commands;
never an interlock reset."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from megapodd.store import DeviceState
from sim_devices.pdu import PduFarm, PduSpec, serve_pdus
from tests.daemon_helpers import fleet_command, running_daemon, write_config
from tests.helpers import MosquittoBroker, free_tcp_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def farm() -> AsyncIterator[PduFarm]:
    pdus = await serve_pdus([PduSpec("pdu-r1a", outlets=24)])
    try:
        yield pdus
    finally:
        await pdus.close()


def _config(tmp_path: Path, broker: MosquittoBroker, pod: str, port: int, enabled: bool) -> Path:
    config = write_config(
        tmp_path,
        broker,
        pod,
        extra=f'[[pdu]]\nid = "pdu-r1a"\nhost = "127.0.0.1"\nport = {port}\nrack = 1\n'
        "outlets = 24\nfast_poll_s = 0.5\nslow_poll_s = 1.0\n",
    )
    if enabled:
        text = config.read_text().replace("[mqtt]\n", "[mqtt]\ncommands = true\n")
        config.write_text(text)
    return config


async def test_an_outlet_command_over_mqtt_is_run_answered_and_audited(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: PduFarm
) -> None:
    config = _config(tmp_path, mosquitto, "pod-cmd-on", farm["pdu-r1a"].port, enabled=True)
    async with running_daemon(config) as daemon:
        await wait_until(
            lambda: (
                daemon.store.device("pdu-r1a").state is DeviceState.ONLINE
                and daemon.mqtt.connected
            ),
            timeout_s=10,
        )
        reply = await fleet_command(
            mosquitto, "pod-cmd-on", "outlet", {"pdu": "pdu-r1a", "outlet": 5, "action": "off"}
        )
        assert reply == {"ok": True, "result": {"pdu": "pdu-r1a", "outlet": 5, "state": "off"}}
        assert not farm["pdu-r1a"].model.outlet_is_on(5)
        audit = [e for e in daemon.events.recent if e.type == "command"][-1]
        assert isinstance(audit.data["caller"], dict) and audit.data["caller"]["via"] == "mqtt"

        # A standing "on" would come back by itself after an interlock: switch, don't override.
        parked = await fleet_command(
            mosquitto,
            "pod-cmd-on",
            "override",
            {"device": "pdu-r1a", "output": "outlet_5", "value": "on", "duration_s": 600},
        )
        assert parked["ok"] is False and "is switched, not overridden" in parked["error"]
        assert not farm["pdu-r1a"].model.outlet_is_on(5)
        refused = await fleet_command(mosquitto, "pod-cmd-on", "reset", {"interlock": "x"})
        assert refused["ok"] is False and "'reset' is not a command over MQTT" in refused["error"]
        bad = await fleet_command(mosquitto, "pod-cmd-on", "outlet", b"{not json")
        assert bad["ok"] is False and "request is not JSON" in bad["error"]
        out_of_range = await fleet_command(
            mosquitto, "pod-cmd-on", "outlet", {"pdu": "pdu-r1a", "outlet": 99, "action": "on"}
        )
        assert "'outlet' must be an integer from 1 to 24" in out_of_range["error"]
        rejected = [e for e in daemon.events.recent if e.type == "command_rejected"]
        assert rejected and rejected[-1].data["args"] == {
            "request_id": rejected[-1].data["args"]["request_id"],  # type: ignore[index]
            "pdu": "pdu-r1a",
            "outlet": 99,
            "action": "on",
        }
        refusals = [e.data["error"] for e in daemon.events.recent if e.type == "command_rejected"]
        assert any("'reset' is not a command over MQTT" in str(r) for r in refusals)
        assert any("request is not JSON" in str(r) for r in refusals)

        # Bad commands are refused without stopping anything.
        async with aiomqtt.Client(
            mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            wildcard = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            wildcard.ResponseTopic = "fleet/#"
            await client.publish(
                "megapod/v1/pod-cmd-on/cmd/outlet",
                json.dumps({"request_id": "w-1", "pdu": "pdu-r1a", "outlet": 8, "action": "off"}),
                qos=1,
                properties=wildcard,
            )
        deep = await fleet_command(mosquitto, "pod-cmd-on", "outlet", b"[" * 50_000)
        assert deep["ok"] is False
        assert farm["pdu-r1a"].model.outlet_is_on(8)
        assert not [e for e in daemon.events.recent if e.type == "service_failed"]
        # Replies never go under the pods' own topics.
        with pytest.raises(TimeoutError):
            await fleet_command(
                mosquitto,
                "pod-cmd-on",
                "outlet",
                {"pdu": "pdu-r1a", "outlet": 7, "action": "off"},
                timeout_s=2.0,
                reply_topic="megapod/v1/other-pod/cmd/outlet",
            )
        assert farm["pdu-r1a"].model.outlet_is_on(7)


async def test_a_retained_command_is_not_replayed_at_connect(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: PduFarm
) -> None:
    topic = "megapod/v1/pod-cmd-ret/cmd/outlet"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        command = {"request_id": "r-1", "pdu": "pdu-r1a", "outlet": 6, "action": "off"}
        await client.publish(topic, json.dumps(command), qos=1, retain=True)
    config = _config(tmp_path, mosquitto, "pod-cmd-ret", farm["pdu-r1a"].port, enabled=True)
    try:
        async with running_daemon(config) as daemon:
            # The broker replays it at subscribe time, flagged retained: refused.
            await wait_until(
                lambda: any("retained" in str(e.data.get("error")) for e in daemon.events.recent),
                timeout_s=10,
            )
            assert farm["pdu-r1a"].model.outlet_is_on(6)
    finally:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(topic, b"", qos=1, retain=True)


async def test_commands_are_off_unless_enabled(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: PduFarm
) -> None:
    config = _config(tmp_path, mosquitto, "pod-cmd-off", farm["pdu-r1a"].port, enabled=False)
    async with running_daemon(config) as daemon:
        await wait_until(lambda: daemon.mqtt.connected, timeout_s=10)
        with pytest.raises(TimeoutError):
            await fleet_command(
                mosquitto,
                "pod-cmd-off",
                "outlet",
                {"pdu": "pdu-r1a", "outlet": 5, "action": "off"},
                timeout_s=2.0,
            )
        assert farm["pdu-r1a"].model.outlet_is_on(5)
        assert not [e for e in daemon.events.recent if e.type.startswith("command")]


async def test_a_broker_that_goes_away_is_reconnected_with_commands_on(
    tmp_path: Path, farm: PduFarm
) -> None:
    port = free_tcp_port()
    conf = tmp_path / "broker.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    async def start_broker() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(conf), stderr=asyncio.subprocess.DEVNULL
        )
        await wait_until(lambda: _accepts(port), timeout_s=10)
        return proc

    broker = MosquittoBroker("127.0.0.1", port)
    config = _config(tmp_path, broker, "pod-cmd-drop", farm["pdu-r1a"].port, enabled=True)
    proc = await start_broker()
    try:
        async with running_daemon(config) as daemon:
            await wait_until(lambda: daemon.mqtt.connected, timeout_s=10)
            proc.terminate()
            await proc.wait()
            await wait_until(lambda: daemon.mqtt.connect_failures >= 1, timeout_s=40)
            proc = await start_broker()
            await wait_until(lambda: daemon.mqtt.connected, timeout_s=40)
            # A dropped broker is an ordinary reconnect, not a failed service.
            assert not [e for e in daemon.events.recent if e.type == "service_failed"]
            reply = await fleet_command(
                broker, "pod-cmd-drop", "outlet", {"pdu": "pdu-r1a", "outlet": 2, "action": "off"}
            )
            assert reply["ok"] is True
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
