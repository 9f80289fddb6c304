"""SNMP PDUs and variable bindings (RFC 3416): typed values, encode and strict decode."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

from drivers.snmp import ber
from drivers.snmp.ber import Oid, SnmpCodecError


class Tag(enum.IntEnum):
    """Tags a varbind value can carry in SNMPv2c/v3."""

    INTEGER = 0x02
    OCTET_STRING = 0x04
    NULL = 0x05
    OID = 0x06
    IP_ADDRESS = 0x40
    COUNTER32 = 0x41
    GAUGE32 = 0x42
    TIMETICKS = 0x43
    OPAQUE = 0x44
    COUNTER64 = 0x46
    NO_SUCH_OBJECT = 0x80
    NO_SUCH_INSTANCE = 0x81
    END_OF_MIB_VIEW = 0x82


_UNSIGNED_BITS = {Tag.COUNTER32: 32, Tag.GAUGE32: 32, Tag.TIMETICKS: 32, Tag.COUNTER64: 64}
_EXCEPTIONS = frozenset({Tag.NO_SUCH_OBJECT, Tag.NO_SUCH_INSTANCE, Tag.END_OF_MIB_VIEW})
_TAGS = {int(tag): tag for tag in Tag}

Value = int | bytes | Oid | None


class PduType(enum.IntEnum):
    GET = 0xA0
    GET_NEXT = 0xA1
    RESPONSE = 0xA2
    SET = 0xA3
    GET_BULK = 0xA5
    INFORM = 0xA6
    TRAP_V2 = 0xA7
    REPORT = 0xA8


_PDU_TYPES = {int(kind): kind for kind in PduType}


class ErrorStatus(enum.IntEnum):
    NO_ERROR = 0
    TOO_BIG = 1
    NO_SUCH_NAME = 2
    BAD_VALUE = 3
    READ_ONLY = 4
    GEN_ERR = 5
    NO_ACCESS = 6
    WRONG_TYPE = 7
    WRONG_LENGTH = 8
    WRONG_ENCODING = 9
    WRONG_VALUE = 10
    NO_CREATION = 11
    INCONSISTENT_VALUE = 12
    RESOURCE_UNAVAILABLE = 13
    COMMIT_FAILED = 14
    UNDO_FAILED = 15
    AUTHORIZATION_ERROR = 16
    NOT_WRITABLE = 17
    INCONSISTENT_NAME = 18

    @classmethod
    def from_wire(cls, value: int) -> ErrorStatus:
        """Unknown codes become genErr: the agent refused, we just do not know why."""
        try:
            return cls(value)
        except ValueError:
            return cls.GEN_ERR


@dataclass(frozen=True, slots=True)
class VarBind:
    """One OID and its typed value; value is None for NULL and the exception tags."""

    oid: Oid
    tag: Tag = Tag.NULL
    value: Value = None

    @classmethod
    def null(cls, oid: Oid) -> VarBind:
        return cls(oid, Tag.NULL, None)

    @classmethod
    def integer(cls, oid: Oid, value: int) -> VarBind:
        return cls(oid, Tag.INTEGER, value)

    @classmethod
    def octets(cls, oid: Oid, value: bytes | str) -> VarBind:
        return cls(oid, Tag.OCTET_STRING, value.encode() if isinstance(value, str) else value)

    @property
    def is_exception(self) -> bool:
        """noSuchObject, noSuchInstance or endOfMibView."""
        return self.tag in _EXCEPTIONS


@dataclass(frozen=True, slots=True)
class Pdu:
    """A PDU. For GETBULK error_status is non-repeaters and error_index max-repetitions."""

    type: PduType
    request_id: int
    error_status: int = 0
    error_index: int = 0
    varbinds: tuple[VarBind, ...] = ()

    @property
    def status(self) -> ErrorStatus:
        return ErrorStatus.from_wire(self.error_status)


# ---------------------------------------------------------------- encoding


def encode_value(tag: Tag, value: Value) -> bytes:
    if tag is Tag.INTEGER:
        if not isinstance(value, int):
            raise SnmpCodecError(f"INTEGER needs an int, got {type(value).__name__}")
        return ber.encode_integer(value)
    if tag in (Tag.OCTET_STRING, Tag.OPAQUE):
        if not isinstance(value, bytes):
            raise SnmpCodecError(f"{tag.name} needs bytes, got {type(value).__name__}")
        return ber.tlv(tag, value)
    if tag in _UNSIGNED_BITS:
        if not isinstance(value, int):
            raise SnmpCodecError(f"{tag.name} needs an int, got {type(value).__name__}")
        return ber.encode_unsigned(tag, value, _UNSIGNED_BITS[tag])
    if tag is Tag.OID:
        if not isinstance(value, tuple):
            raise SnmpCodecError(f"OID value needs a tuple, got {type(value).__name__}")
        return ber.encode_oid(value)
    if tag is Tag.IP_ADDRESS:
        if not isinstance(value, bytes) or len(value) != 4:
            raise SnmpCodecError("IpAddress needs exactly 4 bytes")
        return ber.tlv(tag, value)
    return bytes((tag, 0))  # NULL and the three exceptions


def encode_varbind(vb: VarBind) -> bytes:
    if vb.tag is Tag.NULL:
        return encode_null_varbind(vb.oid)
    return ber.tlv(ber.TAG_SEQUENCE, ber.encode_oid(vb.oid) + encode_value(vb.tag, vb.value))


@lru_cache(maxsize=8192)
def encode_null_varbind(oid: Oid) -> bytes:
    """A request's varbind; cached because pollers ask for the same OIDs every time."""
    return ber.tlv(ber.TAG_SEQUENCE, ber.encode_oid(oid) + ber.NULL)


