"""Sensor Data Records: decoding Full (01) and Compact (02) records, reading conversion, names.

IPMI v2.0 §43.1/§43.2 byte layouts; §36.3 linear conversion
y = (M·x + B·10^K1)·10^K2 with 10-bit signed M and B and 4-bit signed K1, K2.
Pure; malformed records raise SdrError.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from drivers.ipmi.framing import IpmiFrameError

SDR_HEADER_BYTES = 5
FULL_ID_OFFSET = 47
COMPACT_ID_OFFSET = 31


class SdrError(IpmiFrameError):
    """A Sensor Data Record that cannot be decoded."""


class RecordType(enum.IntEnum):
    FULL_SENSOR = 0x01
    COMPACT_SENSOR = 0x02
    EVENT_ONLY = 0x03
    FRU_LOCATOR = 0x11
    MC_LOCATOR = 0x12

    @classmethod
    def parse(cls, value: int) -> RecordType | None:
        try:
            return cls(value)
        except ValueError:
            return None


class AnalogFormat(enum.IntEnum):
    UNSIGNED = 0
    ONES_COMPLEMENT = 1
    TWOS_COMPLEMENT = 2
    NO_ANALOG = 3


class Unit(enum.IntEnum):
    """Base unit codes (IPMI v2.0 table 43-15) that megapod sensors use."""

    UNSPECIFIED = 0
    DEGREES_C = 1
    VOLTS = 4
    AMPS = 5
    WATTS = 6
    RPM = 18

    @classmethod
    def parse(cls, value: int) -> Unit | None:
        try:
            return cls(value)
        except ValueError:
            return None


UNIT_SUFFIX: dict[Unit, tuple[str, str]] = {
    Unit.DEGREES_C: ("_c", "C"),
    Unit.VOLTS: ("_v", "V"),
    Unit.AMPS: ("_a", "A"),
    Unit.WATTS: ("_w", "W"),
    Unit.RPM: ("_rpm", "RPM"),
}

THRESHOLD_READING_TYPE = 0x01


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _to_unsigned(value: int, bits: int) -> int:
    return value & ((1 << bits) - 1)


def signed_raw(raw: int, fmt: AnalogFormat) -> int:
    raw &= 0xFF
    if fmt is AnalogFormat.TWOS_COMPLEMENT:
        return _signed(raw, 8)
    if fmt is AnalogFormat.ONES_COMPLEMENT:
        return -(~raw & 0xFF) if raw & 0x80 else raw
    return raw


def linear_value(raw: int, fmt: AnalogFormat, m: int, b: int, k1: int, k2: int) -> float:
    """y = (M·x + B·10^K1)·10^K2, rounded to drop binary noise from the powers of ten."""
    value = (m * signed_raw(raw, fmt) + b * 10.0**k1) * 10.0**k2
    return round(value, max(0, -k2) + 3)


def _valid_range(fmt: AnalogFormat, m: int, b: int, k1: int, k2: int, min_raw: int,
                 max_raw: int) -> tuple[float, float]:
    low = linear_value(min_raw, fmt, m, b, k1, k2)
    high = linear_value(max_raw, fmt, m, b, k1, k2)
    return (low, high) if low <= high else (high, low)


@dataclass(frozen=True, slots=True)
class SensorRecord:
    """What the driver needs from one sensor's SDR."""

    record_id: int
    record_type: RecordType
    sensor_number: int
    owner_id: int
    lun: int
    entity_id: int
    sensor_type: int
    reading_type: int
    analog_format: AnalogFormat
    percentage: bool
    unit: int
    m: int
    b: int
    k1: int
    k2: int
    sensor_min_raw: int
    sensor_max_raw: int
    thresholds_raw: tuple[int, int, int, int, int, int]  # LNC, LC, LNR, UNC, UC, UNR
    id_string: str
    valid_min: float  # sensor min/max reading converted, computed once when decoded
    valid_max: float

    @property
    def is_threshold(self) -> bool:
        return self.reading_type == THRESHOLD_READING_TYPE

    @property
    def is_analog(self) -> bool:
        return (self.record_type is RecordType.FULL_SENSOR and self.is_threshold
                and self.analog_format is not AnalogFormat.NO_ANALOG)

    def signed_raw(self, raw: int) -> int:
        return signed_raw(raw, self.analog_format)

    def convert(self, raw: int) -> float:
        """Raw reading byte -> value in the sensor's unit (linear records only)."""
        return linear_value(raw, self.analog_format, self.m, self.b, self.k1, self.k2)

    def in_range(self, value: float) -> bool:
        """Inside the sensor's SDR min/max reading (whichever way the formula runs)."""
        return self.valid_min <= value <= self.valid_max

    def encode(self, value: float) -> int:
        """Value -> raw byte (for the simulator), clamped to the raw range of the format."""
        x = round((value / 10.0**self.k2 - self.b * 10.0**self.k1) / self.m) if self.m else 0
        if self.analog_format is AnalogFormat.UNSIGNED:
            return min(max(x, 0), 255)
        x = min(max(x, -127 if self.analog_format is AnalogFormat.ONES_COMPLEMENT else -128), 127)
        if self.analog_format is AnalogFormat.ONES_COMPLEMENT and x < 0:
            return ~(-x) & 0xFF
        return x & 0xFF

    @property
    def unit_enum(self) -> Unit | None:
        return Unit.parse(self.unit)

    @property
    def unit_symbol(self) -> str:
        if self.percentage:
            return "%"
        unit = self.unit_enum
        return UNIT_SUFFIX[unit][1] if unit in UNIT_SUFFIX else ""

    @property
    def point_name(self) -> str:
        """`Inlet Temp` -> `inlet_temp_c`; discrete sensors get no unit suffix."""
        base = point_base_name(self.id_string)
        if not self.is_threshold:
            return base
        if self.percentage:
            return base + "_pct"
        unit = self.unit_enum
        suffix = UNIT_SUFFIX[unit][0] if unit in UNIT_SUFFIX else ""
        return base if base.endswith(suffix) else base + suffix


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def point_base_name(id_string: str) -> str:
    name = _NON_ALNUM.sub("_", id_string.lower()).strip("_")
    if not name:
        raise SdrError(f"sensor ID string {id_string!r} has no letters or digits")
    return name


