"""The default safety rules, fault by fault, against the simulated pod.

Each test starts `megapod-sim` (the small pod) with the config it writes and a
daemon on it, injects faults with `megapod-sim inject`, and checks what
happened on the wire with the peer tools (mbpoll for the CDU's registers,
snmpget for outlets) and the simulator's true state (chassis power, fan duty,
power limits), then the events, the latched or released state, the clearing
and the reset. The rules' long delays (30 s, 60 s, 120 s) are shortened in the
config so a test takes seconds; the engine's timing itself is tested on the
loop clock in tests/unit/test_safety_engine.py.
"""

from __future__ import annotations

import asyncio

import pytest

from megapodd.control.arbiter import Owner
from tests.daemon_helpers import megapodctl
from tests.helpers import wait_until
from tests.integration.simulated_pod import (
    CONTROL_MODE,
    ISOLATION,
    LEAD_PUMP,
    PUMP_SETPOINT,
    Pod,
)
from tests.peers import mbpoll_holding, mbpoll_input, mbpoll_write_holding, snmpget_outlet

pytestmark = pytest.mark.integration

async def test_leaks_isolate_and_power_off_their_rack_and_nothing_comes_back_by_itself(
    pod: Pod,
) -> None:
    r1a, r2a = pod.pdu_port("pdu-r1a"), pod.pdu_port("pdu-r2a")
    # A wet drip tray: Modbus, checked data, so the first reading trips.
    await pod.inject("leak", "r1")
    await pod.until("leak-tray-r1", "tripped", 5)
    await wait_until(
        lambda: all(e.data["result"] == "done" for e in pod.events("interlock_action"))
        and len(pod.events("interlock_action", "leak-tray-r1")) == 25,
        timeout_s=10,
    )
    assert await mbpoll_holding(pod.cdu_port, ISOLATION) == [0b01]
    for outlet in (1, 4, 24):
        assert await snmpget_outlet(r1a, outlet, pod.tmp) == "off"
    assert await snmpget_outlet(r2a, 1, pod.tmp) == "on"  # the other rack runs on
    [tripped] = pod.events("interlock_tripped", "leak-tray-r1")
    assert tripped.severity == "critical"
    # Something else reopens the rack behind the daemon's back: it is closed again.
    await mbpoll_write_holding(pod.cdu_port, ISOLATION, 0)
    await wait_until(lambda: bool(pod.events("output_mismatch")), timeout_s=3)
    [mismatch] = pod.events("output_mismatch")
    assert mismatch.data["output"] == "cdu1.rack_1_isolation" and mismatch.data["shown"] == "open"

    async def closed_again() -> bool:
        return await mbpoll_holding(pod.cdu_port, ISOLATION) == [0b01]

    await wait_until(closed_again, timeout_s=3, interval_s=0.25)

    # A reset while the tray is still wet is refused, and audited.
    code, text = await pod.reset("leak-tray-r1")
    assert code == 1 and "still tripped" in text
    assert any(
        e.data.get("command") == "reset" for e in pod.daemon.events.recent
        if e.type == "command_rejected"
    )
    await pod.clear("leak", "r1")
    await pod.until("leak-tray-r1", "latched", 5)
    code, text = await pod.reset("leak-tray-r1")
    assert code == 0, text
    await asyncio.sleep(1.0)
    assert await mbpoll_holding(pod.cdu_port, ISOLATION) == [0b01]  # still closed
    assert await snmpget_outlet(r1a, 1, pod.tmp) == "off"  # still off
    code, _, err = await megapodctl("--socket", pod.sock, "rack", "1", "open")
    assert code == 0, err
    assert await mbpoll_holding(pod.cdu_port, ISOLATION) == [0]
    code, _, err = await megapodctl("--socket", pod.sock, "outlet", "pdu-r1a", "1", "on")
    assert code == 0, err

    # A server's own leak sensor (Terminal Mode: two agreeing reads) in rack 2.
    await pod.inject("leak", "r2s03")
    await pod.until("leak-server-r2", "tripped", 15)
    await wait_until(
        lambda: len(pod.events("interlock_action", "leak-server-r2")) == 25, timeout_s=10
    )
    assert await mbpoll_holding(pod.cdu_port, ISOLATION) == [0b10]
    assert await snmpget_outlet(r2a, 3, pod.tmp) == "off"
    assert await snmpget_outlet(r1a, 1, pod.tmp) == "on"
    await pod.clear("leak", "r2s03")
    await pod.until("leak-server-r2", "latched", 15)
    code, text = await pod.reset("leak-server-r2")
    assert code == 0, text