def encode_pdu(pdu: Pdu, encoded_varbinds: bytes | None = None) -> bytes:
    """Encode a PDU; pass encoded_varbinds to reuse a varbind list encoded earlier."""
    if encoded_varbinds is None:
        encoded_varbinds = b"".join([encode_varbind(vb) for vb in pdu.varbinds])
    return ber.tlv(
        pdu.type,
        ber.encode_integer(pdu.request_id)
        + ber.encode_integer(pdu.error_status)
        + ber.encode_integer(pdu.error_index)
        + ber.tlv(ber.TAG_SEQUENCE, encoded_varbinds),
    )


# ---------------------------------------------------------------- decoding


def decode_value(buf: bytes, pos: int, stop: int) -> tuple[Tag, Value, int]:
    raw_tag, start, end = ber.read_tlv(buf, pos, stop)
    tag = _TAGS.get(raw_tag)
    if tag is None:
        raise SnmpCodecError(f"unsupported value tag 0x{raw_tag:02x} at offset {pos}")
    value: Value
    if tag is Tag.INTEGER:
        value = ber.decode_integer32(buf, start, end, "INTEGER value")
    elif tag in (Tag.OCTET_STRING, Tag.OPAQUE):
        value = bytes(buf[start:end])
    elif tag in _UNSIGNED_BITS:
        value = ber.decode_unsigned(buf, start, end, _UNSIGNED_BITS[tag], tag.name)
    elif tag is Tag.OID:
        value = ber.decode_oid(buf, start, end)
    elif tag is Tag.IP_ADDRESS:
        if end - start != 4:
            raise SnmpCodecError(f"IpAddress of {end - start} bytes at offset {pos}")
        value = bytes(buf[start:end])
    else:
        if end != start:
            raise SnmpCodecError(f"{tag.name} with {end - start} content bytes at offset {pos}")
        value = None
    return tag, value, end


def decode_varbinds(buf: bytes, start: int, stop: int) -> tuple[VarBind, ...]:
    out: list[VarBind] = []
    append = out.append
    read_tlv = ber.read_tlv
    pos = start
    while pos < stop:
        tag, vb_start, vb_end = read_tlv(buf, pos, stop)
        if tag != ber.TAG_SEQUENCE:
            raise SnmpCodecError(f"varbind: expected a SEQUENCE, got 0x{tag:02x} at offset {pos}")
        tag, oid_start, oid_end = read_tlv(buf, vb_start, vb_end)
        if tag != ber.TAG_OID:
            raise SnmpCodecError(
                f"varbind name: expected an OID, got 0x{tag:02x} at offset {vb_start}"
            )
        oid = ber.decode_oid(buf, oid_start, oid_end)
        tag, v_start, v_end = read_tlv(buf, oid_end, vb_end)
        if v_end != vb_end:
            raise SnmpCodecError(f"varbind at offset {pos} has trailing bytes")
        if tag == ber.TAG_INTEGER:  # the common case, inlined
            append(VarBind(oid, Tag.INTEGER, ber.decode_integer32(buf, v_start, v_end, "INTEGER")))
        else:
            kind, value, _ = decode_value(buf, oid_end, vb_end)
            append(VarBind(oid, kind, value))
        pos = vb_end
    return tuple(out)


def decode_pdu(buf: bytes, pos: int, stop: int) -> tuple[Pdu, int]:
    """Decode the PDU at buf[pos:stop]; return it and the offset after it."""
    raw_type, start, end = ber.read_tlv(buf, pos, stop)
    pdu_type = _PDU_TYPES.get(raw_type)
    if pdu_type is None:
        raise SnmpCodecError(f"unsupported PDU type 0x{raw_type:02x} at offset {pos}")
    fields: list[int] = []
    cursor = start
    for what in ("request-id", "error-status", "error-index"):
        s, e = ber.expect_tlv(buf, cursor, end, ber.TAG_INTEGER, what)
        fields.append(ber.decode_integer32(buf, s, e, what))
        cursor = e
    if fields[1] < 0 or fields[2] < 0:
        raise SnmpCodecError(f"negative error-status/index in PDU at offset {pos}")
    vbl_start, vbl_end = ber.expect_tlv(buf, cursor, end, ber.TAG_SEQUENCE, "varbind list")
    if vbl_end != end:
        raise SnmpCodecError(f"PDU at offset {pos} has trailing bytes")
    varbinds = decode_varbinds(buf, vbl_start, vbl_end)
    return Pdu(pdu_type, fields[0], fields[1], fields[2], varbinds), end