def _id_string(record: bytes, offset: int) -> str:
    if len(record) <= offset:
        raise SdrError(f"record of {len(record)} bytes has no ID string at byte {offset}")
    code = record[offset]
    length = code & 0x1F
    kind = code >> 6
    raw = record[offset + 1 : offset + 1 + length]
    if len(raw) != length:
        raise SdrError(f"ID string says {length} bytes, record holds {len(raw)}")
    if kind != 3:
        raise SdrError(f"ID string type {kind} not supported (only 8-bit ASCII/Latin-1)")
    return raw.decode("latin-1").rstrip("\x00")


def parse_sensor_record(record: bytes) -> SensorRecord | None:
    """Decode one whole SDR; None for record types that carry no sensor reading."""
    if len(record) < SDR_HEADER_BYTES:
        raise SdrError(f"SDR of {len(record)} bytes is shorter than its 5-byte header")
    record_id = int.from_bytes(record[0:2], "little")
    if record[4] != len(record) - SDR_HEADER_BYTES:
        raise SdrError(f"SDR {record_id}: length byte {record[4]} but "
                       f"{len(record) - SDR_HEADER_BYTES} body bytes")
    rtype = RecordType.parse(record[3])
    if rtype is RecordType.FULL_SENSOR:
        return _parse_full(record_id, record)
    if rtype is RecordType.COMPACT_SENSOR:
        return _parse_compact(record_id, record)
    return None


def _parse_full(record_id: int, r: bytes) -> SensorRecord:
    if len(r) < FULL_ID_OFFSET + 1:
        raise SdrError(f"full SDR {record_id} is {len(r)} bytes, shorter than 48")
    m = _signed(r[24] | (r[25] & 0xC0) << 2, 10)
    b = _signed(r[26] | (r[27] & 0xC0) << 2, 10)
    k2 = _signed(r[29] >> 4, 4)
    k1 = _signed(r[29] & 0x0F, 4)
    if r[23] & 0x7F:
        raise SdrError(f"full SDR {record_id}: non-linear linearization {r[23] & 0x7F}")
    fmt = AnalogFormat(r[20] >> 6)
    low, high = _valid_range(fmt, m, b, k1, k2, r[35], r[34])
    return SensorRecord(
        record_id=record_id, record_type=RecordType.FULL_SENSOR, sensor_number=r[7],
        owner_id=r[5], lun=r[6] & 3, entity_id=r[8], sensor_type=r[12], reading_type=r[13],
        analog_format=fmt, percentage=bool(r[20] & 1), unit=r[21],
        m=m, b=b, k1=k1, k2=k2, sensor_max_raw=r[34], sensor_min_raw=r[35],
        thresholds_raw=(r[41], r[40], r[39], r[38], r[37], r[36]),
        id_string=_id_string(r, FULL_ID_OFFSET), valid_min=low, valid_max=high,
    )