async def test_reservoir_low_alarms_and_critical_shuts_the_pod_down(pod: Pod) -> None:
    await pod.inject("sensor-stuck", "cdu1", "reservoir_level_pct", "15")
    await pod.until("reservoir-low", "tripped", 5)
    [alarm] = pod.events("interlock_tripped", "reservoir-low")
    assert alarm.severity == "alarm" and alarm.data["alarm"] is True
    assert await pod.servers_on()  # an alarm only
    await pod.inject("sensor-stuck", "cdu1", "reservoir_level_pct", "8")
    await pod.until("reservoir-critical", "tripped", 5)
    # Soft shutdown at once, hard power-off 3 s later for servers still on.
    await _until_all_off(pod, timeout_s=20)
    await wait_until(
        lambda: len([
            e for e in pod.events("interlock_action", "reservoir-critical")
            if e.data["output"].endswith("outlet_1") and e.data["result"] == "done"
        ]) == 2,
        timeout_s=20,
    )  # fmt: skip
    assert await snmpget_outlet(pod.pdu_port("pdu-r2a"), 1, pod.tmp) == "off"
    await pod.clear("sensor-stuck")
    await pod.until("reservoir-critical", "latched", 5)
    for rule in ("reservoir-low", "reservoir-critical"):
        code, text = await pod.reset(rule)
        assert code == 0, text
    assert await pod.servers_on() == []  # nothing is switched back on by itself


async def _until_all_off(pod: Pod, timeout_s: float) -> None:
    async def all_off() -> bool:
        return await pod.servers_on() == []

    await wait_until(all_off, timeout_s=timeout_s, interval_s=0.5)


async def test_hot_supply_drives_cooling_to_full_and_critical_shuts_down(pod: Pod) -> None:
    await pod.inject("sensor-stuck", "cdu1", "supply_temp_c", "46")
    await pod.until("supply-high", "tripped", 5)

    async def cooling_full() -> bool:
        servers = (await pod.sim.status())["servers"]
        return all(s["fan_duty_pct"] == 100 for s in servers)  # what drives the fans

    await wait_until(cooling_full, timeout_s=20, interval_s=0.5)
    assert await mbpoll_holding(pod.cdu_port, PUMP_SETPOINT) == [10000]
    assert await mbpoll_holding(pod.cdu_port, CONTROL_MODE) == [0]  # remote speed
    assert pod.state("supply-critical") == "normal"
    await pod.inject("sensor-stuck", "cdu1", "supply_temp_c", "51")
    await asyncio.sleep(1.0)
    assert pod.state("supply-critical") == "normal"  # for_s (2 s here) not yet
    await pod.until("supply-critical", "tripped", 5)
    await _until_all_off(pod, timeout_s=20)
    await pod.clear("sensor-stuck")
    await pod.until("supply-critical", "latched", 5)
    await pod.until("supply-high", "latched", 5)
    for rule in ("supply-critical", "supply-high"):
        code, text = await pod.reset(rule)
        assert code == 0, text
    # The pumps go back to the pump zone's loops, below full speed; the servers stay off.
    pumps = pod.daemon.arbiter.outputs["cdu1.pump_speed_pct"]

    async def back_to_the_loops() -> bool:
        winner = pumps.winner()
        return (
            winner is not None
            and winner.by == "zone pumps"
            and (await mbpoll_holding(pod.cdu_port, PUMP_SETPOINT))[0] < 10000
        )

    await wait_until(back_to_the_loops, timeout_s=10, interval_s=0.5)
    assert await pod.servers_on() == []


async def test_loss_of_flow_switches_the_lead_pump_then_shuts_down(pod: Pod) -> None:
    assert await mbpoll_holding(pod.cdu_port, LEAD_PUMP) == [0]
    await pod.inject("sensor-stuck", "cdu1", "flow_lpm", "0")
    await pod.until("flow-lost", "tripped", 5)

    async def lead_is_pump2() -> bool:
        return await mbpoll_holding(pod.cdu_port, LEAD_PUMP) == [2]  # pump 1 was running

    await wait_until(lead_is_pump2, timeout_s=5, interval_s=0.25)
    assert await pod.servers_on()  # not yet: the other pump gets 5 s
    await _until_all_off(pod, timeout_s=30)
    await pod.clear("sensor-stuck")
    await pod.until("flow-lost", "latched", 5)
    code, text = await pod.reset("flow-lost")
    assert code == 0, text


