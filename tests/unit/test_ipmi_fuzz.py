"""Fuzzing the IPMI Terminal Mode decoders: whatever the serial line carries,
only IpmiFrameError (or a subclass) comes out, and what decodes is in range.

Examples per test come from the hypothesis profile (tests/conftest.py):
bounded in the suite, HYPOTHESIS_PROFILE=long for a long search."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import Quality
from drivers.ipmi.bmc import sensor_point
from drivers.ipmi.codec import SEQ_MODULO, Request, Response
from drivers.ipmi.commands import (
    ChassisStatus,
    DcmiPowerLimit,
    DcmiPowerReading,
    DeviceId,
    SdrChunk,
    SdrRepositoryInfo,
    SensorReading,
    ThresholdsRaw,
)
from drivers.ipmi.framing import (
    MAX_MESSAGE_CHARS,
    FrameItem,
    FrameReader,
    IpmiFrameError,
    decode_body,
    encode_frame,
)
from drivers.ipmi.sdr import (
    AnalogFormat,
    FullRecordSpec,
    SdrError,
    SensorRecord,
    Unit,
    build_compact_discrete_record,
    build_full_record,
    parse_sensor_record,
)

pytestmark = pytest.mark.fuzz

MAX_PAYLOAD_BYTES = (MAX_MESSAGE_CHARS - 2) // 2  # two hex digits a byte, two brackets

# Bytes a noisy console line carries: mostly Terminal Mode's own alphabet.
line_bytes = st.binary(max_size=300) | st.lists(
    st.sampled_from(list(b"[]\r\n 0123456789abcdefABCDEFERRxg\x00\xff")), max_size=300
).map(bytes)


def _mutate(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xC0, 0xFF]))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
    return bytes(data)


# -- framing ---------------------------------------------------------------


def _check_items(items: list[FrameItem]) -> None:
    for item in items:
        assert (item.payload is None) != (item.error is None)
        if item.payload is not None:
            assert 1 <= len(item.payload) <= MAX_PAYLOAD_BYTES
        else:
            assert isinstance(item.error, IpmiFrameError)


@given(st.binary(max_size=200))
@example(b"ERR")
@example(b"ERR zz")
@example(b" ")
def test_a_message_body_decodes_or_raises_only_the_frame_error(body: bytes) -> None:
    try:
        payload = decode_body(body)
    except IpmiFrameError:
        return
    assert payload
    # What decodes is exactly what the hex said: it encodes back to the same bytes.
    assert decode_body(payload.hex().encode()) == payload


@given(st.lists(line_bytes, max_size=8))
def test_the_reader_never_raises_and_cuts_the_same_messages_however_split(
    chunks: list[bytes],
) -> None:
    whole = FrameReader()
    at_once = whole.feed(b"".join(chunks))
    split = FrameReader()
    pieces = [item for chunk in chunks for item in split.feed(chunk)]
    _check_items(at_once)
    assert [(i.payload, str(i.error)) for i in pieces] == [
        (i.payload, str(i.error)) for i in at_once
    ]
    assert whole.noise_bytes == split.noise_bytes <= sum(map(len, chunks))


@given(
    st.binary(min_size=1, max_size=MAX_PAYLOAD_BYTES),
    line_bytes,
    st.sampled_from([b"\r", b"\n", b"\r\n"]),
)
def test_a_good_message_after_noise_is_found_once_the_line_resyncs(
    payload: bytes, noise: bytes, end: bytes
) -> None:
    reader = FrameReader()
    reader.feed(noise + b"\r")  # the noise ends with its own line end
    reader.reset()  # what the client does after a timeout or a bad frame
    assert reader.feed(encode_frame(payload, end)) == [FrameItem(payload)]


# -- codec and commands ----------------------------------------------------


@given(st.binary(max_size=40))
def test_requests_and_responses_decode_in_range_or_raise_the_frame_error(raw: bytes) -> None:
    with contextlib.suppress(IpmiFrameError):
        rsp = Response.from_bytes(raw)
        assert rsp.netfn % 2 == 0 and 0 <= rsp.netfn <= 0x3E
        assert 0 <= rsp.seq < SEQ_MODULO and 0 <= rsp.lun <= 3 and 0 <= rsp.bridge <= 3
        assert 0 <= rsp.cmd <= 0xFF and 0 <= rsp.completion_code <= 0xFF
        assert rsp.to_bytes() == raw
    with contextlib.suppress(IpmiFrameError):
        req = Request.from_bytes(raw)
        assert req.netfn % 2 == 0 and 0 <= req.seq < SEQ_MODULO and 0 <= req.lun <= 3
        assert req.to_bytes() == raw


Decoder = Callable[[bytes], object]

DECODERS: dict[str, Decoder] = {
    "device_id": DeviceId.from_bytes,
    "sdr_repository_info": SdrRepositoryInfo.from_bytes,
    "sdr_chunk": lambda data: SdrChunk.from_bytes(data, max(len(data) - 2, 0)),
    "sensor_reading": SensorReading.from_bytes,
    "thresholds": ThresholdsRaw.from_bytes,
    "chassis_status": ChassisStatus.from_bytes,
    "dcmi_power_reading": DcmiPowerReading.from_bytes,
    "dcmi_get_power_limit": DcmiPowerLimit.from_get_bytes,
    "dcmi_set_power_limit": DcmiPowerLimit.from_set_bytes,
}


def _in_range(decoded: object) -> None:
    """Every decoded field fits what its wire field can hold."""
    if isinstance(decoded, DeviceId):
        assert 0 <= decoded.device_revision <= 0x0F and 0 <= decoded.firmware_major <= 0x7F
        assert 0 <= decoded.firmware_minor <= 99
        assert 0 <= decoded.manufacturer_id < 1 << 24 and 0 <= decoded.product_id < 1 << 16
    elif isinstance(decoded, SensorReading):
        assert 0 <= decoded.raw <= 0xFF and 0 <= decoded.states <= 0x7FFF
    elif isinstance(decoded, ThresholdsRaw):
        assert 0 <= decoded.readable_mask <= 0x3F and all(0 <= r <= 0xFF for r in decoded.raw)
    elif isinstance(decoded, ChassisStatus):
        assert 0 <= decoded.restore_policy <= 3
    elif isinstance(decoded, DcmiPowerReading):
        for watts in (decoded.current_w, decoded.minimum_w, decoded.maximum_w, decoded.average_w):
            assert 0 <= watts <= 0xFFFF
    elif isinstance(decoded, DcmiPowerLimit):
        assert 0 <= decoded.limit_w <= 0xFFFF and 0 <= decoded.sampling_s <= 0xFFFF
    elif isinstance(decoded, SdrRepositoryInfo):
        assert 0 <= decoded.record_count <= 0xFFFF
    elif isinstance(decoded, SdrChunk):
        assert 0 <= decoded.next_record_id <= 0xFFFF


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(data=st.binary(max_size=24))
def test_command_data_decodes_in_range_or_raises_the_frame_error(name: str, data: bytes) -> None:
    try:
        decoded = DECODERS[name](data)
    except IpmiFrameError:
        return
    _in_range(decoded)


@given(st.builds(SensorReading, st.integers(0, 255), st.booleans(), st.booleans(),
                 st.booleans(), st.integers(0, 0x7FFF)))  # fmt: skip
def test_a_sensor_reading_survives_its_round_trip(reading: SensorReading) -> None:
    assert SensorReading.from_bytes(reading.to_bytes()) == reading


# -- SDR records -----------------------------------------------------------


def _seed_records() -> list[bytes]:
    gpu = FullRecordSpec(4, 4, "GPU1 Temp", 0x01, Unit.DEGREES_C, 5, 0, 0, -1,
                         sensor_min_raw=0, sensor_max_raw=240,
                         thresholds_raw=(0, 0, 0, 170, 174, 184), readable_mask=0x38)  # fmt: skip
    coolant = FullRecordSpec(12, 12, "Coolant In Temp", 0x01, Unit.DEGREES_C, 5, -20, 1, -1)
    inlet = FullRecordSpec(1, 1, "Inlet Temp", 0x01, Unit.DEGREES_C, 1,
                           analog_format=AnalogFormat.TWOS_COMPLEMENT,
                           sensor_min_raw=0xD8, sensor_max_raw=100)  # fmt: skip
    psu = FullRecordSpec(17, 17, "PSU Power", 0x08, Unit.WATTS, 10, k2=1, sensor_max_raw=200)
    leak = build_compact_discrete_record(18, 18, "Leak", 0x0B)
    return [*(build_full_record(spec) for spec in (gpu, coolant, inlet, psu)), leak]


SEED_RECORDS = _seed_records()


@st.composite
def sdr_records(draw: st.DrawFn) -> bytes:
    record = _mutate(draw, draw(st.sampled_from(SEED_RECORDS)))
    if len(record) >= 5 and draw(st.booleans()):
        # Keep the length byte consistent so the body's fields get exercised.
        record = record[:4] + bytes(((len(record) - 5) & 0xFF,)) + record[5:]
    return record


def _check_record(record: SensorRecord) -> None:
    assert record.valid_min <= record.valid_max
    assert math.isfinite(record.valid_min) and math.isfinite(record.valid_max)
    assert -512 <= record.m <= 511 and -512 <= record.b <= 511
    assert -8 <= record.k1 <= 7 and -8 <= record.k2 <= 7 and 0 <= record.lun <= 3
    with contextlib.suppress(SdrError):  # an ID string with no letters or digits
        name = record.point_name
        assert name and name == name.strip("_") and all(c.isalnum() or c == "_" for c in name)
    for raw in (0, 1, 127, 128, 255):
        assert math.isfinite(record.convert(raw))


@given(st.one_of(sdr_records(), st.binary(max_size=80)))
def test_sdr_records_decode_in_range_or_raise_the_sdr_error(data: bytes) -> None:
    try:
        record = parse_sensor_record(data)
    except SdrError:
        return
    if record is not None:
        _check_record(record)


@given(sdr_records(), st.binary(min_size=2, max_size=4))
def test_a_reading_through_any_record_is_good_only_inside_its_range(
    data: bytes, reading_data: bytes
) -> None:
    try:
        record = parse_sensor_record(data)
        reading = SensorReading.from_bytes(reading_data)
    except IpmiFrameError:
        return
    if record is None:
        return
    point = sensor_point(record, reading)
    if point.quality is Quality.GOOD and isinstance(point.value, float):
        assert record.valid_min <= point.value <= record.valid_max
        assert not reading.unavailable and reading.scanning_enabled


def test_the_seed_records_are_real_records() -> None:
    decoded = [parse_sensor_record(seed) for seed in SEED_RECORDS]
    assert [r.point_name for r in decoded if r is not None] == [
        "gpu1_temp_c", "coolant_in_temp_c", "inlet_temp_c", "psu_power_w", "leak",
    ]  # fmt: skip
