"""IPMI message codec and command data: exact bytes, strict lengths, only IpmiFrameError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ipmi.codec import CompletionCode, NetFn, Request, Response
from drivers.ipmi.commands import (
    ChassisAction,
    ChassisStatus,
    DcmiPowerLimit,
    DcmiPowerReading,
    DeviceId,
    FanMode,
    SdrChunk,
    SdrRepositoryInfo,
    SensorReading,
    ThresholdsRaw,
    get_sdr_request,
)
from drivers.ipmi.framing import IpmiFrameError


def test_request_bytes_as_ipmitool_writes_them() -> None:
    # `[180c01]`: App (06) Get Device ID, seq 3.
    assert Request(NetFn.APP, 0x01, seq=3).to_bytes() == bytes.fromhex("180c01")
    req = Request.from_bytes(bytes.fromhex("b0040000"))
    assert (req.netfn, req.seq, req.cmd, req.data) == (0x2C, 1, 0x00, b"\x00")


def test_response_bytes() -> None:
    rsp = Response(NetFn.SENSOR_EVENT, 0x2D, 0, b"\x40\xc0\x00", seq=5)
    assert rsp.to_bytes() == bytes.fromhex("1414 2d 00 40c000".replace(" ", ""))
    back = Response.from_bytes(rsp.to_bytes())
    assert back == rsp
    assert back.answers(Request(NetFn.SENSOR_EVENT, 0x2D, b"\x01", seq=5))
    assert not back.answers(Request(NetFn.SENSOR_EVENT, 0x2D, b"\x01", seq=6))
    assert not back.answers(Request(NetFn.SENSOR_EVENT, 0x27, b"\x01", seq=5))
    assert not back.answers(Request(NetFn.APP, 0x2D, b"\x01", seq=5))


def test_response_to_request_keeps_seq_lun_bridge() -> None:
    req = Request(NetFn.APP, 0x01, seq=63, lun=2, bridge=1)
    assert Response.to(req, 0xC1).to_bytes() == bytes((0x07 << 2 | 2, 63 << 2 | 1, 0x01, 0xC1))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\x18\x04", "shorter than 3"),
        (bytes.fromhex("1c0401"), "odd"),
    ],
)
def test_bad_requests(raw: bytes, problem: str) -> None:
    with pytest.raises(IpmiFrameError, match=problem):
        Request.from_bytes(raw)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (bytes.fromhex("1c0401"), "shorter than 4"),
        (bytes.fromhex("18040100"), "even"),
    ],
)
def test_bad_responses(raw: bytes, problem: str) -> None:
    with pytest.raises(IpmiFrameError, match=problem):
        Response.from_bytes(raw)


def test_out_of_range_fields_refused() -> None:
    with pytest.raises(IpmiFrameError, match="seq 64"):
        Request(NetFn.APP, 1, seq=64).to_bytes()
    with pytest.raises(IpmiFrameError, match="odd"):
        Request(0x07, 1).to_bytes()


def test_completion_code_names_unknown_values_safely() -> None:
    assert CompletionCode.describe(0xC5) == "reservation_cancelled"
    assert CompletionCode.describe(0x42) == "code_0x42"


@given(
    st.integers(0, 31).map(lambda n: n * 2),
    st.integers(0, 255),
    st.binary(max_size=40),
    st.integers(0, 63),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_request_round_trip(
    netfn: int, cmd: int, data: bytes, seq: int, lun: int, bridge: int
) -> None:
    req = Request(netfn, cmd, data, seq, lun, bridge)
    assert Request.from_bytes(req.to_bytes()) == req


@given(
    st.integers(0, 31).map(lambda n: n * 2),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=40),
    st.integers(0, 63),
)
def test_response_round_trip(netfn: int, cmd: int, code: int, data: bytes, seq: int) -> None:
    rsp = Response(netfn, cmd, code, data, seq)
    assert Response.from_bytes(rsp.to_bytes()) == rsp


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_codec_errors(raw: bytes) -> None:
    for parse in (
        Request.from_bytes,
        Response.from_bytes,
        DeviceId.from_bytes,
        SdrRepositoryInfo.from_bytes,
        SensorReading.from_bytes,
        ThresholdsRaw.from_bytes,
        ChassisStatus.from_bytes,
        DcmiPowerReading.from_bytes,
        DcmiPowerLimit.from_get_bytes,
        DcmiPowerLimit.from_set_bytes,
    ):
        with contextlib.suppress(IpmiFrameError):
            parse(raw)
    with contextlib.suppress(IpmiFrameError):
        SdrChunk.from_bytes(raw, 16)


def test_device_id_round_trip_and_bcd() -> None:
    dev = DeviceId(0x20, 1, 1, 23, 0x02, 0x83, 10876, 0x1B0E)
    assert DeviceId.from_bytes(dev.to_bytes()) == dev
    assert dev.firmware == "1.23"
    bad = bytearray(dev.to_bytes())
    bad[3] = 0x1A
    with pytest.raises(IpmiFrameError, match="BCD"):
        DeviceId.from_bytes(bytes(bad))
    with pytest.raises(IpmiFrameError, match=r"10 data bytes, expected 11\.\.15"):
        DeviceId.from_bytes(dev.to_bytes()[:10])


def test_sensor_reading_flags() -> None:
    reading = SensorReading.from_bytes(bytes((0x55, 0xC0, 0x08)))
    assert (
        reading.raw,
        reading.events_enabled,
        reading.scanning_enabled,
        reading.unavailable,
        reading.states,
    ) == (0x55, True, True, False, 0x08)
    reading = SensorReading.from_bytes(bytes((0x00, 0x20)))
    assert reading.unavailable and not reading.scanning_enabled
    with pytest.raises(IpmiFrameError, match="Get Sensor Reading"):
        SensorReading.from_bytes(b"\x01\x02\x03\x04\x05")


def test_chassis_status_bits() -> None:
    status = ChassisStatus.from_bytes(bytes((0x41, 0x00, 0x00)))
    assert status.power_on and status.restore_policy == 2
    assert ChassisStatus.from_bytes(status.to_bytes()) == status
    assert not ChassisStatus.from_bytes(b"\x40\x00\x00").power_on


def test_dcmi_layouts() -> None:
    reading = DcmiPowerReading(6000, 5000, 7000, 6100, 1234, 1000, True)
    raw = reading.to_bytes()
    assert raw[:3] == bytes((0xDC, 0x70, 0x17)) and raw[-1] == 0x40 and len(raw) == 18
    assert DcmiPowerReading.from_bytes(raw) == reading
    limit = DcmiPowerLimit(1, 8000, 2000, 1)
    assert len(limit.to_get_bytes()) == 14 and len(limit.to_set_bytes()) == 15
    assert DcmiPowerLimit.from_get_bytes(limit.to_get_bytes()) == limit
    assert DcmiPowerLimit.from_set_bytes(limit.to_set_bytes()) == limit
    wrong_group = b"\xdd" + raw[1:]
    with pytest.raises(IpmiFrameError, match="not DCMI"):
        DcmiPowerReading.from_bytes(wrong_group)


def test_sdr_request_and_info() -> None:
    assert get_sdr_request(0x1234, 0x0005, 5, 16) == bytes.fromhex("3412050005 10".replace(" ", ""))
    info = SdrRepositoryInfo(0x51, 18, 0x8000, 100, 200, 2)
    assert SdrRepositoryInfo.from_bytes(info.to_bytes()) == info
    chunk = SdrChunk.from_bytes(b"\xff\xff" + bytes(16), 16)
    assert chunk.next_record_id == 0xFFFF
    with pytest.raises(IpmiFrameError, match="Get SDR"):
        SdrChunk.from_bytes(b"\xff\xff" + bytes(15), 16)


def test_action_and_mode_parsing() -> None:
    assert ChassisAction.parse("soft") is ChassisAction.SOFT_SHUTDOWN
    assert ChassisAction.parse("hard-reset") is ChassisAction.HARD_RESET
    assert ChassisAction.parse(2) is ChassisAction.CYCLE
    with pytest.raises(ValueError, match="unknown chassis action"):
        ChassisAction.parse(4)
    with pytest.raises(ValueError, match="unknown chassis action"):
        ChassisAction.parse("explode")
    assert FanMode.parse("full") is FanMode.FULL
    with pytest.raises(ValueError, match="unknown fan mode"):
        FanMode.parse(7)