async def test_both_pumps_failed_shuts_the_pod_down(pod: Pod) -> None:
    await pod.inject("pump-seize", "1")
    await pod.inject("pump-seize", "2")
    await pod.until("pumps-failed", "tripped", 5)
    [tripped] = pod.events("interlock_tripped", "pumps-failed")
    assert tripped.severity == "critical"
    await _until_all_off(pod, timeout_s=20)  # soft first: the simulated OS ends quickly
    soft = [
        e for e in pod.events("interlock_action", "pumps-failed")
        if e.data["value"] == "soft_off" and e.data["result"] == "done"
    ]  # fmt: skip
    assert len(soft) == 8
    code, text = await pod.reset("pumps-failed")
    assert code == 1 and "still tripped" in text  # seized pumps do not reset
    await pod.clear("pump-seize")


async def test_a_hot_gpu_caps_its_server_and_a_critical_one_shuts_it_down(pod: Pod) -> None:
    await pod.inject("sensor-stuck", "r1s02", "gpu3_temp_c", "88")
    await pod.until("gpu-hot@r1s02", "tripped", 15)

    async def limit(server: str) -> object:
        return (await pod.server(server))["power_limit_w"]

    async def capped() -> bool:
        return await limit("r1s02") == 6000

    await wait_until(capped, timeout_s=10, interval_s=0.5)
    assert await limit("r1s03") is None  # only that server
    await pod.clear("sensor-stuck")
    await pod.until("gpu-hot@r1s02", "normal", 15)  # releases by itself

    async def uncapped() -> bool:
        return await limit("r1s02") is None

    await wait_until(uncapped, timeout_s=10, interval_s=0.5)
    assert pod.events("interlock_released", "gpu-hot@r1s02")

    await pod.inject("sensor-stuck", "r1s02", "gpu3_temp_c", "93")
    await pod.until("gpu-shutdown@r1s02", "tripped", 15)

    async def r1s02_off() -> bool:
        return "r1s02" not in await pod.servers_on()

    await wait_until(r1s02_off, timeout_s=20, interval_s=0.5)
    assert len(await pod.servers_on()) == 7
    await pod.clear("sensor-stuck")
    await pod.until("gpu-shutdown@r1s02", "latched", 15)
    code, text = await pod.reset("gpu-shutdown")  # every latched instance that is clear
    assert code == 0 and "gpu-shutdown@r1s02" in text, text
    code, _, err = await megapodctl("--socket", pod.sock, "server", "r1s02", "on")
    assert code == 0, err


async def test_phase_current_caps_that_phase_and_sheds_its_lowest_priority_outlets(
    pod: Pod,
) -> None:
    port = pod.pdu_port("pdu-r1a")
    # Phase 1 of pdu-r1a feeds r1s01 (outlet 1) and r1s04 (outlet 4); breaker 125 A.
    await pod.inject("sensor-stuck", "pdu-r1a", "phase1_current_a", "115")
    instance = "phase-high-pdu-r1a@pdu-r1a.phase1_current_a"
    await pod.until(instance, "tripped", 5)

    async def caps() -> list[object]:
        return [(await pod.server(s))["power_limit_w"] for s in ("r1s01", "r1s04", "r1s02")]

    async def capped() -> bool:
        limits = await caps()
        return limits[:2] == [10200, 10200]

    await wait_until(capped, timeout_s=15, interval_s=0.5)
    assert (await caps())[2] is None  # r1s02 is on phase 2
    await pod.clear("sensor-stuck")
    await pod.until(instance, "normal", 5)  # releases by itself

    # The interlock lets go by itself. The power budget ([power], docs/power.md)
    # read the same 115 A over its own limit (80 % of the breaker) and keeps
    # its cap beneath the interlock's, so the servers are never uncapped in
    # between; it lets go after release_s of headroom.
    async def released() -> bool:
        limits = (await caps())[:2]
        owners = [
            pod.daemon.arbiter.outputs[f"{s}.power_limit_w"].winner() for s in ("r1s01", "r1s04")
        ]
        by_interlock = [w is not None and w.owner is Owner.INTERLOCK for w in owners]
        return not any(by_interlock) and all(c is None or float(str(c)) < 10200 for c in limits)

    await wait_until(released, timeout_s=15, interval_s=0.5)

    await pod.inject("sensor-stuck", "pdu-r1a", "phase1_current_a", "126")
    overload = "phase-overload-pdu-r1a@pdu-r1a.phase1_current_a"
    await pod.until(overload, "tripped", 5)

    async def shed() -> bool:
        return await snmpget_outlet(port, 1, pod.tmp) == "off"

    await wait_until(shed, timeout_s=10, interval_s=0.5)
    assert await snmpget_outlet(port, 4, pod.tmp) == "off"
    assert await snmpget_outlet(port, 2, pod.tmp) == "on"  # phase 2
    await pod.clear("sensor-stuck")
    await pod.until(overload, "latched", 5)
    code, text = await pod.reset("phase-overload-pdu-r1a")
    assert code == 0, text
    assert await snmpget_outlet(port, 1, pod.tmp) == "off"  # stays as the rule left it


