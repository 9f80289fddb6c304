"""CduDriver over Modbus RTU (19200 8E1 framing, CRC) to the simulated CDU on a pty."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.errors import ConfigurationError, TransportError
from drivers.modbus.cdu import CduDriver, ModbusDeviceError
from sim_devices.cdu import CduState, SimulatedCdu, crc16_modbus

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedCdu]:
    cdu = SimulatedCdu(CduState(supply_temp_c=-3.5, heat_load_w=70_001), physics=False)
    await cdu.start_rtu()
    try:
        yield cdu
    finally:
        await cdu.close()


def test_crc16_modbus_known_frame() -> None:
    # Read holding registers 0..1 of unit 1: the classic example frame 01 03 00 00 00 01 84 0A.
    assert crc16_modbus(bytes.fromhex("010300000001")).to_bytes(2, "little") == b"\x84\x0a"


# Linux ptys refuse pyserial's even-parity termios settings (EINVAL) though they take
# N and O; parity means nothing on a pty, so these tests run the framing at 8N1.


async def test_pty_refusing_line_settings_is_a_configuration_error(sim: SimulatedCdu) -> None:
    driver = CduDriver(f"modbus+rtu://{sim.rtu_path}?parity=E", timeout_s=0.5)
    with pytest.raises(ConfigurationError, match="serial port refused its settings"):
        await driver.connect()
    await driver.close()


async def test_missing_serial_device_is_a_transport_error(tmp_path: Path) -> None:
    driver = CduDriver(f"modbus+rtu://{tmp_path}/ttyNONE", timeout_s=0.5)
    with pytest.raises(TransportError):
        await driver.connect()
    await driver.close()


async def test_read_and_write_over_rtu(sim: SimulatedCdu) -> None:
    driver = CduDriver(f"modbus+rtu://{sim.rtu_path}?parity=N", timeout_s=0.5, retries=0)
    try:
        points = await driver.read_group("safety")
        assert points["supply_temp_c"].value == -3.5
        assert points["heat_load_w"].value == 70_001
        await driver.set_control_mode("remote_speed")
        await driver.set_pump_speed_pct(44.44)
        assert sim.state.pump_speed_setpoint_pct == pytest.approx(44.44)
        sim.state.local_mode = True
        with pytest.raises(ModbusDeviceError) as caught:
            await driver.set_pump_speed_pct(50)
        assert caught.value.code == 4
    finally:
        await driver.close()


async def test_wrong_unit_on_the_bus_is_silence(sim: SimulatedCdu) -> None:
    driver = CduDriver(f"modbus+rtu://{sim.rtu_path}?parity=N", unit=2, timeout_s=0.2, retries=0)
    try:
        with pytest.raises(TransportError):
            await driver.read_group("safety")
    finally:
        await driver.close()


async def test_corrupt_crc_gets_no_answer(sim: SimulatedCdu) -> None:
    fd = os.open(sim.rtu_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        good = bytes.fromhex("010400000012")
        frame = good + crc16_modbus(good).to_bytes(2, "little")
        os.write(fd, frame[:-1] + bytes((frame[-1] ^ 0xFF,)))
        await asyncio.sleep(0.2)
        with pytest.raises(BlockingIOError):
            os.read(fd, 256)
        os.write(fd, frame)
        reply = b""
        async with asyncio.timeout(2):
            while len(reply) < 3 + 36 + 2:
                await asyncio.sleep(0.01)
                with contextlib.suppress(BlockingIOError):
                    reply += os.read(fd, 256)
        assert reply[:3] == bytes((1, 4, 36))
        assert crc16_modbus(reply[:-2]) == int.from_bytes(reply[-2:], "little")
    finally:
        os.close(fd)
