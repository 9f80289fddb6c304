"""The daemon with simulated PDUs over SNMP: points on MQTT, outlet switching
through megapodctl, a breaker trip as an event and outlets off."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from megapodd.store import DeviceState
from sim_devices.pdu import PduFarm, PduSpec, serve_pdus
from tests.daemon_helpers import (
    megapodctl,
    read_retained,
    retained_when,
    running_daemon,
    write_config,
)
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def farm() -> AsyncIterator[PduFarm]:
    pdus = await serve_pdus([PduSpec("pdu-r1a", outlets=24)])
    try:
        yield pdus
    finally:
        await pdus.close()


def _pdu_section(port: int) -> str:
    return (
        f'[[pdu]]\nid = "pdu-r1a"\nhost = "127.0.0.1"\nport = {port}\nrack = 1\n'
        "outlets = 24\nfast_poll_s = 0.5\nslow_poll_s = 1.0\ntimeout_s = 0.5\n"
    )


async def test_pdu_points_reach_mqtt_and_outlets_switch_via_megapodctl(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: PduFarm
) -> None:
    model = farm["pdu-r1a"].model
    for n in range(1, 25):
        model.set_outlet_load_w(n, 800.0)
    config = write_config(tmp_path, mosquitto, "pod-pdu", extra=_pdu_section(farm["pdu-r1a"].port))
    async with running_daemon(config) as daemon:
        await wait_until(
            lambda: (
                daemon.store.device("pdu-r1a").state is DeviceState.ONLINE
                and daemon.store.get("pdu-r1a", "outlet_07_state") is not None
            ),
            timeout_s=10,
        )
        state = await retained_when(
            mosquitto,
            "megapod/v1/pod-pdu/devices/pdu-r1a/state",
            lambda p: p["state"] == "online" and "outlet_07_state" in p["points"],
        )
        points = state["points"]
        assert state["kind"] == "pdu"
        assert points["outlet_07_state"]["value"] == "on"
        assert points["phase1_current_a"]["unit"] == "A"
        # 8 outlets of 800 W per phase at 230 V (below the 32 A breaker).
        assert points["phase1_current_a"]["value"] == pytest.approx(6400 / 230, abs=0.2)
        assert points["power_w"]["unit"] == "W"
        assert points["power_w"]["value"] == pytest.approx(19_200, rel=0.01)

        sock = str(tmp_path / "d.sock")
        code, out, err = await megapodctl("--socket", sock, "outlet", "pdu-r1a", "7", "off")
        assert code == 0, err
        assert "outlet 7: off" in out
        assert not model.outlet_is_on(7)
        # Visible in the daemon's own view within one poll.
        await wait_until(
            lambda: (
                (p := daemon.store.get("pdu-r1a", "outlet_07_state")) is not None
                and p.value == "off"
            ),
            timeout_s=1.5,
        )
        commands = [e for e in daemon.events.recent if e.type == "command"]
        assert commands and commands[-1].data["args"] == {
            "pdu": "pdu-r1a",
            "outlet": 7,
            "action": "off",
        }
        assert "uid" in commands[-1].data["caller"]  # type: ignore[operator]
        # The line a technician reads names the result as words, not a Python dict.
        assert commands[-1].message == "outlet done: pdu=pdu-r1a outlet=7 state=off"

        code, _, err = await megapodctl("--socket", sock, "outlet", "pdu-r1a", "25", "on")
        assert code == 1 and "'outlet' must be an integer from 1 to 24" in err
        code, _, err = await megapodctl("--socket", sock, "outlet", "pdu-zz", "1", "on")
        assert code == 1 and "no PDU 'pdu-zz'" in err


async def test_a_breaker_trip_is_an_event_and_its_outlets_read_off(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: PduFarm
) -> None:
    model = farm["pdu-r1a"].model
    config = write_config(tmp_path, mosquitto, "pod-trip", extra=_pdu_section(farm["pdu-r1a"].port))
    async with running_daemon(config) as daemon:
        await wait_until(
            lambda: daemon.store.get("pdu-r1a", "outlet_01_state") is not None, timeout_s=10
        )
        model.trip_phase(1)
        phase1_outlets = [f"outlet_{n:02d}_state" for n in range(1, 25, 3)]

        def tripped() -> bool:
            points = [daemon.store.get("pdu-r1a", name) for name in phase1_outlets]
            return all(p is not None and p.value == "off" for p in points)

        await wait_until(tripped, timeout_s=3)
        other = daemon.store.get("pdu-r1a", "outlet_02_state")
        assert other is not None and other.value == "on"
        await wait_until(
            lambda: any(
                e.type == "pdu_load_state_changed" and e.data.get("to") == "overload"
                for e in daemon.events.recent
            ),
            timeout_s=3,
        )
        alarm = next(e for e in daemon.events.recent if e.data.get("to") == "overload")
        assert alarm.severity == "alarm"
        switched = {
            e.data["point"] for e in daemon.events.recent if e.type == "outlet_state_changed"
        }
        assert set(phase1_outlets) <= switched
        # The events reached subscribers too.
        payload = json.dumps([e.as_json() for e in daemon.events.recent])
        assert "overload" in payload


async def test_a_silent_pdu_goes_offline_and_the_daemon_keeps_running(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: PduFarm
) -> None:
    farm["pdu-r1a"].silent = True
    config = write_config(
        tmp_path, mosquitto, "pod-silent", extra=_pdu_section(farm["pdu-r1a"].port)
    )
    async with running_daemon(config) as daemon:
        record = daemon.store.device("pdu-r1a")
        # The connect timed out and was handled as a lost link, not a crash.
        await wait_until(lambda: record.reason.startswith("link lost"), timeout_s=10)
        assert record.state is DeviceState.OFFLINE
        status: Any = await read_retained(mosquitto, "megapod/v1/pod-silent/status")
        assert status["state"] == "online"  # the daemon itself is fine
        farm["pdu-r1a"].silent = False
        await wait_until(lambda: record.state is DeviceState.ONLINE, timeout_s=8)
