"""Issue 14, finding 1: a PDU agent that answers with the right request ids and
OIDs but absurd values (over real UDP, the simulator's meters stuck at them)
gets every one of them published `bad` with a reason, never `good`; each is one
`point_implausible` event per streak and counted in the link statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from megapodd.store import DeviceState
from sim_devices.pdu import PduSpec, serve_pdus
from tests.daemon_helpers import megapodctl, retained_when, running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

# The raw values behind them: INTEGER max hundredths of kW, INTEGER min tenths
# of kWh, -2 V, a uint16's top as outlet watts; and a phase over its breaker.
ABSURD = {
    "power_w": 21474836470.0,
    "energy_kwh": -214748364.8,
    "phase1_voltage_v": -2.0,
    "outlet_05_power_w": 65535.0,
    "phase2_current_a": 120.0,
}


async def test_absurd_pdu_values_are_bad_with_a_reason_never_good(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    farm = await serve_pdus([PduSpec("pdu-r1a", outlets=24)])
    model = farm["pdu-r1a"].model
    for n in range(1, 25):
        model.set_outlet_load_w(n, 800.0)
    section = (
        f'[[pdu]]\nid = "pdu-r1a"\nhost = "127.0.0.1"\nport = {farm["pdu-r1a"].port}\n'
        "rack = 1\noutlets = 24\nbreaker_a = 32\nfast_poll_s = 0.3\nslow_poll_s = 0.5\n"
        "timeout_s = 0.5\n"
    )
    config = write_config(tmp_path, mosquitto, "pod-junk", extra=section)
    topic = "megapod/v1/pod-junk/devices/pdu-r1a/state"
    try:
        async with running_daemon(config) as daemon:

            def all_good() -> bool:
                points = [daemon.store.get("pdu-r1a", name) for name in ABSURD]
                return all(p is not None and p.quality == "good" for p in points)

            await wait_until(all_good, timeout_s=10)
            model.stuck.update(ABSURD)
            state: Any = await retained_when(
                mosquitto,
                topic,
                lambda p: all(p["points"][name]["quality"] == "bad" for name in ABSURD),
            )
            supervisor = daemon.devices.supervisor("pdu-r1a")
            assert supervisor is not None
            polls = supervisor.polls_ok
            await wait_until(lambda: supervisor.polls_ok >= polls + 6, timeout_s=5)
            code, out, err = await megapodctl(
                "--socket", str(tmp_path / "d.sock"), "status", "--json"
            )
            events = [e for e in daemon.events.recent if e.type == "point_implausible"]
            assert daemon.store.device("pdu-r1a").state is DeviceState.ONLINE
    finally:
        await farm.close()

    for name, value in ABSURD.items():
        point = state["points"][name]
        assert point["value"] == pytest.approx(value), name
        assert "outside the plausible" in point["reason"], point
    # Once per streak: one event per point however many polls read it.
    assert sorted(str(e.data["point"]) for e in events) == sorted(ABSURD)
    assert all(e.severity == "warning" and e.source == "pdu-r1a" for e in events)
    assert code == 0, err
    (device,) = [d for d in json.loads(out)["devices"] if d["id"] == "pdu-r1a"]
    assert device["link"]["implausible"] >= 6 * len(ABSURD) // 2
    # The honest readings beside them stay good.
    assert device["points"]["phase3_current_a"]["quality"] == "good"
    assert device["points"]["outlet_04_power_w"]["quality"] == "good"