def _parse_compact(record_id: int, r: bytes) -> SensorRecord:
    if len(r) < COMPACT_ID_OFFSET + 1:
        raise SdrError(f"compact SDR {record_id} is {len(r)} bytes, shorter than 32")
    return SensorRecord(
        record_id=record_id, record_type=RecordType.COMPACT_SENSOR, sensor_number=r[7],
        owner_id=r[5], lun=r[6] & 3, entity_id=r[8], sensor_type=r[12], reading_type=r[13],
        analog_format=AnalogFormat(r[20] >> 6), percentage=bool(r[20] & 1), unit=r[21],
        m=1, b=0, k1=0, k2=0, sensor_min_raw=0, sensor_max_raw=255,
        thresholds_raw=(0, 0, 0, 0, 0, 0), id_string=_id_string(r, COMPACT_ID_OFFSET),
        valid_min=0.0, valid_max=255.0,
    )


@dataclass(frozen=True, slots=True)
class FullRecordSpec:
    """What a simulator fills in to build a Full Sensor Record."""

    record_id: int
    sensor_number: int
    id_string: str
    sensor_type: int
    unit: Unit
    m: int
    b: int = 0
    k1: int = 0
    k2: int = 0
    analog_format: AnalogFormat = AnalogFormat.UNSIGNED
    sensor_min_raw: int = 0
    sensor_max_raw: int = 255
    thresholds_raw: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)
    readable_mask: int = 0
    entity_id: int = 0x07  # system board
    owner_id: int = 0x20  # the BMC


def build_full_record(spec: FullRecordSpec) -> bytes:
    """A Full Sensor Record (type 01) in wire layout."""
    if not -512 <= spec.m <= 511 or not -512 <= spec.b <= 511:
        raise SdrError("M and B must fit 10 signed bits")
    if not -8 <= spec.k1 <= 7 or not -8 <= spec.k2 <= 7:
        raise SdrError("K1 and K2 must fit 4 signed bits")
    name = spec.id_string.encode("latin-1")
    if len(name) > 16:
        raise SdrError(f"ID string {spec.id_string!r} longer than 16 bytes")
    m = _to_unsigned(spec.m, 10)
    b = _to_unsigned(spec.b, 10)
    lnc, lc, lnr, unc, uc, unr = spec.thresholds_raw
    body = bytes((
        spec.owner_id, 0x00, spec.sensor_number,
        spec.entity_id, 0x01,  # entity, instance
        0x7F,  # initialisation: scanning, events, thresholds, hysteresis, type
        0x68,  # capabilities: auto re-arm, thresholds readable/settable
        spec.sensor_type, THRESHOLD_READING_TYPE,
        0x00, 0x00,  # assertion / lower threshold reading mask
        0x00, 0x00,  # deassertion / upper threshold reading mask
        spec.readable_mask, 0x00,  # readable / settable threshold mask
        spec.analog_format << 6, spec.unit, 0x00,
        0x00,  # linear
        m & 0xFF, (m >> 8) << 6,
        b & 0xFF, (b >> 8) << 6,
        0x00,  # accuracy, direction
        (_to_unsigned(spec.k2, 4) << 4) | _to_unsigned(spec.k1, 4),
        0x00,  # analog characteristic flags
        0x00, 0x00, 0x00,  # nominal, normal max, normal min
        spec.sensor_max_raw, spec.sensor_min_raw,
        unr, uc, unc, lnr, lc, lnc,
        0x00, 0x00,  # hysteresis
        0x00, 0x00, 0x00,  # reserved, OEM
        0xC0 | len(name),
    )) + name
    return spec.record_id.to_bytes(2, "little") + bytes((0x51, 0x01, len(body))) + body


def build_compact_discrete_record(record_id: int, sensor_number: int, id_string: str,
                                  sensor_type: int, reading_type: int = 0x03) -> bytes:
    """A Compact Sensor Record (type 02) for a discrete sensor (default: digital discrete)."""
    name = id_string.encode("latin-1")
    if len(name) > 16:
        raise SdrError(f"ID string {id_string!r} longer than 16 bytes")
    body = bytes((
        0x20, 0x00, sensor_number, 0x07, 0x01, 0x63, 0x40, sensor_type, reading_type,
        0x03, 0x00, 0x03, 0x00, 0x03, 0x00,  # masks: states 0 and 1
        0xC0, 0x00, 0x00,  # no analog reading, unit unspecified
        0x00, 0x00,  # no record sharing
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  # hysteresis, reserved, OEM
        0xC0 | len(name),
    )) + name
    return record_id.to_bytes(2, "little") + bytes((0x51, 0x02, len(body))) + body
