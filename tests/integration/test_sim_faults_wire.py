"""Each injected fault, seen on the wire by real peer tools: mbpoll, snmpget, ipmitool.

The pod runs in this process (so its state can be compared directly); the
tools are the real Debian programs talking Modbus TCP, SNMP and IPMI Terminal
Mode to it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sim_devices.physics import ServerId
from sim_devices.pod import PodOptions, SimPod
from sim_devices.profiles import PROFILES, Profile
from tests.helpers import free_tcp_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.interop]

RPDU2 = "1.3.6.1.4.1.318.1.1.26"
OUTLET_STATE = RPDU2 + ".9.2.3.1.5"
PHASE_LOAD_STATE = RPDU2 + ".6.3.1.4"
PHASE_CURRENT = RPDU2 + ".6.3.1.5"
OUTLET_POWER = RPDU2 + ".9.4.3.1.7"


@dataclass(frozen=True, slots=True)
class Tool:
    returncode: int
    out: str
    err: str


async def tool(*argv: str, timeout_s: float = 20.0) -> Tool:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Tool(proc.returncode, out.decode(), err.decode())


async def mbpoll(pod: SimPod, address: int, count: int = 1) -> list[int]:
    result = await mbpoll_raw(pod, address, count)
    assert result.returncode == 0, result.err
    return [int(v) for v in re.findall(r"^\[\d+\]:\s+(-?\d+)", result.out, re.MULTILINE)]


async def mbpoll_raw(pod: SimPod, address: int, count: int = 1) -> Tool:
    port = str(pod.options.ports.cdu_port)
    return await tool(
        "mbpoll", "-m", "tcp", "-p", port, "-a", "1", "-t", "3", "-0", "-o", "0.5",
        "-r", str(address), "-c", str(count), "-1", "127.0.0.1",
    )  # fmt: skip


async def mbpoll_write(pod: SimPod, address: int, value: int) -> None:
    port = str(pod.options.ports.cdu_port)
    result = await tool(
        "mbpoll", "-m", "tcp", "-p", port, "-a", "1", "-t", "4", "-0",
        "-r", str(address), "-1", "127.0.0.1", str(value),
    )  # fmt: skip
    assert result.returncode == 0, result.err


async def snmpget(pod: SimPod, pdu: str, *oids: str) -> Tool:
    target = f"127.0.0.1:{pod.options.ports.pdu_port(pdu)}"
    return await tool(
        "snmpget", "-v2c", "-c", "public", "-t", "0.5", "-r", "0", "-Oqv", target, *oids
    )


async def snmp_ints(pod: SimPod, pdu: str, *oids: str) -> list[int]:
    result = await snmpget(pod, pdu, *oids)
    assert result.returncode == 0, result.err
    return [int(line) for line in result.out.split()]


async def ipmitool(pod: SimPod, server: str, *args: str) -> Tool:
    device = f"{pod.options.paths.pty_link(ServerId.parse(server))}:115200"
    # One retry, 1 s apart: a garbled or silent line fails in seconds, not 20.
    return await tool(
        "ipmitool", "-R", "1", "-N", "1", "-I", "serial-terminal", "-D", device, *args
    )


async def sensor(pod: SimPod, server: str, name: str) -> float:
    result = await ipmitool(pod, server, "sensor", "reading", name)
    assert result.returncode == 0, result.err
    return float(result.out.split("|")[1])


@pytest.fixture
async def pod(tmp_path: Path) -> AsyncIterator[SimPod]:
    options = PodOptions(
        layout=PROFILES[Profile.SMALL],
        base_port=free_tcp_port(),
        state_dir=tmp_path / "sim",
        speed=20.0,
    )
    sim = SimPod(options)
    stop, ready = asyncio.Event(), asyncio.Event()
    runner = asyncio.create_task(sim.run(stop, ready), name="test-sim-pod")
    try:
        async with asyncio.timeout(30):
            while not ready.is_set():
                if runner.done():
                    runner.result()  # raises what stopped it
                await asyncio.sleep(0.05)
        yield sim
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await runner


def server_state(pod: SimPod, server: str) -> dict[str, object]:
    servers: list[dict[str, object]] = pod.status()["servers"]
    return next(s for s in servers if s["id"] == server)


# --- CDU ------------------------------------------------------------------------
async def test_pump_seize_hands_over_to_the_other_pump(pod: SimPod) -> None:
    flow_before = (await mbpoll(pod, 4))[0]
    assert (await mbpoll(pod, 14))[0] & 0b11 == 0b01  # pump1 running
    pod.inject("pump-seize", ["1"])
    await wait_until(lambda: pod.links.cdu.sim.state.running_pump == 2, timeout_s=5)
    status_word = (await mbpoll(pod, 14))[0]
    assert status_word & 0b0100  # b2 pump1 fault
    assert status_word & 0b0010  # b1 pump2 running
    await wait_until(lambda: pod.model.flow_lpm > 0.9 * flow_before / 10, timeout_s=10)
    assert (await mbpoll(pod, 8))[0] == 0  # the seized pump stands still
    assert (await mbpoll(pod, 9))[0] > 5_000


async def test_cdu_sensor_stuck_and_out_of_range(pod: SimPod) -> None:
    pod.inject("sensor-range", ["cdu1", "flow_lpm"])
    pod.inject("sensor-range", ["cdu1", "supply_temp_c"])
    pod.inject("sensor-stuck", ["cdu1", "reservoir_level_pct", "12.5"])
    regs = await mbpoll(pod, 0, 11)
    assert regs[4] == 65_535
    assert regs[0] == 32_767  # 327.67 C: a broken transmitter
    assert regs[10] == 125
    pod.clear("sensor-range", [])
    regs = await mbpoll(pod, 0, 11)
    assert regs[4] == round(pod.model.flow_lpm * 10)
    assert 2_000 < regs[0] < 4_500
    assert regs[10] == 125  # the stuck one stays
    pod.clear(None, [])
    assert (await mbpoll(pod, 10))[0] == round(pod.model.reservoir_level_pct * 10)


async def test_silent_cdu_answers_nothing_until_cleared(pod: SimPod) -> None:
    pod.inject("silent", ["cdu1"])
    assert (await mbpoll_raw(pod, 0)).returncode != 0
    pod.clear("silent", ["cdu1"])
    assert len(await mbpoll(pod, 0, 18)) == 18


async def test_leak_wets_the_rack_tray_and_the_servers_sensor(pod: SimPod) -> None:
    pod.inject("leak", ["r2s01"])
    assert (await mbpoll(pod, 16))[0] == 0b10
    assert (await mbpoll(pod, 14))[0] & 0b1_0000  # b4 any leak
    assert pod.links.bmc.state(ServerId(2, 1)).leak
    assert not pod.links.bmc.state(ServerId(2, 2)).leak
    level = pod.model.reservoir_level_pct
    await wait_until(lambda: pod.model.reservoir_level_pct < level - 0.2, timeout_s=10)


async def test_isolating_a_rack_over_modbus_overheats_and_trips_its_servers(pod: SimPod) -> None:
    await mbpoll_write(pod, 108, 0b01)  # close rack 1's supply valve
    await wait_until(lambda: server_state(pod, "r1s01")["thermal_trip"] is True, timeout_s=15)
    result = await ipmitool(pod, "r1s01", "chassis", "power", "status")
    assert "Chassis Power is off" in result.out
    assert server_state(pod, "r2s01")["powered"] is True


async def test_facility_hot_raises_supply_temperature(pod: SimPod) -> None:
    before = (await mbpoll(pod, 0))[0]
    pod.inject("facility-hot", ["38"])
    assert (await mbpoll(pod, 2))[0] == 3_800
    # 3 wall s at x20 is one supply time constant: well on the way up.
    await wait_until(lambda: pod.model.snapshot().cooling.supply_temp_c > before / 100 + 5, 10)
    assert (await mbpoll(pod, 0))[0] > before + 500


# --- PDU ------------------------------------------------------------------------
async def test_breaker_trip_powers_off_that_phases_servers(pod: SimPod) -> None:
    # Small pod: r1s01 on outlet 1 and r1s04 on outlet 4 share phase 1.
    assert await snmp_ints(pod, "pdu-r1a", f"{OUTLET_STATE}.1", f"{OUTLET_STATE}.4") == [2, 2]
    pod.inject("breaker-trip", ["pdu-r1a", "1"])
    states = await snmp_ints(
        pod, "pdu-r1a", f"{OUTLET_STATE}.1", f"{OUTLET_STATE}.4", f"{OUTLET_STATE}.2",
        f"{PHASE_LOAD_STATE}.1",
    )  # fmt: skip
    assert states == [1, 1, 2, 4]  # off, off, on, overload
    assert server_state(pod, "r1s01")["powered"] is False
    assert server_state(pod, "r1s04")["powered"] is False
    assert server_state(pod, "r1s02")["powered"] is True
    await wait_until(lambda: pod.model.snapshot().server(ServerId(1, 1)).power_w == 0.0, 5)
    assert await snmp_ints(pod, "pdu-r1a", f"{PHASE_CURRENT}.1", f"{OUTLET_POWER}.1") == [0, 0]
    pod.clear("breaker-trip", ["pdu-r1a", "1"])
    assert await snmp_ints(pod, "pdu-r1a", f"{OUTLET_STATE}.1", f"{OUTLET_STATE}.4") == [2, 2]
    await wait_until(lambda: pod.model.snapshot().server(ServerId(1, 1)).power_w > 4_000, 5)


async def test_silent_pdu_times_out(pod: SimPod) -> None:
    pod.inject("silent", ["pdu-r2a"])
    assert (await snmpget(pod, "pdu-r2a", f"{OUTLET_STATE}.1")).returncode != 0
    assert (await snmpget(pod, "pdu-r1a", f"{OUTLET_STATE}.1")).returncode == 0
    pod.clear("silent", [])
    assert (await snmpget(pod, "pdu-r2a", f"{OUTLET_STATE}.1")).returncode == 0


async def test_outlet_load_is_the_servers_power(pod: SimPod) -> None:
    watts = (await snmp_ints(pod, "pdu-r2a", f"{OUTLET_POWER}.3"))[0]
    assert watts == pytest.approx(pod.model.snapshot().server(ServerId(2, 3)).power_w, abs=30)
    pod.inject("workload", ["r2", "100"])
    await wait_until(lambda: pod.model.snapshot().server(ServerId(2, 3)).power_w > 10_000, 5)
    assert (await snmp_ints(pod, "pdu-r2a", f"{OUTLET_POWER}.3"))[0] > 10_000


# --- BMC ------------------------------------------------------------------------
async def test_bmc_sensor_stuck_and_out_of_range(pod: SimPod) -> None:
    live = await sensor(pod, "r1s01", "GPU1 Temp")
    assert 35 < live < 80
    pod.inject("sensor-stuck", ["r1s01", "gpu1_temp_c", "70"])
    assert await sensor(pod, "r1s01", "GPU1 Temp") == 70
    pod.inject("sensor-range", ["r1s01", "gpu1_temp_c"])
    assert await sensor(pod, "r1s01", "GPU1 Temp") > 120  # past the SDR maximum
    pod.clear("sensor-range", ["r1s01", "gpu1_temp_c"])
    assert await sensor(pod, "r1s01", "GPU1 Temp") == pytest.approx(live, abs=3)


async def test_garbage_and_silent_bmcs_fail_ipmitool(pod: SimPod) -> None:
    pod.inject("garbage", ["r1s02", "1"])
    pod.inject("silent", ["r1s03"])
    assert (await ipmitool(pod, "r1s02", "chassis", "power", "status")).returncode != 0
    assert (await ipmitool(pod, "r1s03", "chassis", "power", "status")).returncode != 0
    assert (await ipmitool(pod, "r1s04", "chassis", "power", "status")).returncode == 0
    pod.clear(None, [])
    assert (await ipmitool(pod, "r1s02", "chassis", "power", "status")).returncode == 0
    assert (await ipmitool(pod, "r1s03", "chassis", "power", "status")).returncode == 0


async def test_chassis_off_over_ipmi_drops_the_outlet_load(pod: SimPod) -> None:
    result = await ipmitool(pod, "r2s02", "chassis", "power", "off")
    assert result.returncode == 0, result.err
    await wait_until(lambda: pod.model.snapshot().server(ServerId(2, 2)).power_w == 0.0, 5)
    assert (await snmp_ints(pod, "pdu-r2a", f"{OUTLET_POWER}.2"))[0] == 0
    assert await sensor(pod, "r2s02", "PSU Power") == 0


async def test_dcmi_power_limit_caps_the_servers_power(pod: SimPod) -> None:
    pod.inject("workload", ["r1", "100"])
    await wait_until(lambda: pod.model.snapshot().server(ServerId(1, 1)).power_w > 10_000, 5)
    for args in (("dcmi", "power", "set_limit", "limit", "6000"), ("dcmi", "power", "activate")):
        result = await ipmitool(pod, "r1s01", *args)
        assert result.returncode == 0, result.err
    # The model's power lag (0.4 s) is the cap's response: within 2 s (DEVICES.md).
    await wait_until(lambda: pod.model.snapshot().server(ServerId(1, 1)).power_w < 6_050, 5)
    assert await sensor(pod, "r1s01", "PSU Power") == pytest.approx(6_000, abs=100)
    assert (await snmp_ints(pod, "pdu-r1a", f"{OUTLET_POWER}.1"))[0] == pytest.approx(6_000, abs=60)
    assert pod.model.snapshot().server(ServerId(1, 2)).power_w > 10_000  # only r1s01 capped


async def test_fan_duty_over_ipmi_sets_rpm_and_cools_the_air(pod: SimPod) -> None:
    before_rpm = await sensor(pod, "r2s04", "Fan1")
    air_before = pod.model.snapshot().server(ServerId(2, 4)).outlet_air_c
    result = await ipmitool(pod, "r2s04", "raw", "0x30", "0x70", "0x66", "0x01", "0x00", "0x64")
    assert result.returncode == 0, result.err
    await wait_until(lambda: pod.model.servers[ServerId(2, 4)].fan_duty_pct == 100.0, 5)
    assert await sensor(pod, "r2s04", "Fan1") == 16_000 > before_rpm
    # 10 s air lag at x20: settled within a couple of wall seconds.
    await wait_until(
        lambda: pod.model.snapshot().server(ServerId(2, 4)).outlet_air_c < air_before - 2.0, 5
    )


async def test_fan_fail_reads_zero_rpm_on_the_wire_until_cleared(pod: SimPod) -> None:
    running = await sensor(pod, "r1s02", "Fan3")
    duty = server_state(pod, "r1s02")["fan_duty_pct"]
    assert isinstance(duty, float)
    assert running == pytest.approx(16_000 * duty / 100)
    assert running > 1_000
    pod.inject("fan-fail", ["r1s02", "3"])
    assert await sensor(pod, "r1s02", "Fan3") == 0
    assert await sensor(pod, "r1s02", "Fan2") == running  # its neighbours keep spinning
    assert await sensor(pod, "r1s03", "Fan3") == running  # and so do other servers' fans
    state = server_state(pod, "r1s02")
    assert state["fan_rpm"] == [running, running, 0.0, running]
    assert state["failed_fans"] == [3]
    assert pod.active() == ["fan-fail r1s02 3"]
    pod.clear("fan-fail", ["r1s02", "3"])
    assert await sensor(pod, "r1s02", "Fan3") == running
    assert server_state(pod, "r1s02")["failed_fans"] == []


async def test_status_shows_fan_duty_and_speeds_as_the_bmc_sets_them(pod: SimPod) -> None:
    result = await ipmitool(pod, "r2s01", "raw", "0x30", "0x70", "0x66", "0x01", "0x00", "0x46")
    assert result.returncode == 0, result.err  # zone 0 to 70 %
    await wait_until(lambda: server_state(pod, "r2s01")["fan_duty_pct"] == 70.0, 5)
    state = server_state(pod, "r2s01")
    assert state["fan_zone_duty_pct"] == [70, 50]  # zone 1 (peripheral) as it was
    assert state["fan_mode"] == "standard"
    assert state["fan_rpm"] == [11_200.0] * 4
    assert await sensor(pod, "r2s01", "Fan4") == 11_200
    result = await ipmitool(pod, "r2s01", "raw", "0x30", "0x45", "0x01", "0x01")
    assert result.returncode == 0, result.err  # full mode: every fan at 100 %
    await wait_until(lambda: server_state(pod, "r2s01")["fan_duty_pct"] == 100.0, 5)
    assert server_state(pod, "r2s01")["fan_mode"] == "full"
    assert server_state(pod, "r2s01")["fan_rpm"] == [16_000.0] * 4


def workloads(pod: SimPod) -> dict[int, set[float]]:
    by_rack: dict[int, set[float]] = {}
    for sid, inputs in pod.model.servers.items():
        by_rack.setdefault(sid.rack, set()).add(inputs.workload_pct)
    return by_rack


async def test_workload_faults_layer_and_clear_back(pod: SimPod) -> None:
    pod.inject("workload", ["r1", "20"])
    assert workloads(pod) == {1: {20.0}, 2: {50.0}}
    pod.inject("workload", ["all", "80"])  # "all" replaces per-rack values
    assert workloads(pod) == {1: {80.0}, 2: {80.0}}
    assert pod.active() == ["workload all 80"]
    pod.inject("workload", ["r2", "10"])
    assert workloads(pod) == {1: {80.0}, 2: {10.0}}
    pod.clear("workload", ["r2"])  # back to the pod-wide value, not the default
    assert workloads(pod) == {1: {80.0}, 2: {80.0}}
    pod.inject("workload", ["r2", "10"])
    pod.clear("workload", ["all"])  # r2 keeps its own
    assert workloads(pod) == {1: {50.0}, 2: {10.0}}
    pod.clear(None, [])
    assert workloads(pod) == {1: {50.0}, 2: {50.0}}


async def test_a_refused_replacement_leaves_the_previous_fault_in_force(pod: SimPod) -> None:
    pod.inject("sensor-stuck", ["r1s01", "gpu2_temp_c", "60"])
    with pytest.raises(ValueError, match="cannot be read from this sensor"):
        pod.inject("sensor-stuck", ["r1s01", "gpu2_temp_c", "999"])
    assert pod.active() == ["sensor-stuck r1s01 gpu2_temp_c 60"]
    assert await sensor(pod, "r1s01", "GPU2 Temp") == 60
