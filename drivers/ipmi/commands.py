"""Data of the IPMI/DCMI/OEM commands a megapod BMC answers (DEVICES.md §3).

Each response type decodes from the data after the completion code and checks
the length the command requires (Terminal Mode has no checksum: a short or long
reply is corruption, not a quirk). `to_bytes` is for the simulator.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.ipmi.codec import NetFn
from drivers.ipmi.framing import IpmiFrameError

DCMI_GROUP: Final = 0xDC
SUPERMICRO_FAN_DUTY: Final = 0x66


class Cmd(enum.IntEnum):
    """(NetFn, command) pairs are spelled out at the call sites; these are the numbers."""

    GET_DEVICE_ID = 0x01  # APP
    GET_CHASSIS_STATUS = 0x01  # CHASSIS
    CHASSIS_CONTROL = 0x02  # CHASSIS
    GET_SENSOR_THRESHOLDS = 0x27  # SENSOR_EVENT
    GET_SENSOR_READING = 0x2D  # SENSOR_EVENT
    GET_SDR_REPOSITORY_INFO = 0x20  # STORAGE
    RESERVE_SDR_REPOSITORY = 0x22  # STORAGE
    GET_SDR = 0x23  # STORAGE
    DCMI_GET_POWER_READING = 0x02  # GROUP_EXTENSION
    DCMI_GET_POWER_LIMIT = 0x03
    DCMI_SET_POWER_LIMIT = 0x04
    DCMI_ACTIVATE_POWER_LIMIT = 0x05
    OEM_FAN_MODE = 0x45  # OEM_SUPERMICRO
    OEM_FAN_DUTY = 0x70  # OEM_SUPERMICRO


# (netfn, cmd) -> (min, max) data bytes after the completion code, when it is 00.
RESPONSE_LENGTHS: Final[dict[tuple[int, int], tuple[int, int]]] = {
    (NetFn.APP, Cmd.GET_DEVICE_ID): (11, 15),
    (NetFn.CHASSIS, Cmd.GET_CHASSIS_STATUS): (3, 4),
    (NetFn.CHASSIS, Cmd.CHASSIS_CONTROL): (0, 0),
    (NetFn.SENSOR_EVENT, Cmd.GET_SENSOR_READING): (2, 4),
    (NetFn.SENSOR_EVENT, Cmd.GET_SENSOR_THRESHOLDS): (7, 7),
    (NetFn.STORAGE, Cmd.GET_SDR_REPOSITORY_INFO): (14, 14),
    (NetFn.STORAGE, Cmd.RESERVE_SDR_REPOSITORY): (2, 2),
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_GET_POWER_READING): (18, 18),
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_GET_POWER_LIMIT): (14, 14),
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_SET_POWER_LIMIT): (1, 1),
    (NetFn.GROUP_EXTENSION, Cmd.DCMI_ACTIVATE_POWER_LIMIT): (1, 1),
}


def check_length(what: str, data: bytes, low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(data) <= high:
        want = str(low) if low == high else f"{low}..{high}"
        raise IpmiFrameError(f"{what}: {len(data)} data bytes, expected {want}")


def _check_dcmi(what: str, data: bytes) -> None:
    if data[0] != DCMI_GROUP:
        raise IpmiFrameError(f"{what}: group 0x{data[0]:02x} is not DCMI (0xdc)")


class ChassisAction(enum.IntEnum):
    OFF = 0
    ON = 1
    CYCLE = 2
    HARD_RESET = 3
    SOFT_SHUTDOWN = 5

    @classmethod
    def parse(cls, value: int | str) -> ChassisAction:
        """From a number or a name ("off", "soft_shutdown", "soft"); ValueError names it."""
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_")
            aliases = {"reset": "hard_reset", "soft": "soft_shutdown", "power_off": "off",
                       "power_on": "on", "power_cycle": "cycle"}
            key = aliases.get(key, key)
            try:
                return cls[key.upper()]
            except KeyError:
                raise ValueError(f"unknown chassis action {value!r}") from None
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown chassis action {value!r}") from None


class FanMode(enum.IntEnum):
    STANDARD = 0
    FULL = 1

    @classmethod
    def parse(cls, value: int | str) -> FanMode:
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                raise ValueError(f"unknown fan mode {value!r}") from None
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown fan mode {value!r}") from None


@dataclass(frozen=True, slots=True)
class DeviceId:
    device_id: int
    device_revision: int
    firmware_major: int
    firmware_minor: int  # BCD on the wire, decoded here
    ipmi_version: int  # BCD: 0x02 = 2.0
    additional_support: int
    manufacturer_id: int
    product_id: int

    @property
    def firmware(self) -> str:
        return f"{self.firmware_major}.{self.firmware_minor:02d}"

    def to_bytes(self) -> bytes:
        minor_bcd = (self.firmware_minor // 10) << 4 | self.firmware_minor % 10
        return bytes((self.device_id, self.device_revision & 0x0F, self.firmware_major & 0x7F,
                      minor_bcd, self.ipmi_version, self.additional_support)) + \
            self.manufacturer_id.to_bytes(3, "little") + self.product_id.to_bytes(2, "little")

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceId:
        check_length("Get Device ID", data, 11, 15)
        minor = data[3]
        if (minor >> 4) > 9 or (minor & 0x0F) > 9:
            raise IpmiFrameError(f"Get Device ID: firmware minor 0x{minor:02x} is not BCD")
        return cls(data[0], data[1] & 0x0F, data[2] & 0x7F, (minor >> 4) * 10 + (minor & 0x0F),
                   data[4], data[5], int.from_bytes(data[6:9], "little"),
                   int.from_bytes(data[9:11], "little"))


@dataclass(frozen=True, slots=True)
class SdrRepositoryInfo:
    version: int
    record_count: int
    free_bytes: int
    addition_timestamp: int
    erase_timestamp: int
    operation_support: int

    def to_bytes(self) -> bytes:
        return struct.pack("<BHHIIB", self.version, self.record_count, self.free_bytes,
                           self.addition_timestamp, self.erase_timestamp,
                           self.operation_support)

    @classmethod
    def from_bytes(cls, data: bytes) -> SdrRepositoryInfo:
        check_length("Get SDR Repository Info", data, 14)
        return cls(*struct.unpack("<BHHIIB", data))


def get_sdr_request(reservation_id: int, record_id: int, offset: int, count: int) -> bytes:
    return struct.pack("<HHBB", reservation_id, record_id, offset, count)


@dataclass(frozen=True, slots=True)
class SdrChunk:
    next_record_id: int
    data: bytes

    def to_bytes(self) -> bytes:
        return struct.pack("<H", self.next_record_id) + self.data

    @classmethod
    def from_bytes(cls, data: bytes, count: int) -> SdrChunk:
        check_length("Get SDR", data, 2 + count)
        return cls(int.from_bytes(data[:2], "little"), bytes(data[2:]))


@dataclass(frozen=True, slots=True)
class SensorReading:
    raw: int
    events_enabled: bool
    scanning_enabled: bool
    unavailable: bool
    states: int  # threshold comparison bits, or discrete states 0..14

    def to_bytes(self) -> bytes:
        flags = (0x80 if self.events_enabled else 0) | (0x40 if self.scanning_enabled else 0) | \
            (0x20 if self.unavailable else 0)
        return bytes((self.raw, flags, self.states & 0xFF, (self.states >> 8) & 0x7F))

    @classmethod
    def from_bytes(cls, data: bytes) -> SensorReading:
        check_length("Get Sensor Reading", data, 2, 4)
        flags = data[1]
        states = (data[2] if len(data) > 2 else 0) | ((data[3] & 0x7F) << 8 if len(data) > 3 else 0)
        return cls(data[0], bool(flags & 0x80), bool(flags & 0x40), bool(flags & 0x20), states)


@dataclass(frozen=True, slots=True)
class ThresholdsRaw:
    """Get Sensor Thresholds: readable mask and raw values (LNC, LC, LNR, UNC, UC, UNR)."""

    readable_mask: int
    raw: tuple[int, int, int, int, int, int]

    def to_bytes(self) -> bytes:
        return bytes((self.readable_mask, *self.raw))

    @classmethod
    def from_bytes(cls, data: bytes) -> ThresholdsRaw:
        check_length("Get Sensor Thresholds", data, 7)
        raw = (data[1], data[2], data[3], data[4], data[5], data[6])
        return cls(data[0] & 0x3F, raw)


@dataclass(frozen=True, slots=True)
class ChassisStatus:
    power_on: bool
    overload: bool
    interlock: bool
    power_fault: bool
    control_fault: bool
    restore_policy: int
    last_power_event: int
    misc_state: int

    def to_bytes(self) -> bytes:
        state = (self.power_on | self.overload << 1 | self.interlock << 2 | self.power_fault << 3
                 | self.control_fault << 4 | (self.restore_policy & 3) << 5)
        return bytes((state, self.last_power_event, self.misc_state))

    @classmethod
    def from_bytes(cls, data: bytes) -> ChassisStatus:
        check_length("Get Chassis Status", data, 3, 4)
        s = data[0]
        return cls(bool(s & 1), bool(s & 2), bool(s & 4), bool(s & 8), bool(s & 16),
                   (s >> 5) & 3, data[1], data[2])


@dataclass(frozen=True, slots=True)
class DcmiPowerReading:
    current_w: int
    minimum_w: int
    maximum_w: int
    average_w: int
    timestamp: int
    period_ms: int
    active: bool

    def to_bytes(self) -> bytes:
        return struct.pack("<BHHHHIIB", DCMI_GROUP, self.current_w, self.minimum_w,
                           self.maximum_w, self.average_w, self.timestamp, self.period_ms,
                           0x40 if self.active else 0)

    @classmethod
    def from_bytes(cls, data: bytes) -> DcmiPowerReading:
        check_length("DCMI Get Power Reading", data, 18)
        _check_dcmi("DCMI Get Power Reading", data)
        _, cur, low, high, avg, ts, period, state = struct.unpack("<BHHHHIIB", data)
        return cls(cur, low, high, avg, ts, period, bool(state & 0x40))


@dataclass(frozen=True, slots=True)
class DcmiPowerLimit:
    """DCMI power limit parameters (Get response data / Set request data)."""

    exception_action: int
    limit_w: int
    correction_ms: int
    sampling_s: int

    def to_get_bytes(self) -> bytes:
        return struct.pack("<BHBHIHH", DCMI_GROUP, 0, self.exception_action, self.limit_w,
                           self.correction_ms, 0, self.sampling_s)

    def to_set_bytes(self) -> bytes:
        return struct.pack("<BHBBHIHH", DCMI_GROUP, 0, 0, self.exception_action, self.limit_w,
                           self.correction_ms, 0, self.sampling_s)

    @classmethod
    def from_get_bytes(cls, data: bytes) -> DcmiPowerLimit:
        check_length("DCMI Get Power Limit", data, 14)
        _check_dcmi("DCMI Get Power Limit", data)
        _, _, action, limit, corr, _, sampling = struct.unpack("<BHBHIHH", data)
        return cls(action, limit, corr, sampling)

    @classmethod
    def from_set_bytes(cls, data: bytes) -> DcmiPowerLimit:
        check_length("DCMI Set Power Limit", data, 15)
        _check_dcmi("DCMI Set Power Limit", data)
        _, _, _, action, limit, corr, _, sampling = struct.unpack("<BHBBHIHH", data)
        return cls(action, limit, corr, sampling)