async def test_lost_devices_alarm_and_a_lost_bmc_gets_full_fans(pod: Pod) -> None:
    await pod.inject("silent", "pdu-r1a")
    await pod.until("pdu-lost@pdu-r1a", "tripped", 20)
    [alarm] = pod.events("interlock_tripped", "pdu-lost@pdu-r1a")
    assert alarm.severity == "alarm"
    await pod.clear("silent", "pdu-r1a")
    await pod.until("pdu-lost@pdu-r1a", "normal", 20)

    await pod.inject("silent", "r1s01")
    await pod.until("bmc-lost@r1s01", "tripped", 40)
    await pod.clear("silent", "r1s01")
    await pod.until("bmc-lost@r1s01", "latched", 40)

    async def full_fans() -> bool:
        return bool((await pod.server("r1s01"))["fan_duty_pct"] == 100)

    await wait_until(full_fans, timeout_s=20, interval_s=0.5)
    code, text = await pod.reset("bmc-lost@r1s01")
    assert code == 0, text

    # A silent CDU: the alarm; and supply-high trips on the missing reading
    # (fail safe: cooling to full), which the CDU's own watchdog also does.
    await pod.inject("silent", "cdu1")
    await pod.until("cdu-lost", "tripped", 20)
    await pod.until("supply-high", "tripped", 10)  # 5 s without a good reading
    await pod.clear("silent", "cdu1")
    await pod.until("cdu-lost", "normal", 20)
    await pod.until("supply-high", "latched", 20)
    code, text = await pod.reset("supply-high")
    assert code == 0, text


STATUS_BITS = 14  # input register: b6 watchdog expired, b7 local mode
PUMP1_SPEED, FAILSAFE_SPEED = 8, 107  # feedback (input), failsafe speed (holding)


async def test_a_cdu_in_local_mode_or_without_heartbeats_raises_an_alarm_only(pod: Pod) -> None:
    # The front panel goes to local: status b7, remote writes refused; the
    # pod's control is not ours, which the operator must know, but nothing is
    # switched off for it.
    await pod.inject("local-mode")
    await pod.until("cdu-local-mode", "tripped", 5)
    [alarm] = pod.events("interlock_tripped", "cdu-local-mode")
    assert alarm.severity == "alarm" and alarm.data["alarm"] is True
    [status] = await mbpoll_input(pod.cdu_port, STATUS_BITS)
    assert status & 1 << 7
    await pod.clear("local-mode")
    await pod.until("cdu-local-mode", "normal", 5)  # not latched: back to remote is enough

    # Heartbeats stop reaching the CDU: its watchdog runs out (10 s) and it
    # drives the failsafe speed by itself; the daemon says so.
    await pod.inject("heartbeat-lost")
    await pod.until("cdu-watchdog-expired", "tripped", 20)
    [alarm] = pod.events("interlock_tripped", "cdu-watchdog-expired")
    assert alarm.severity == "alarm"
    [status] = await mbpoll_input(pod.cdu_port, STATUS_BITS)
    [failsafe] = await mbpoll_holding(pod.cdu_port, FAILSAFE_SPEED)

    async def at_failsafe_speed() -> bool:
        [speed] = await mbpoll_input(pod.cdu_port, PUMP1_SPEED)
        return abs(speed - failsafe) <= 100  # within 1 % (0.01 % counts)

    assert status & 1 << 6
    await wait_until(at_failsafe_speed, timeout_s=10, interval_s=0.5)
    assert await pod.servers_on()  # an alarm only
    await pod.clear("heartbeat-lost")
    await pod.until("cdu-watchdog-expired", "normal", 10)  # the next heartbeat restores it
    [status] = await mbpoll_input(pod.cdu_port, STATUS_BITS)
    assert not status & (1 << 6 | 1 << 7)
