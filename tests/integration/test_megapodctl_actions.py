"""Every acting command of the real megapodctl against a daemon on the
simulated pod, in its one-line and --json forms, each checked at the
simulator (what the devices did), with the exit codes of the ways it fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.integration.ctl_helpers import ctl
from tests.integration.simulated_pod import Pod

pytestmark = pytest.mark.integration


async def _sim(pod: Pod) -> dict[str, Any]:
    return await pod.sim.status()


async def _outlets_on(pod: Pod, pdu: str) -> list[int]:
    return list((await _sim(pod))["pdus"][pdu]["outlets_on"])


async def test_every_action_against_the_simulated_pod(pod: Pod, tmp_path: Path) -> None:
    """One pod for all of them; each part says what it checks."""
    await _outlet_and_server(pod)
    await _override_release_setpoint(pod)
    await _leak_reset_and_rack(pod)
    await _failures(pod, tmp_path)


async def _outlet_and_server(pod: Pod) -> None:
    sock = pod.sock
    off = await ctl(sock, "outlet", "pdu-r2a", "7", "off")
    assert off.table() == "pdu-r2a outlet 7: off\n"
    assert 7 not in await _outlets_on(pod, "pdu-r2a")
    on = (await ctl(sock, "outlet", "pdu-r2a", "7", "on", "--json")).json()
    assert on == {"pdu": "pdu-r2a", "outlet": 7, "state": "on"}
    assert 7 in await _outlets_on(pod, "pdu-r2a")
    rebooted = await ctl(sock, "outlet", "pdu-r2a", "8", "reboot")
    assert rebooted.table() == "pdu-r2a outlet 8: on\n"

    soft = await ctl(sock, "server", "r2s04", "soft")
    assert soft.table() == "r2s04: soft done; power shutting down (soft off)\n"
    off_json = (await ctl(sock, "server", "r2s04", "off", "--json")).json()
    assert off_json == {"server": "r2s04", "action": "off", "state": "off"}
    assert not (await pod.server("r2s04"))["chassis_on"]
    assert (await ctl(sock, "server", "r2s04", "on")).table() == "r2s04: on done; power on\n"
    assert (await pod.server("r2s04"))["chassis_on"]
    cycled = (await ctl(sock, "server", "r2s03", "cycle", "--json")).json()
    assert cycled == {"server": "r2s03", "action": "cycle", "state": "on"}


async def _override_release_setpoint(pod: Pod) -> None:
    sock = pod.sock
    held = await ctl(sock, "override", "cdu1.pump_speed_pct", "80", "--for", "10m")
    assert held.table() == "cdu1.pump_speed_pct = 80.0 for 600 s\n"
    shown = (await ctl(sock, "outputs", "--json")).json()["cdu1.pump_speed_pct"]
    assert shown["owner"] == "override" and shown["claims"][0]["by"].startswith("uid ")
    await wait_until(lambda: _cdu_pump_setpoint(pod, 80.0), timeout_s=10)  # slewed there
    released = (await ctl(sock, "release", "cdu1.pump_speed_pct", "--json")).json()
    assert released == {"output": "cdu1.pump_speed_pct", "released": "override", "owner": "loop"}
    # The older form (DEVICE OUTPUT VALUE) still works, for scripts written for it.
    valve = (await ctl(sock, "override", "cdu1", "facility_valve_pct", "60", "--json")).json()
    assert valve == {
        "output": "cdu1.facility_valve_pct", "value": 60.0, "duration_s": 900.0, "held_by": None,
    }  # fmt: skip
    undone = await ctl(sock, "release", "cdu1", "facility_valve_pct")
    assert undone.table() == "cdu1.facility_valve_pct: override claim released; owner now loop\n"
    # A state, not a number: the lead pump.
    assert (await ctl(sock, "override", "cdu1.lead_pump", "pump2", "--for", "90s")).code == 0
    assert (await ctl(sock, "release", "cdu1.lead_pump")).code == 0

    moved = await ctl(sock, "loop", "supply-temp", "setpoint", "31")
    assert moved.table() == "loop supply-temp: setpoint 31\n"
    assert (await ctl(sock, "loops", "--json")).json()["supply-temp"]["setpoint"] == 31.0
    back = (await ctl(sock, "loop", "supply-temp", "setpoint", "30", "--json")).json()
    assert back == {"loop": "supply-temp", "setpoint": 30.0, "loops": ["supply-temp"]}


async def _cdu_pump_setpoint(pod: Pod, pct: float) -> bool:
    return bool((await _sim(pod))["cdu1"]["pump_speed_setpoint_pct"] == pct)


async def _leak_reset_and_rack(pod: Pod) -> None:
    sock = pod.sock
    await pod.inject("leak", "r1")
    await pod.until("leak-tray-r1", "tripped", 5)
    wet = await ctl(sock, "reset", "leak-tray-r1")
    wet.refused(1, "interlock leak-tray-r1 is still tripped")
    await pod.clear("leak", "r1")
    await pod.until("leak-tray-r1", "latched", 5)
    done = await ctl(sock, "reset", "leak-tray-r1")
    assert done.table() == "interlock leak-tray-r1: reset (leak-tray-r1), now normal\n"
    assert (await _sim(pod))["cooling"]["isolated_racks"] == [1]  # nothing came back by itself
    opened = await ctl(sock, "rack", "1", "open")
    assert opened.table() == "rack 1: coolant supply open\n"
    assert (await _sim(pod))["cooling"]["isolated_racks"] == []
    isolated = (await ctl(sock, "rack", "2", "isolate", "--json")).json()
    assert isolated == {"rack": 2, "isolation": "closed"}
    assert (await _sim(pod))["cooling"]["isolated_racks"] == [2]
    assert (await ctl(sock, "rack", "2", "open")).code == 0
    (await ctl(sock, "reset", "leak-tray-r1")).refused(1, "interlock leak-tray-r1 is not tripped")


async def _failures(pod: Pod, tmp_path: Path) -> None:
    sock = pod.sock
    (await ctl(sock, "reset", "nope")).refused(1, "no interlock 'nope'; interlocks: bmc-lost")
    (await ctl(sock, "loop", "nope", "setpoint", "3")).refused(1, "no loop 'nope'; loops:")
    (await ctl(sock, "loop", "supply-temp", "setpoint", "99")).refused(1, "outside 28–40")
    (await ctl(sock, "outlet", "pdu-zz", "1", "on")).refused(1, "no PDU 'pdu-zz'; PDUs: pdu-r1a")
    (await ctl(sock, "outlet", "pdu-r1a", "30", "on")).refused(1, "from 1 to 24 on pdu-r1a")
    (await ctl(sock, "server", "r9s01", "on")).refused(1, "no server 'r9s01'; servers: r1s01")
    (await ctl(sock, "override", "cdu1.nope", "3")).refused(1, "no output 'cdu1.nope'")
    (await ctl(sock, "override", "cdu1.pump_speed_pct", "500")).refused(1, "20–100")
    (await ctl(sock, "release", "cdu1.pump_speed_pct")).refused(1, "has no override")
    (await ctl(sock, "override", "cdu1pump", "3")).refused(2, "not an output: 'cdu1pump'")
    bad_for = await ctl(sock, "override", "cdu1.pump_speed_pct", "80", "--for", "5x")
    bad_for.refused(2, "not a duration: '5x' (try 90s, 15m or 2h)")
    long_for = await ctl(sock, "override", "cdu1.pump_speed_pct", "80", "--for", "9h")
    long_for.refused(1, "'duration_s' must be a number from 1 to 28800")
    (await ctl(sock, "server", "r1s01", "explode")).refused(2, "invalid choice: 'explode'")
    (await ctl(sock, "outlet", "pdu-r1a", "one", "on")).refused(2, "invalid int value: 'one'")
    gone = str(tmp_path / "nowhere.sock")
    (await ctl(gone, "outlet", "pdu-r1a", "1", "off")).refused(3, "is not running at", "it started")
    rejected = [e for e in pod.daemon.events.recent if e.type == "command_rejected"]
    assert {e.data["command"] for e in rejected} >= {"reset", "setpoint", "outlet", "server"}
