"""The BMC driver against simulated BMCs on real pseudo-terminals (and a TCP console port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.base import DeviceDriver, Quality
from drivers.errors import ConfigurationError, TransportError, ValueRejected
from drivers.ipmi.bmc import BmcDriver
from drivers.ipmi.client import IpmiTimeout
from drivers.ipmi.sdr import SdrError
from megapodd.devices.bmc import bmc_poll_groups
from sim_devices.bmc import BmcFarm, BmcSpec, BmcState, ServedBmc, serve_bmcs
from tests.helpers import free_tcp_port

pytestmark = pytest.mark.integration

# A pty hands bytes to the other side through a kernel work queue, a few microseconds
# later; looptime jumps to the next timer after 42 idle loop cycles by default, which
# can beat that. Thousands of idle cycles (milliseconds of real time) cannot.
REAL_IO_LOOPTIME = pytest.mark.looptime(noop_cycles=5000)

SENSOR_IDS = (
    ["Inlet Temp", "Outlet Temp", "CPU Temp"]
    + [f"GPU{i} Temp" for i in range(1, 9)]
    + ["Coolant In Temp"]
    + [f"Fan{i}" for i in range(1, 5)]
    + ["PSU Power", "Leak"]
)
POINTS = (
    ["inlet_temp_c", "outlet_temp_c", "cpu_temp_c"]
    + [f"gpu{i}_temp_c" for i in range(1, 9)]
    + ["coolant_in_temp_c"]
    + [f"fan{i}_rpm" for i in range(1, 5)]
    + ["psu_power_w", "leak"]
)


@dataclass
class Rig:
    farm: BmcFarm
    sim: ServedBmc
    driver: BmcDriver


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    farm = await serve_bmcs([BmcSpec("srv01", seed=1)], tmp_path)
    driver = BmcDriver(farm["srv01"].path, timeout_s=0.5, retries=2)
    try:
        await driver.connect()
        yield Rig(farm, farm["srv01"], driver)
    finally:
        await driver.close()
        await farm.close()


def expected(sim: ServedBmc) -> dict[str, float | bool]:
    return {point: sim.bmc.value_of(sid) for point, sid in zip(POINTS, SENSOR_IDS, strict=True)}


async def test_every_sensor_point_reads_what_the_simulator_holds(rig: Rig) -> None:
    state = rig.sim.state
    state.placeholder_physics = False
    state.inlet_temp_c = -12.0  # two's complement on the wire
    state.gpu_temps_c = [61.5, 62.0, 70.5, 80.0, 33.0, 44.5, 55.0, 86.5]
    state.coolant_in_temp_c = 32.5
    state.fan_rpm = [7000.0, 7100.0, 7200.0, 7300.0]
    state.psu_power_w = 9800.0
    state.leak = True
    points = await rig.driver.read_group("sensors")
    assert list(points) == POINTS
    assert {name: p.value for name, p in points.items()} == expected(rig.sim)
    assert points["inlet_temp_c"].value == -12.0
    assert points["gpu3_temp_c"].value == 70.5 and points["gpu3_temp_c"].unit == "C"
    assert points["coolant_in_temp_c"].value == 32.5
    assert points["fan2_rpm"].value == 7100.0 and points["fan2_rpm"].unit == "RPM"
    assert points["psu_power_w"].value == 9800.0 and points["psu_power_w"].unit == "W"
    assert points["leak"].value is True
    assert all(p.quality is Quality.GOOD for p in points.values())


async def test_slow_group_and_thresholds(rig: Rig) -> None:
    state = rig.sim.state
    state.demand_power_w = 7321.0
    points = await rig.driver.read_group("slow")
    assert {n: p.value for n, p in points.items()} == {
        "chassis_power": "on",
        "power_w": 7321,
        "power_limit_w": 12000,
        "power_limit_active": False,
        "fan_duty_pct": 50,
        "fan_mode": "standard",
    }
    gpu = rig.driver.thresholds["gpu1_temp_c"]
    assert (gpu.unc, gpu.uc, gpu.unr, gpu.lc) == (85.0, 87.0, 92.0, None)
    assert rig.driver.thresholds["fan1_rpm"].lc == 1000.0
    assert rig.driver.device_id is not None and rig.driver.device_id.firmware == "1.23"
    assert [g.name for g in rig.driver.poll_groups()] == ["sensors", "slow"]


async def test_chassis_power_off_seen_on_next_poll(rig: Rig) -> None:
    assert (await rig.driver.read_group("slow"))["chassis_power"].value == "on"
    rig.sim.state.chassis_on = False  # someone pressed the button
    points = await rig.driver.read_group("slow")
    assert points["chassis_power"].value == "off"
    assert points["power_w"].value == 0
    assert (await rig.driver.read_group("sensors"))["psu_power_w"].value == 0.0


async def test_chassis_control_off_on_is_confirmed(rig: Rig) -> None:
    status = await rig.driver.chassis_control("off")
    assert not status.power_on and not rig.sim.state.chassis_on
    status = await rig.driver.chassis_control(1)
    assert status.power_on and rig.sim.state.chassis_on
    await rig.driver.chassis_control("hard_reset")
    assert rig.sim.state.resets == 1
    before = rig.driver.counters.requests
    with pytest.raises(ValueRejected, match="unknown chassis action"):
        await rig.driver.chassis_control("warp")
    assert rig.driver.counters.requests == before  # refused before the wire


@REAL_IO_LOOPTIME
async def test_soft_shutdown_goes_off_after_30_s(rig: Rig) -> None:
    await rig.driver.chassis_control("soft_shutdown")
    await asyncio.sleep(29)
    assert (await rig.driver.read_group("slow"))["chassis_power"].value == "on"
    await asyncio.sleep(1.5)
    assert (await rig.driver.read_group("slow"))["chassis_power"].value == "off"


@REAL_IO_LOOPTIME
async def test_power_cycle_comes_back_on(rig: Rig) -> None:
    status = await rig.driver.chassis_control("cycle")
    assert not status.power_on
    await asyncio.sleep(1.5)
    assert (await rig.driver.get_chassis_status()).power_on


@REAL_IO_LOOPTIME
async def test_power_limit_caps_within_2_s_and_clears(rig: Rig) -> None:
    rig.sim.state.demand_power_w = 10400.0
    await rig.driver.set_power_limit_w(8000)
    slow = await rig.driver.read_group("slow")
    assert slow["power_limit_w"].value == 8000 and slow["power_limit_active"].value is True
    await asyncio.sleep(2.0)
    assert (await rig.driver.read_group("slow"))["power_w"].value == 8000
    assert (await rig.driver.read_group("sensors"))["psu_power_w"].value == 8000.0
    await rig.driver.set_power_limit_w(None)
    slow = await rig.driver.read_group("slow")
    assert slow["power_limit_active"].value is False and slow["power_w"].value == 10400
    for bad in (50, 40000, 8000.5, True):
        with pytest.raises(ValueRejected, match="power limit"):
            await rig.driver.set_power_limit_w(bad)  # type: ignore[arg-type]


async def test_fan_duty_and_mode(rig: Rig) -> None:
    await rig.driver.set_fan_duty_pct(0, 70)
    assert rig.sim.state.fan_duty_pct[0] == 70
    points = await rig.driver.read_group("sensors")
    assert points["fan1_rpm"].value == 1000 + 150 * 70  # the placeholder fan curve
    await rig.driver.set_fan_duty_pct(1, 35)
    assert rig.sim.state.fan_duty_pct[1] == 35
    await rig.driver.set_fan_mode("full")
    assert (await rig.driver.read_group("slow"))["fan_mode"].value == "full"
    await rig.driver.set_fan_mode(0)
    for zone, pct in ((0, 101), (0, -1), (16, 50)):
        with pytest.raises(ValueRejected, match="fan"):
            await rig.driver.set_fan_duty_pct(zone, pct)
    with pytest.raises(ValueRejected, match="fan mode"):
        await rig.driver.set_fan_mode("turbo")


async def test_bad_readings_are_bad_never_good(rig: Rig) -> None:
    bmc = rig.sim.bmc
    rig.sim.state.stuck_raw["GPU2 Temp"] = bmc.out_of_range_raw("GPU2 Temp")
    rig.sim.state.stuck_raw["Inlet Temp"] = bmc.out_of_range_raw("Inlet Temp")
    rig.sim.state.unavailable.add("CPU Temp")
    points = await rig.driver.read_group("sensors")
    assert points["gpu2_temp_c"].quality is Quality.BAD and points["gpu2_temp_c"].value == 120.5
    assert points["inlet_temp_c"].quality is Quality.BAD
    assert points["cpu_temp_c"].quality is Quality.BAD and points["cpu_temp_c"].value is None
    assert points["gpu1_temp_c"].quality is Quality.GOOD
    rig.sim.state.stuck_raw["GPU2 Temp"] = 100  # stuck, but in range: that is the daemon's job
    assert (await rig.driver.read_group("sensors"))["gpu2_temp_c"].value == 50.0


@REAL_IO_LOOPTIME
async def test_silent_bmc_raises_timeout(rig: Rig) -> None:
    rig.sim.state.silent = True
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(IpmiTimeout):
        await rig.driver.read_group("sensors")
    assert loop.time() - start == pytest.approx(1.5)  # one sensor, three attempts, then give up
    rig.sim.state.silent = False
    assert (await rig.driver.read_group("sensors"))["gpu1_temp_c"].quality is Quality.GOOD


async def test_sdr_reservation_lost_is_resumed(tmp_path: Path) -> None:
    state = BmcState(cancel_reservation_every=3)
    farm = await serve_bmcs([BmcSpec("srv02", state)], tmp_path)
    driver = BmcDriver(farm["srv02"].path, timeout_s=0.5)
    try:
        await driver.connect()
        assert [s.point_name for s in driver.sensors] == POINTS
        assert driver.counters.completion_errors >= 10  # C5s met and survived
        points = await driver.read_group("sensors")
        assert points["gpu8_temp_c"].value == farm["srv02"].bmc.value_of("GPU8 Temp")
    finally:
        await driver.close()
        await farm.close()


async def test_sdr_bit_flip_is_caught_by_reading_records_twice(tmp_path: Path) -> None:
    # Flipped bits in valid hex pass every framing check; only a second read shows them.
    state = BmcState()
    farm = await serve_bmcs([BmcSpec("srv04", state, seed=5)], tmp_path)
    driver = BmcDriver(farm["srv04"].path, timeout_s=0.5)
    try:
        state.corrupt_sdr_reads = 40  # every chunk of the first reads comes back wrong
        with pytest.raises(SdrError, match="no two of 5 reads agreed"):
            await driver.connect()
        state.corrupt_sdr_reads = 3  # a few flips, then clean reads
        await driver.connect()
        assert state.corrupt_sdr_reads == 0
        points = await driver.read_group("sensors")
        assert {n: p.value for n, p in points.items()} == expected(farm["srv04"])
    finally:
        await driver.close()
        await farm.close()


async def test_sdr_reread_when_repository_changes(rig: Rig) -> None:
    assert rig.driver.sdr_reads == 1
    await rig.driver.read_group("slow")
    assert rig.driver.sdr_reads == 1  # unchanged timestamps: cached
    rig.sim.bmc.change_sdr()
    await rig.driver.read_group("slow")
    assert rig.driver.sdr_reads == 2


async def test_console_server_socket_url(tmp_path: Path) -> None:
    port = free_tcp_port()
    farm = await serve_bmcs([BmcSpec("srv03", tcp_port=port)], tmp_path)
    driver = BmcDriver(f"socket://127.0.0.1:{port}", timeout_s=0.5)
    try:
        await driver.connect()
        points = await driver.read_group("sensors")
        assert points["gpu4_temp_c"].value == farm["srv03"].bmc.value_of("GPU4 Temp")
        assert (await driver.read_group("slow"))["chassis_power"].value == "on"
    finally:
        await driver.close()
        await farm.close()


async def test_link_path_is_a_symlink_to_the_pty(rig: Rig, tmp_path: Path) -> None:
    link = tmp_path / "srv01.tty"
    assert link.is_symlink() and str(link.resolve()).startswith("/dev/pts/")
    await rig.farm.close()
    assert not link.exists()


async def test_unknown_commands_answer_c1(rig: Rig) -> None:
    from drivers.ipmi.client import IpmiCompletionError

    client = rig.driver._client  # the line the driver owns; no second opener on a pty
    with pytest.raises(IpmiCompletionError) as info:
        await client.call(0x2C, 0x00, b"\x00")  # ipmitool's PICMG probe
    assert info.value.code == 0xC1
    with pytest.raises(IpmiCompletionError) as info:
        await client.call(0x06, 0x99)
    assert info.value.code == 0xC1


async def test_line_that_goes_away_raises_transport_error(tmp_path: Path) -> None:
    farm = await serve_bmcs([BmcSpec("gone")], tmp_path)
    driver = BmcDriver(farm["gone"].path, timeout_s=0.5, retries=0)
    try:
        await driver.connect()
        await farm.close()  # the pty disappears under the driver (console server reboot)
        with pytest.raises(TransportError):
            async with asyncio.timeout(5):
                await driver.read_group("sensors")
    finally:
        await driver.close()
        await farm.close()


async def test_missing_device_and_bad_port_strings(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="cannot open"):
        await BmcDriver(str(tmp_path / "nope.tty")).connect()
    with pytest.raises(ConfigurationError, match="socket://"):
        await BmcDriver("rfc2217://host:1").connect()
    with pytest.raises(ConfigurationError, match="host:port"):
        await BmcDriver("socket://nohost").connect()
    with pytest.raises(ConfigurationError, match="positive"):
        BmcDriver("/dev/null", timeout_s=0)


def test_driver_satisfies_the_contract() -> None:
    driver: DeviceDriver = BmcDriver("/dev/ttyS9", 115200, poll_s=1.0, timeout_s=0.5, retries=1)
    assert driver.kind == "bmc"
    assert [(g.name, g.period_s) for g in driver.poll_groups()] == [("sensors", 1.0), ("slow", 1.0)]


async def test_the_daemons_policy_reads_fans_and_power_with_the_slow_group(rig: Rig) -> None:
    rig.sim.state.placeholder_physics = False
    rig.driver.groups = {g.name: g for g in bmc_poll_groups(poll_s=2.0, slow_poll_s=5.0)}
    fast = await rig.driver.read_group("sensors")
    slow = await rig.driver.read_group("slow")
    thermal = [p for p in POINTS if p.endswith("_c") or p == "leak"]
    assert list(fast) == thermal
    assert {"fan1_rpm", "fan4_rpm", "psu_power_w", "chassis_power"} <= set(slow)
    want = expected(rig.sim)
    assert {n: p.value for n, p in fast.items()} == {n: want[n] for n in thermal}
    assert slow["psu_power_w"].value == want["psu_power_w"]
