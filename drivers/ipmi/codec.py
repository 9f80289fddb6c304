"""IPMI messages as Terminal Mode carries them (no addresses, no checksums).

Request bytes:  NetFn<<2 | LUN, Seq<<2 | Bridge, Cmd, Data...
Response bytes: (NetFn|1)<<2 | LUN, Seq<<2 | Bridge, Cmd, Completion code, Data...
(IPMI v2.0 §14.7.3). Pure; errors are IpmiFrameError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.ipmi.framing import IpmiFrameError

SEQ_MODULO = 64  # the sequence number is 6 bits


class NetFn(enum.IntEnum):
    """Request network functions used here (responses are NetFn + 1)."""

    CHASSIS = 0x00
    SENSOR_EVENT = 0x04
    APP = 0x06
    STORAGE = 0x0A
    GROUP_EXTENSION = 0x2C  # DCMI (group DC) and PICMG (group 00)
    OEM_SUPERMICRO = 0x30


class CompletionCode(enum.IntEnum):
    """Completion codes (IPMI v2.0 table 5-2) and the DCMI one this driver meets."""

    OK = 0x00
    NODE_BUSY = 0xC0
    INVALID_COMMAND = 0xC1
    TIMEOUT = 0xC3
    OUT_OF_SPACE = 0xC4
    RESERVATION_CANCELLED = 0xC5
    REQUEST_TRUNCATED = 0xC6
    INVALID_LENGTH = 0xC7
    LENGTH_EXCEEDED = 0xC8
    PARAMETER_OUT_OF_RANGE = 0xC9
    CANNOT_RETURN_BYTES = 0xCA
    NOT_PRESENT = 0xCB
    INVALID_DATA_FIELD = 0xCC
    ILLEGAL_FOR_SENSOR = 0xCD
    RESPONSE_UNAVAILABLE = 0xCE
    DUPLICATED_REQUEST = 0xCF
    SDR_IN_UPDATE = 0xD0
    FIRMWARE_UPDATE = 0xD1
    BMC_INITIALISING = 0xD2
    DESTINATION_UNAVAILABLE = 0xD3
    INSUFFICIENT_PRIVILEGE = 0xD4
    NOT_SUPPORTED_NOW = 0xD5
    UNSPECIFIED = 0xFF
    DCMI_NO_ACTIVE_POWER_LIMIT = 0x80

    @classmethod
    def describe(cls, code: int) -> str:
        """A name for any code, known or not (unknown values never raise)."""
        try:
            return cls(code).name.lower()
        except ValueError:
            return f"code_0x{code:02x}"


def _check_byte(name: str, value: int, limit: int = 0xFF) -> None:
    if not 0 <= value <= limit:
        raise IpmiFrameError(f"{name} {value} out of range 0..{limit}")


@dataclass(frozen=True, slots=True)
class Request:
    netfn: int
    cmd: int
    data: bytes = b""
    seq: int = 0
    lun: int = 0
    bridge: int = 0

    def to_bytes(self) -> bytes:
        _check_byte("netfn", self.netfn, 0x3F)
        if self.netfn & 1:
            raise IpmiFrameError(f"request netfn 0x{self.netfn:02x} is odd (a response netfn)")
        _check_byte("seq", self.seq, SEQ_MODULO - 1)
        _check_byte("lun", self.lun, 3)
        _check_byte("bridge", self.bridge, 3)
        _check_byte("cmd", self.cmd)
        head = (self.netfn << 2 | self.lun, self.seq << 2 | self.bridge, self.cmd)
        return bytes(head) + self.data

    @classmethod
    def from_bytes(cls, raw: bytes) -> Request:
        if len(raw) < 3:
            raise IpmiFrameError(f"request of {len(raw)} bytes is shorter than 3")
        netfn = raw[0] >> 2
        if netfn & 1:
            raise IpmiFrameError(f"request has odd (response) netfn 0x{netfn:02x}")
        return cls(netfn, raw[2], bytes(raw[3:]), raw[1] >> 2, raw[0] & 3, raw[1] & 3)


@dataclass(frozen=True, slots=True)
class Response:
    netfn: int  # the request's NetFn (even); the wire carries netfn | 1
    cmd: int
    completion_code: int
    data: bytes = b""
    seq: int = 0
    lun: int = 0
    bridge: int = 0

    def to_bytes(self) -> bytes:
        _check_byte("netfn", self.netfn, 0x3F)
        _check_byte("seq", self.seq, SEQ_MODULO - 1)
        _check_byte("lun", self.lun, 3)
        _check_byte("bridge", self.bridge, 3)
        _check_byte("cmd", self.cmd)
        _check_byte("completion code", self.completion_code)
        head = ((self.netfn | 1) << 2 | self.lun, self.seq << 2 | self.bridge, self.cmd)
        return bytes((*head, self.completion_code)) + self.data

    @classmethod
    def from_bytes(cls, raw: bytes) -> Response:
        if len(raw) < 4:
            raise IpmiFrameError(f"response of {len(raw)} bytes is shorter than 4")
        wire_netfn = raw[0] >> 2
        if not wire_netfn & 1:
            raise IpmiFrameError(f"response has even (request) netfn 0x{wire_netfn:02x}")
        return cls(wire_netfn & ~1, raw[2], raw[3], bytes(raw[4:]), raw[1] >> 2, raw[0] & 3,
                   raw[1] & 3)

    def answers(self, request: Request) -> bool:
        """Same NetFn, command, LUN and sequence number as the request."""
        return (
            self.seq == request.seq
            and self.netfn == request.netfn
            and self.cmd == request.cmd
            and self.lun == request.lun
        )

    @classmethod
    def to(cls, request: Request, completion_code: int, data: bytes = b"") -> Response:
        """The response a responder sends to `request`."""
        return cls(request.netfn, request.cmd, completion_code, data, request.seq, request.lun,
                   request.bridge)
