"""The rPDU2 driver against the simulated PDU over real UDP sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from drivers.base import Quality
from drivers.errors import ConfigurationError, DeviceError, TransportError, ValueRejected
from drivers.snmp import NotWritableError, SnmpClient, VarBind
from drivers.snmp.rack_pdu import OutletAction, SnmpPduDriver
from sim_devices.pdu import RPDU2, PduFarm, PduSpec, serve_pdus

pytestmark = pytest.mark.integration

OUTLETS = 24
W_PER_N = 40.0  # outlet n draws n × 40 W: 12 kW in all, every phase under 20 A


@pytest.fixture
async def farm() -> AsyncIterator[PduFarm]:
    farm = await serve_pdus([PduSpec("pdu-a", outlets=OUTLETS)])
    model = farm["pdu-a"].model
    for n in range(1, OUTLETS + 1):
        model.set_outlet_load_w(n, W_PER_N * n)
    try:
        yield farm
    finally:
        await farm.close()


def make_driver(farm: PduFarm, name: str = "pdu-a", **kwargs: object) -> SnmpPduDriver:
    spec = farm[name].spec
    args: dict[str, object] = {
        "host": "127.0.0.1",
        "port": farm[name].port,
        "outlets": spec.outlets,
        "timeout_s": 0.5,
        "retries": 1,
    }
    args.update(kwargs)
    return SnmpPduDriver(**args)  # type: ignore[arg-type]


@pytest.fixture
async def driver(farm: PduFarm) -> AsyncIterator[SnmpPduDriver]:
    drv = make_driver(farm)
    await drv.connect()
    try:
        yield drv
    finally:
        await drv.close()


async def test_fast_group_in_one_request(driver: SnmpPduDriver, farm: PduFarm) -> None:
    before = driver.stats.requests_sent
    points = await driver.read_group("fast")
    assert driver.stats.requests_sent - before == 1
    total_w = sum(W_PER_N * n for n in range(1, OUTLETS + 1))
    assert points["power_w"].value == pytest.approx(total_w, abs=10)
    assert points["power_w"].unit == "W"
    assert points["energy_kwh"].unit == "kWh"
    assert points["load_state"].value == "normal"
    for p in (1, 2, 3):
        phase_w = sum(W_PER_N * n for n in range(p, OUTLETS + 1, 3))
        assert points[f"phase{p}_power_w"].value == pytest.approx(phase_w, abs=10)
        assert points[f"phase{p}_current_a"].value == pytest.approx(phase_w / 230, abs=0.05)
        assert points[f"phase{p}_voltage_v"].value == 230
        assert points[f"phase{p}_load_state"].value == "normal"
    assert all(pt.quality is Quality.GOOD for pt in points.values())
    assert len(points) == 3 + 4 * 3


async def test_slow_group_reads_every_outlet_in_one_request(driver: SnmpPduDriver) -> None:
    before = driver.stats.requests_sent
    points = await driver.read_group("slow")
    assert driver.stats.requests_sent - before == 1
    assert len(points) == 3 * OUTLETS
    assert points["outlet_01_state"].value == "on"
    assert points["outlet_07_power_w"].value == 280
    assert points["outlet_07_current_a"].value == pytest.approx(280 / 230, abs=0.05)
    assert points["outlet_24_current_a"].unit == "A"


@pytest.mark.looptime
async def test_energy_integrates_over_loop_time(driver: SnmpPduDriver) -> None:
    first = (await driver.read_group("fast"))["energy_kwh"].value
    await asyncio.sleep(3600)
    second = (await driver.read_group("fast"))["energy_kwh"].value
    assert isinstance(first, float) and isinstance(second, float)
    assert second - first == pytest.approx(12.0, abs=0.2)  # 12 kW for an hour


async def test_too_big_splits_and_remembers() -> None:
    async with await serve_pdus([PduSpec("small", outlets=48, max_message_size=1472)]) as farm:
        driver = make_driver(farm, "small")
        await driver.connect()
        try:
            before = driver.stats.requests_sent
            first = await driver.read_group("slow")
            split = driver.stats.requests_sent - before
            assert split > 2  # at least one tooBig, then halves
            assert len(first) == 144
            before = driver.stats.requests_sent
            again = await driver.read_group("slow")
            assert driver.stats.requests_sent - before < split  # no more tooBig round trips
            assert again.keys() == first.keys()
        finally:
            await driver.close()


async def test_not_supported_and_missing_values_are_bad_points(
    driver: SnmpPduDriver, farm: PduFarm
) -> None:
    pdu = farm["pdu-a"]
    pdu.model.unsupported.update({"device_energy", "outlet_current"})
    pdu.agent.mib.remove((*RPDU2, 6, 3, 1, 6, 3))  # phase 3 voltage: noSuchInstance
    fast = await driver.read_group("fast")
    slow = await driver.read_group("slow")
    assert fast["energy_kwh"].quality is Quality.BAD
    assert fast["energy_kwh"].value is None
    assert fast["phase3_voltage_v"].quality is Quality.BAD
    assert fast["phase2_voltage_v"].quality is Quality.GOOD
    assert slow["outlet_05_current_a"].quality is Quality.BAD
    assert slow["outlet_05_power_w"].quality is Quality.GOOD


async def test_outlet_off_and_on_are_confirmed(driver: SnmpPduDriver, farm: PduFarm) -> None:
    model = farm["pdu-a"].model
    assert await driver.set_outlet(5, OutletAction.OFF) == "off"
    assert not model.outlet_is_on(5)
    assert (await driver.read_group("slow"))["outlet_05_state"].value == "off"
    assert await driver.set_outlet(5, OutletAction.ON) == "on"
    assert model.outlet_is_on(5)


async def test_several_outlets_in_one_set_and_one_read_back(
    driver: SnmpPduDriver, farm: PduFarm
) -> None:
    model = farm["pdu-a"].model
    agent, before = farm["pdu-a"].agent, driver.stats.requests_sent
    handled = agent.stats.requests
    actions = {n: OutletAction.OFF for n in range(1, OUTLETS + 1)}
    assert await driver.set_outlets(actions) == {n: "off" for n in range(1, OUTLETS + 1)}
    # One SET, one GET of 2 x 24 OIDs, and the agent saw just those two.
    assert driver.stats.requests_sent - before == 2 == agent.stats.requests - handled
    assert not any(model.outlet_is_on(n) for n in range(1, OUTLETS + 1))
    assert await driver.set_outlets({2: OutletAction.ON, 9: OutletAction.ON}) == {
        2: "on", 9: "on"
    }  # fmt: skip
    assert model.outlet_is_on(2) and model.outlet_is_on(9) and not model.outlet_is_on(3)


async def test_a_bad_outlet_in_a_batch_sends_nothing(driver: SnmpPduDriver, farm: PduFarm) -> None:
    before = driver.stats.requests_sent
    with pytest.raises(ValueRejected, match=f"outlet {OUTLETS + 1}.*out of range"):
        await driver.set_outlets({1: OutletAction.OFF, OUTLETS + 1: OutletAction.OFF})
    with pytest.raises(ValueRejected, match="outlet 2: unknown outlet action"):
        await driver.set_outlets({1: OutletAction.OFF, 2: "explode"})  # type: ignore[dict-item]
    with pytest.raises(ValueRejected, match="outlet 3: a reboot is sent alone"):
        await driver.set_outlets({1: OutletAction.OFF, 3: OutletAction.REBOOT})
    assert driver.stats.requests_sent == before  # nothing reached the wire
    assert farm["pdu-a"].model.outlet_is_on(1)


async def test_a_set_too_big_for_the_agent_is_halved() -> None:
    async with await serve_pdus([PduSpec("big", outlets=96, max_message_size=1472)]) as farm:
        driver = make_driver(farm, "big")
        await driver.connect()
        try:
            everything = {n: OutletAction.OFF for n in range(1, 97)}
            assert set((await driver.set_outlets(everything)).values()) == {"off"}
            model = farm["big"].model
            assert not any(model.outlet_is_on(n) for n in range(1, 97))
            # Split once and remembered: the SET in two halves, then no more tooBig.
            before = driver.stats.requests_sent
            await driver.set_outlets({n: OutletAction.ON for n in range(1, 97)})
            assert all(model.outlet_is_on(n) for n in range(1, 97))
            assert driver.stats.requests_sent - before <= 2 + 4  # SET halves, GET quarters
        finally:
            await driver.close()


@pytest.mark.looptime
async def test_outlets_that_do_not_get_there_are_named(
    driver: SnmpPduDriver, farm: PduFarm
) -> None:
    model = farm["pdu-a"].model
    await driver.set_outlet(4, OutletAction.OFF)
    model.set_outlet_load_w(4, 9000.0)  # switching it on trips its phase at once
    with pytest.raises(DeviceError, match=r"outlet 4 did not reach on \(state 1\)") as refused:
        await driver.set_outlets({2: OutletAction.ON, 4: OutletAction.ON})
    assert "outlet 2" not in str(refused.value)  # it got there (phase 2)
    assert model.outlet_is_on(2)


@pytest.mark.looptime
async def test_reboot_is_off_then_on_after_five_seconds(
    driver: SnmpPduDriver, farm: PduFarm
) -> None:
    model = farm["pdu-a"].model
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.create_task(driver.set_outlet(8, OutletAction.REBOOT))
    await asyncio.sleep(1.0)
    assert not model.outlet_is_on(8)
    assert model.command_pending(8)
    assert await task == "on"
    assert 5.0 <= loop.time() - start < 6.5
    assert model.outlet_is_on(8)


@pytest.mark.parametrize("outlet", [0, OUTLETS + 1, -1])
async def test_outlet_numbers_are_range_checked(driver: SnmpPduDriver, outlet: int) -> None:
    before = driver.stats.requests_sent
    with pytest.raises(ValueRejected, match="out of range"):
        await driver.set_outlet(outlet, OutletAction.OFF)
    assert driver.stats.requests_sent == before  # nothing reached the wire


async def test_unknown_action_is_rejected(driver: SnmpPduDriver) -> None:
    with pytest.raises(ValueRejected, match="unknown outlet action"):
        await driver.set_outlet(1, "explode")  # type: ignore[arg-type]


async def test_set_with_the_read_community_is_refused(farm: PduFarm) -> None:
    driver = make_driver(farm, write_community="public")
    await driver.connect()
    try:
        with pytest.raises(DeviceError, match="NO_ACCESS"):
            await driver.set_outlet(1, OutletAction.OFF)
    finally:
        await driver.close()
    assert farm["pdu-a"].model.outlet_is_on(1)


async def test_set_of_a_read_only_object_is_a_device_error(farm: PduFarm) -> None:
    async with SnmpClient("127.0.0.1", farm["pdu-a"].port, write_community="private") as client:
        with pytest.raises(NotWritableError):
            await client.set([VarBind.integer((*RPDU2, 9, 2, 3, 1, 5, 1), 1)])
        with pytest.raises(DeviceError, match="WRONG_VALUE"):
            await client.set([VarBind.integer((*RPDU2, 9, 2, 4, 1, 5, 1), 4)])


@pytest.mark.looptime
async def test_wrong_community_times_out(farm: PduFarm) -> None:
    driver = make_driver(farm, community="not-it")
    with pytest.raises(TransportError, match="no answer"):
        await driver.connect()
    await driver.close()


@pytest.mark.looptime
async def test_silent_pdu_is_a_transport_error(driver: SnmpPduDriver, farm: PduFarm) -> None:
    farm["pdu-a"].silent = True
    with pytest.raises(TransportError):
        await driver.read_group("fast")
    farm["pdu-a"].silent = False
    assert (await driver.read_group("fast"))["load_state"].quality is Quality.GOOD


async def test_random_bytes_do_not_stop_the_agent(driver: SnmpPduDriver, farm: PduFarm) -> None:
    port = farm["pdu-a"].port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", bytes(range(256)), b"\xa0" * 1000):
            sock.sendto(junk, ("127.0.0.1", port))
    await asyncio.sleep(0.05)  # let the agent chew on them (real datagrams, real socket)
    assert farm["pdu-a"].agent.stats.dropped >= 5
    assert len(await driver.read_group("slow")) == 3 * OUTLETS


async def test_overload_trips_the_phase(driver: SnmpPduDriver, farm: PduFarm) -> None:
    model = farm["pdu-a"].model
    model.set_outlet_load_w(1, 7000.0)  # phase 1 now well above 32 A
    fast = await driver.read_group("fast")
    slow = await driver.read_group("slow")
    assert fast["phase1_load_state"].value == "overload"
    assert fast["load_state"].value == "overload"
    assert fast["phase1_current_a"].value == 0
    for n in range(1, OUTLETS + 1, 3):  # every outlet on phase 1 is off
        assert slow[f"outlet_{n:02d}_state"].value == "off"
    assert slow["outlet_02_state"].value == "on"
    # Lower the load and switch one outlet back on: the breaker closes.
    model.set_outlet_load_w(1, 100.0)
    assert await driver.set_outlet(4, OutletAction.ON) == "on"
    assert (await driver.read_group("fast"))["phase1_load_state"].value != "overload"
    assert (await driver.read_group("slow"))["outlet_01_state"].value == "off"  # stays off


async def test_injected_trip(driver: SnmpPduDriver, farm: PduFarm) -> None:
    farm["pdu-a"].model.trip_phase(2)
    fast = await driver.read_group("fast")
    slow = await driver.read_group("slow")
    assert fast["phase2_load_state"].value == "overload"
    assert slow["outlet_02_state"].value == "off"
    assert slow["outlet_01_state"].value == "on"


@pytest.mark.looptime
async def test_switching_on_into_an_overload_is_not_confirmed(
    driver: SnmpPduDriver, farm: PduFarm
) -> None:
    model = farm["pdu-a"].model
    await driver.set_outlet(1, OutletAction.OFF)
    model.set_outlet_load_w(1, 9000.0)  # switching it on would trip phase 1 at once
    with pytest.raises(DeviceError, match="did not reach on"):
        await driver.set_outlet(1, OutletAction.ON)


async def test_v3_driver_reads_and_switches(farm: PduFarm) -> None:
    driver = make_driver(
        farm,
        version="3",
        user="megapod",
        auth_passphrase="megapod-auth-pass",  # noqa: S106 - the simulator's default
        priv_passphrase="megapod-priv-pass",  # noqa: S106 - the simulator's default
    )
    await driver.connect()
    try:
        assert len(await driver.read_group("slow")) == 3 * OUTLETS
        assert await driver.set_outlet(3, OutletAction.OFF) == "off"
        assert not farm["pdu-a"].model.outlet_is_on(3)
    finally:
        await driver.close()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="outlets"):
        SnmpPduDriver(host="h", outlets=0)
    with pytest.raises(ConfigurationError, match="version"):
        SnmpPduDriver(host="h", version="1")
    with pytest.raises(ConfigurationError, match="user"):
        SnmpPduDriver(host="h", version="3")


async def test_unknown_group_is_a_configuration_error(driver: SnmpPduDriver) -> None:
    assert [g.name for g in driver.poll_groups()] == ["fast", "slow"]
    with pytest.raises(ConfigurationError, match="no poll group"):
        await driver.read_group("medium")
