"""The simulated BMC's command handling and faults, called directly (no line)."""

from __future__ import annotations

import asyncio

import pytest

from drivers.ipmi.codec import NetFn, Request, Response
from drivers.ipmi.commands import DcmiPowerLimit, SensorReading
from drivers.ipmi.framing import FrameReader, encode_frame
from sim_devices.bmc import BmcState, SimBmc


def ask(bmc: SimBmc, netfn: int, cmd: int, data: bytes = b"") -> Response:
    rsp = bmc.handle(Request(netfn, cmd, data, seq=9))
    assert rsp is not None
    assert rsp.seq == 9 and rsp.cmd == cmd and rsp.netfn == netfn
    return rsp


async def test_unknown_and_probe_commands_answer_c1() -> None:
    bmc = SimBmc("t")
    assert ask(bmc, 0x2C, 0x00, b"\x00").completion_code == 0xC1  # PICMG
    assert ask(bmc, 0x2C, 0x00, b"\x03").completion_code == 0xC1  # VSO
    assert ask(bmc, 0x06, 0x42).completion_code == 0xC1
    assert ask(bmc, 0x3E, 0x01).completion_code == 0xC1


async def test_get_sdr_reservation_and_limits() -> None:
    bmc = SimBmc("t")
    reservation = int.from_bytes(ask(bmc, NetFn.STORAGE, 0x22).data, "little")
    good = reservation.to_bytes(2, "little")
    assert ask(bmc, NetFn.STORAGE, 0x23, good + b"\x01\x00\x05\x10").completion_code == 0
    stale = (reservation - 1).to_bytes(2, "little")
    assert ask(bmc, NetFn.STORAGE, 0x23, stale + b"\x01\x00\x05\x10").completion_code == 0xC5
    assert ask(bmc, NetFn.STORAGE, 0x23, good + b"\x01\x00\x05\x30").completion_code == 0xCA
    assert ask(bmc, NetFn.STORAGE, 0x23, good + b"\x77\x00\x00\x05").completion_code == 0xCB
    assert ask(bmc, NetFn.STORAGE, 0x23, good).completion_code == 0xC6  # truncated request


async def test_sensor_reading_threshold_bits_and_faults() -> None:
    state = BmcState(placeholder_physics=False)
    bmc = SimBmc("t", state)
    state.gpu_temps_c[0] = 88.0  # >= UNC 85 and UC 87, < UNR 92
    reading = SensorReading.from_bytes(ask(bmc, NetFn.SENSOR_EVENT, 0x2D, b"\x04").data)
    assert reading.raw == 176 and reading.states == 0x18
    state.unavailable.add("GPU1 Temp")
    assert SensorReading.from_bytes(ask(bmc, NetFn.SENSOR_EVENT, 0x2D, b"\x04").data).unavailable
    state.stuck_raw["GPU1 Temp"] = bmc.out_of_range_raw("GPU1 Temp")
    assert ask(bmc, NetFn.SENSOR_EVENT, 0x2D, b"\x04").data[0] == 241
    assert ask(bmc, NetFn.SENSOR_EVENT, 0x2D, b"\x63").completion_code == 0xCB


@pytest.mark.looptime
async def test_soft_shutdown_and_power_cap_timing() -> None:
    state = BmcState(demand_power_w=10000.0)
    bmc = SimBmc("t", state)
    assert ask(bmc, NetFn.CHASSIS, 0x02, b"\x05").completion_code == 0
    await asyncio.sleep(29.9)
    state.advance(asyncio.get_running_loop().time())
    assert state.chassis_on
    await asyncio.sleep(0.2)
    state.advance(asyncio.get_running_loop().time())
    assert not state.chassis_on and state.psu_power_w == 0
    ask(bmc, NetFn.CHASSIS, 0x02, b"\x01")
    limit = DcmiPowerLimit(0, 7000, 1000, 1).to_set_bytes()
    assert ask(bmc, NetFn.GROUP_EXTENSION, 0x04, limit).completion_code == 0
    ask(bmc, NetFn.GROUP_EXTENSION, 0x05, b"\xdc\x01\x00\x00")
    assert state.psu_power_w == 10000.0  # not yet
    await asyncio.sleep(2.0)
    state.advance(asyncio.get_running_loop().time())
    assert state.psu_power_w == 7000.0  # capped within 2 s
    assert ask(bmc, NetFn.CHASSIS, 0x02, b"\x04").completion_code == 0xCC


@pytest.mark.looptime
async def test_a_new_power_limit_takes_over_from_the_old_without_an_uncapped_gap() -> None:
    state = BmcState(demand_power_w=10000.0)
    bmc = SimBmc("t", state)
    for watts in (7000, 5000):
        limit = DcmiPowerLimit(0, watts, 1000, 1).to_set_bytes()
        assert ask(bmc, NetFn.GROUP_EXTENSION, 0x04, limit).completion_code == 0
        ask(bmc, NetFn.GROUP_EXTENSION, 0x05, b"\xdc\x01\x00\x00")
        await asyncio.sleep(0.5)
        state.advance(asyncio.get_running_loop().time())
        # Half a second after the change: the old limit (none, then 7000) still holds.
        assert state.psu_power_w == (10000.0 if watts == 7000 else 7000.0)
        await asyncio.sleep(1.0)
        state.advance(asyncio.get_running_loop().time())
        assert state.psu_power_w == float(watts)


async def test_garbage_never_reaches_a_reader_as_a_valid_frame() -> None:
    state = BmcState(garbage_rate=1.0)
    bmc = SimBmc("t", state, seed=3)
    clean = encode_frame(
        Response(NetFn.SENSOR_EVENT, 0x2D, 0, b"\x40\xc0\x00", 5).to_bytes(), b"\r\n"
    )
    errors = 0
    for _ in range(500):
        reader = FrameReader()
        for item in reader.feed(bmc._maybe_corrupt(clean)):
            # Every corrupted reply must fail framing: cut short or carrying a non-hex
            # character, it can never come out as the reply (or an altered copy of it).
            assert item.payload is None or not item.payload.startswith(b"\x14\x14\x2d")
            errors += item.error is not None
    assert errors >= 250  # half the cuts keep no line end and simply never complete
