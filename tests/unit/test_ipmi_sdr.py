"""SDR decoding, linear conversion (all analog formats), range checks and point names."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Quality
from drivers.ipmi.bmc import sensor_point
from drivers.ipmi.commands import SensorReading
from drivers.ipmi.sdr import (
    AnalogFormat,
    FullRecordSpec,
    SdrError,
    SensorRecord,
    Unit,
    build_compact_discrete_record,
    build_full_record,
    parse_sensor_record,
    point_base_name,
)


def full(spec: FullRecordSpec) -> SensorRecord:
    record = parse_sensor_record(build_full_record(spec))
    assert record is not None
    return record


def reading(raw: int, *, flags: int = 0xC0, states: int = 0) -> SensorReading:
    return SensorReading.from_bytes(bytes((raw, flags, states)))


def test_full_record_layout_matches_the_spec() -> None:
    raw = build_full_record(
        FullRecordSpec(
            7,
            0x30,
            "GPU3 Temp",
            0x01,
            Unit.DEGREES_C,
            m=5,
            k2=-1,
            sensor_min_raw=0,
            sensor_max_raw=240,
        )
    )
    assert raw[:5] == bytes((7, 0, 0x51, 0x01, len(raw) - 5))
    assert raw[7] == 0x30 and raw[12] == 0x01 and raw[13] == 0x01
    assert raw[21] == 1  # degrees C
    assert raw[24] == 5 and raw[29] == 0xF0  # M, then K2=-1 in the high nibble
    assert raw[34] == 240 and raw[35] == 0
    assert raw[47] == 0xC0 | 9 and raw[48:] == b"GPU3 Temp"


def test_unsigned_conversion() -> None:
    gpu = full(FullRecordSpec(1, 1, "GPU1 Temp", 1, Unit.DEGREES_C, m=5, k2=-1))
    assert gpu.convert(170) == 85.0
    assert gpu.convert(171) == 85.5
    fan = full(FullRecordSpec(2, 2, "Fan1", 4, Unit.RPM, m=100))
    assert fan.convert(85) == 8500


def test_twos_complement() -> None:
    inlet = full(
        FullRecordSpec(
            1, 1, "Inlet Temp", 1, Unit.DEGREES_C, m=1, analog_format=AnalogFormat.TWOS_COMPLEMENT
        )
    )
    assert inlet.convert(0xD8) == -40
    assert inlet.convert(0x7F) == 127
    assert inlet.convert(0x80) == -128
    assert inlet.encode(-40) == 0xD8


def test_ones_complement() -> None:
    rec = full(
        FullRecordSpec(
            1, 1, "X Temp", 1, Unit.DEGREES_C, m=1, analog_format=AnalogFormat.ONES_COMPLEMENT
        )
    )
    assert rec.convert(0xFE) == -1
    assert rec.convert(0x80) == -127
    assert rec.convert(0xFF) == 0  # negative zero
    assert rec.encode(-1) == 0xFE


def test_negative_m_b_and_exponents() -> None:
    # y = (M·x + B·10^K1)·10^K2 with M = -3, B = -300 (10-bit signed), K1 = 1, K2 = -2
    rec = full(FullRecordSpec(1, 1, "Odd V", 2, Unit.VOLTS, m=-3, b=-300, k1=1, k2=-2))
    assert (rec.m, rec.b, rec.k1, rec.k2) == (-3, -300, 1, -2)
    assert rec.convert(10) == pytest.approx((-3 * 10 + -300 * 10) / 100)
    coolant = full(
        FullRecordSpec(1, 1, "Coolant In Temp", 1, Unit.DEGREES_C, m=5, b=-20, k1=1, k2=-1)
    )
    assert coolant.convert(0) == -20.0
    assert coolant.convert(100) == 30.0


def test_ten_bit_extremes() -> None:
    rec = full(FullRecordSpec(1, 1, "P", 2, Unit.WATTS, m=511, b=-512))
    assert (rec.m, rec.b) == (511, -512)
    with pytest.raises(SdrError, match="10 signed bits"):
        build_full_record(FullRecordSpec(1, 1, "P", 2, Unit.WATTS, m=512))


@given(
    st.integers(-512, 511).filter(lambda m: m != 0),
    st.integers(-512, 511),
    st.integers(-8, 7),
    st.integers(-8, 7),
    st.sampled_from(list(AnalogFormat)[:3]),
    st.integers(0, 255),
)
def test_build_parse_round_trip(
    m: int, b: int, k1: int, k2: int, fmt: AnalogFormat, raw: int
) -> None:
    rec = full(
        FullRecordSpec(
            9, 42, "Any Sensor", 1, Unit.DEGREES_C, m=m, b=b, k1=k1, k2=k2, analog_format=fmt
        )
    )
    assert (rec.m, rec.b, rec.k1, rec.k2, rec.analog_format) == (m, b, k1, k2, fmt)
    x = rec.signed_raw(raw)
    assert rec.convert(raw) == pytest.approx(
        (m * x + b * 10.0**k1) * 10.0**k2, rel=1e-9, abs=10.0 ** (k2 - 3)
    )


@pytest.mark.parametrize(
    ("id_string", "unit", "name"),
    [
        ("Inlet Temp", Unit.DEGREES_C, "inlet_temp_c"),
        ("GPU3 Temp", Unit.DEGREES_C, "gpu3_temp_c"),
        ("Fan2", Unit.RPM, "fan2_rpm"),
        ("PSU Power", Unit.WATTS, "psu_power_w"),
        ("P12V-Rail (A)", Unit.VOLTS, "p12v_rail_a_v"),
        ("CPU0 Cur", Unit.AMPS, "cpu0_cur_a"),
    ],
)
def test_point_names(id_string: str, unit: Unit, name: str) -> None:
    assert full(FullRecordSpec(1, 1, id_string, 1, unit, m=1)).point_name == name


def test_discrete_and_percentage_names() -> None:
    leak = parse_sensor_record(build_compact_discrete_record(18, 18, "Leak", 0xC0))
    assert leak is not None and leak.point_name == "leak" and not leak.is_threshold
    with pytest.raises(SdrError, match="no letters"):
        point_base_name("--")


def test_range_check_makes_bad_points() -> None:
    gpu = full(
        FullRecordSpec(
            1, 1, "GPU1 Temp", 1, Unit.DEGREES_C, m=5, k2=-1, sensor_min_raw=0, sensor_max_raw=240
        )
    )
    assert sensor_point(gpu, reading(170)).quality is Quality.GOOD
    assert sensor_point(gpu, reading(240)).value == 120.0
    out = sensor_point(gpu, reading(241))
    assert out.quality is Quality.BAD and out.value == 120.5
    inlet = full(
        FullRecordSpec(
            1,
            1,
            "Inlet Temp",
            1,
            Unit.DEGREES_C,
            m=1,
            analog_format=AnalogFormat.TWOS_COMPLEMENT,
            sensor_min_raw=0xD8,
            sensor_max_raw=100,
        )
    )
    assert sensor_point(inlet, reading(0xD8)).quality is Quality.GOOD
    assert sensor_point(inlet, reading(0xD7)).quality is Quality.BAD  # -41 °C
    assert sensor_point(inlet, reading(101)).quality is Quality.BAD


def test_unavailable_and_scanning_disabled_are_bad() -> None:
    gpu = full(FullRecordSpec(1, 1, "GPU1 Temp", 1, Unit.DEGREES_C, m=5, k2=-1))
    assert sensor_point(gpu, reading(100, flags=0xE0)).quality is Quality.BAD
    assert sensor_point(gpu, reading(100, flags=0x80)).quality is Quality.BAD
    assert sensor_point(gpu, reading(100, flags=0xC0)).quality is Quality.GOOD


def test_leak_states() -> None:
    leak = parse_sensor_record(build_compact_discrete_record(18, 18, "Leak", 0xC0))
    assert leak is not None
    assert sensor_point(leak, reading(0, states=0x01)).value is False
    assert sensor_point(leak, reading(0, states=0x02)).value is True
    assert sensor_point(leak, reading(0, states=0x03)).quality is Quality.BAD
    assert sensor_point(leak, reading(0, states=0x00)).quality is Quality.BAD


def test_malformed_records_raise_sdr_error() -> None:
    raw = build_full_record(FullRecordSpec(1, 1, "GPU1 Temp", 1, Unit.DEGREES_C, m=1))
    with pytest.raises(SdrError, match="length byte"):
        parse_sensor_record(raw[:-1])
    with pytest.raises(SdrError, match="header"):
        parse_sensor_record(raw[:3])
    bad_type = bytearray(raw)
    bad_type[47] = 0x09  # unicode ID string type
    with pytest.raises(SdrError, match="ID string type"):
        parse_sensor_record(bytes(bad_type))
    assert parse_sensor_record(bytes((1, 0, 0x51, 0x12, 0))) is None  # MC locator: no sensor


@given(st.binary(max_size=80))
def test_arbitrary_records_raise_only_sdr_errors(raw: bytes) -> None:
    with contextlib.suppress(SdrError):
        parse_sensor_record(raw)


def test_sensors_that_share_an_id_string_get_their_numbers_in_the_name() -> None:
    from drivers.ipmi.bmc import _unique_point_names

    records = [
        full(FullRecordSpec(1, 12, "GPU Temp", 0x01, Unit.DEGREES_C, m=1)),
        full(FullRecordSpec(2, 13, "GPU Temp", 0x01, Unit.DEGREES_C, m=1)),
        full(FullRecordSpec(3, 14, "Inlet Temp", 0x01, Unit.DEGREES_C, m=1)),
    ]
    assert _unique_point_names(records) == ["gpu_temp_s12_c", "gpu_temp_s13_c", "inlet_temp_c"]
