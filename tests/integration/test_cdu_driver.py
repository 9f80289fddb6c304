"""CduDriver against the simulated CDU over real TCP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.base import Quality
from drivers.errors import DeviceError, TransportError, ValueRejected
from drivers.modbus.cdu import CduDriver, ModbusDeviceError, ModbusExceptionCode, WriteNotConfirmed
from sim_devices.cdu import CduState, SimulatedCdu

pytestmark = pytest.mark.integration


def sim_state() -> CduState:
    return CduState(
        supply_temp_c=-5.25,
        return_temp_c=41.37,
        facility_supply_temp_c=18.5,
        facility_return_temp_c=-0.01,
        flow_lpm=612.3,
        supply_pressure_kpa=251.4,
        return_pressure_kpa=100.2,
        pump1_speed_pct=60.0,
        reservoir_level_pct=80.5,
        facility_valve_position_pct=42.0,
        heat_load_w=412_345,
        leak_zones=0b101,
        filter_dp_high=True,
        control_mode=0,
    )


@contextlib.asynccontextmanager
async def running_cdu(leak_zones: int = 0b101) -> AsyncIterator[tuple[SimulatedCdu, CduDriver]]:
    """Simulator and connected driver. Tests on the fake clock enter this themselves:
    looptime starts the clock at 0 for the test, so timers armed in a fixture
    (on the real clock) would never fire."""
    state = sim_state()
    state.leak_zones = leak_zones
    cdu = SimulatedCdu(state, physics=False)
    await cdu.start("127.0.0.1", 0)
    drv = CduDriver(f"modbus+tcp://127.0.0.1:{cdu.port}", unit=1, timeout_s=0.5, retries=1)
    try:
        await drv.connect()
        yield cdu, drv
    finally:
        await drv.close()
        await cdu.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SimulatedCdu, CduDriver]]:
    async with running_cdu() as both:
        yield both


@pytest.fixture
def sim(pair: tuple[SimulatedCdu, CduDriver]) -> SimulatedCdu:
    return pair[0]


@pytest.fixture
def driver(pair: tuple[SimulatedCdu, CduDriver]) -> CduDriver:
    return pair[1]


def written(sim: SimulatedCdu) -> list[tuple[int, int]]:
    return [(r.address, r.values[0]) for r in sim.requests if r.function in (0x06, 0x10)]


async def test_reads_every_point_from_the_state(sim: SimulatedCdu, driver: CduDriver) -> None:
    safety = await driver.read_group("safety")
    s = sim.state
    expected = {
        "supply_temp_c": -5.25,
        "return_temp_c": 41.37,
        "facility_supply_temp_c": 18.5,
        "facility_return_temp_c": -0.01,
        "flow_lpm": 612.3,
        "supply_pressure_kpa": 251.4,
        "return_pressure_kpa": 100.2,
        "diff_pressure_kpa": 151.2,
        "pump1_speed_pct": round(s.pump1_speed_pct, 2),
        "pump2_speed_pct": 0.0,
        "reservoir_level_pct": 80.5,
        "facility_valve_position_pct": 42.0,
        "heat_load_w": 412_345,
        "pump1_running": True,
        "pump2_running": False,
        "pump1_fault": False,
        "pump2_fault": False,
        "leak": True,
        "reservoir_low": False,
        "watchdog_expired": False,
        "local_mode": False,
        "filter_dp_high": True,
        "alarm_code": 0,
        "leak_zones": 0b101,
        "firmware_version": "2.7",
    }
    assert {k: p.value for k, p in safety.items()} == pytest.approx(expected)
    assert all(p.quality is Quality.GOOD for p in safety.values())
    # One FC 04 request for the whole block.
    assert [(r.function, r.address, r.count) for r in sim.requests] == [(0x04, 0, 18)]

    settings = await driver.read_group("settings")
    assert {k: p.value for k, p in settings.items()} == {
        "remote_enable": True,
        "run": True,
        "control_mode": "remote_speed",
        "pump_speed_setpoint_pct": 60.0,
        "lead_pump": "auto",
        "facility_valve_setpoint_pct": 50.0,
        "watchdog_timeout_s": 10,
        "failsafe_speed_pct": 100.0,
        "rack_isolation_mask": 0,
        "local_dp_setpoint_kpa": 150.0,
    }
    assert (sim.requests[-1].function, sim.requests[-1].count) == (0x03, 10)


async def test_out_of_range_sensor_reads_bad(sim: SimulatedCdu, driver: CduDriver) -> None:
    sim.override_input(0, 0x7FFF)  # 327.67 °C: a shorted transmitter
    points = await driver.read_group("safety")
    assert points["supply_temp_c"].value == 327.67
    assert points["supply_temp_c"].quality is Quality.BAD


async def test_pump_speed_write_is_read_back(sim: SimulatedCdu, driver: CduDriver) -> None:
    await driver.set_pump_speed_pct(72.35)
    assert sim.state.pump_speed_setpoint_pct == pytest.approx(72.35)
    assert written(sim) == [(102, 7235)]
    # Verified: the write is followed by a read of the same register.
    assert (sim.requests[-1].function, sim.requests[-1].address) == (0x03, 102)
    points = await driver.read_group("settings")
    assert points["pump_speed_setpoint_pct"].value == 72.35


async def test_every_setter_round_trips(sim: SimulatedCdu, driver: CduDriver) -> None:
    await driver.set_facility_valve_pct(63.7)
    await driver.set_lead_pump("pump2")
    await driver.set_rack_isolation(0b1000_0001)
    await driver.set_watchdog_timeout_s(30)
    await driver.set_failsafe_speed_pct(90)
    await driver.set_control_mode("local_dp")
    await driver.set_run(False)
    s = sim.state
    assert (s.facility_valve_setpoint_pct, s.lead_pump, s.rack_isolation_mask) == (63.7, 2, 0x81)
    assert (s.watchdog_timeout_s, s.failsafe_speed_pct, s.control_mode) == (30, 90.0, 1)
    assert (s.run, s.remote_enable) == (False, True)
    await driver.set_run(True)
    await driver.set_remote_enable(False)
    assert (s.run, s.remote_enable) == (True, False)


async def test_15_pct_is_refused_before_the_wire(sim: SimulatedCdu, driver: CduDriver) -> None:
    with pytest.raises(ValueRejected, match="outside 20–100 %"):
        await driver.set_pump_speed_pct(15)
    for bad in (-1, 0x10000):
        with pytest.raises(ValueRejected, match="rack isolation mask"):
            await driver.set_rack_isolation(bad)
    with pytest.raises(ValueRejected, match="whole seconds"):
        await driver.set_watchdog_timeout_s(2.5)  # type: ignore[arg-type]
    assert list(sim.requests) == []
    assert sim.state.pump_speed_setpoint_pct == 60.0


async def test_device_refusal_03_through_a_raw_client(sim: SimulatedCdu) -> None:
    """Proves the simulator: a plain pymodbus client gets exception 03, nothing changes."""
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, reconnect_delay=0)
    try:
        assert await client.connect()
        response = await client.write_register(102, 1500, device_id=1)
        assert response.isError()
        assert response.exception_code == 3
        response = await client.read_holding_registers(110, count=1, device_id=1)
        assert response.exception_code == 2
    finally:
        client.close()
    assert sim.state.pump_speed_setpoint_pct == 60.0


async def test_local_mode_refusal_is_typed_and_keeps_the_link(
    sim: SimulatedCdu, driver: CduDriver
) -> None:
    sim.state.local_mode = True
    with pytest.raises(ModbusDeviceError) as caught:
        await driver.set_pump_speed_pct(80)
    assert caught.value.code == 4
    assert caught.value.exception is ModbusExceptionCode.DEVICE_FAILURE
    assert isinstance(caught.value, DeviceError)
    assert "exception 04" in str(caught.value)
    assert sim.state.pump_speed_setpoint_pct == 60.0
    # Not a transport failure: the same connection keeps working.
    points = await driver.read_group("safety")
    assert points["local_mode"].value is True


async def test_read_back_mismatch_is_a_device_error(
    sim: SimulatedCdu, driver: CduDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CDU that acknowledges the write but keeps its old value.
    monkeypatch.setattr(sim, "_apply_write", lambda address, value: None)
    with pytest.raises(WriteNotConfirmed, match="register 104: wrote 700, read back 500"):
        await driver.set_facility_valve_pct(70)


@pytest.mark.looptime
async def test_comm_watchdog_failsafe() -> None:
    async with running_cdu(leak_zones=0) as (sim, driver):
        await driver.set_watchdog_timeout_s(3)
        await driver.set_pump_speed_pct(50)
        await driver.set_failsafe_speed_pct(95)
        for _ in range(4):  # heartbeats every 2 s keep it satisfied
            await asyncio.sleep(2)
            await driver.heartbeat()
        points = await driver.read_group("safety")
        assert points["watchdog_expired"].value is False
        assert points["pump1_speed_pct"].value == pytest.approx(50.0)

        await asyncio.sleep(3.2)  # no heartbeat for longer than 105
        points = await driver.read_group("safety")
        assert points["watchdog_expired"].value is True
        assert points["alarm_code"].value == 20
        assert sim.target_speed_pct() == 95.0
        await asyncio.sleep(2)  # ramp 50 %/s
        points = await driver.read_group("safety")
        assert points["pump1_speed_pct"].value == pytest.approx(95.0)

        await driver.heartbeat()
        points = await driver.read_group("safety")
        assert points["watchdog_expired"].value is False
        await asyncio.sleep(2)
        points = await driver.read_group("safety")
        assert points["pump1_speed_pct"].value == pytest.approx(50.0)


@pytest.mark.looptime
async def test_watchdog_zero_is_off() -> None:
    async with running_cdu(leak_zones=0) as (sim, driver):
        await driver.set_watchdog_timeout_s(0)
        await asyncio.sleep(60)  # six times the default 10 s timeout
        points = await driver.read_group("safety")
        assert points["watchdog_expired"].value is False
        assert sim.state.alarm_code == 0


@pytest.mark.looptime
async def test_lead_lag_changeover_on_pump_fault() -> None:
    async with running_cdu(leak_zones=0) as (sim, driver):
        await driver.set_watchdog_timeout_s(0)
        sim.pump_fault(1)
        t0 = asyncio.get_running_loop().time()
        while not (await driver.read_group("safety"))["pump2_running"].value:
            await asyncio.sleep(0.05)
            assert asyncio.get_running_loop().time() - t0 < 2.0, "pump2 did not start within 2 s"
        points = await driver.read_group("safety")
        assert points["pump1_running"].value is False
        assert points["pump1_fault"].value is True
        assert points["alarm_code"].value == 1
        await asyncio.sleep(2)
        points = await driver.read_group("safety")
        assert points["pump2_speed_pct"].value == pytest.approx(60.0)
        assert points["pump1_speed_pct"].value == 0.0

        await driver.alarm_reset()
        points = await driver.read_group("safety")
        assert (points["pump1_fault"].value, points["alarm_code"].value) == (False, 0)
        settings = await driver.read_group("settings")
        assert (settings["run"].value, settings["remote_enable"].value) == (True, True)


@pytest.mark.looptime
async def test_seized_pump_with_no_standby_stops_flow_alarm() -> None:
    async with running_cdu() as (sim, driver):
        await driver.set_watchdog_timeout_s(0)
        sim.pump_seize(2)
        sim.pump_seize(1)
        await asyncio.sleep(1)
        points = await driver.read_group("safety")
        assert (points["pump1_running"].value, points["pump2_running"].value) == (False, False)
        assert points["alarm_code"].value == 3


async def test_stopped_simulator_is_a_transport_error_then_recovers(
    sim: SimulatedCdu, driver: CduDriver
) -> None:
    await driver.read_group("safety")
    port = sim.port
    await sim.close()
    with pytest.raises(TransportError):
        await driver.read_group("safety")
    with pytest.raises(TransportError):  # still down: connect refused
        await driver.read_group("safety")
    await sim.start("127.0.0.1", port)
    points = await driver.read_group("safety")
    assert points["supply_temp_c"].value == -5.25


@pytest.mark.looptime
async def test_silent_simulator_times_out() -> None:
    async with running_cdu() as (sim, driver):
        sim.silent = True
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TransportError):
            await driver.read_group("safety")
        # timeout_s 0.5 per attempt, 1 retry: bounded, not hanging.
        assert loop.time() - t0 <= 2 * 0.5 * 1.5 + 0.5
        sim.silent = False
        assert (await driver.read_group("safety"))["flow_lpm"].value == 612.3


@pytest.mark.looptime
async def test_garbage_answer_is_a_transport_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(260)
        writer.write(b"\x00\x01\x00\x00\x00\x03\x01\x04\xff" + b"\xa5" * 40)
        await writer.drain()
        await reader.read(260)  # until the driver gives up and closes
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    drv = CduDriver(f"modbus+tcp://127.0.0.1:{port}", timeout_s=0.5, retries=0)
    try:
        with pytest.raises(TransportError):
            await drv.read_group("safety")
    finally:
        await drv.close()
        server.close()
        await server.wait_closed()


@pytest.mark.looptime
async def test_close_during_a_hung_request_ends_it() -> None:
    async with running_cdu() as (sim, driver):
        sim.silent = True
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        read = asyncio.create_task(driver.read_group("safety"))
        await asyncio.sleep(0.1)
        await driver.close()
        with pytest.raises(TransportError):
            await read
        # Ended by the close, well before the 0.5 s answer timeout and its retry.
        assert loop.time() - t0 < 0.5
