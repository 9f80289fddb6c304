"""BER primitives for SNMP: lengths, INTEGER, OCTET STRING, NULL, OID and tag-length-value.

Pure functions over bytes. Decoders take (buffer, start, stop) bounds so nested
structures are parsed without copying; every malformed input raises
SnmpCodecError naming the problem, never IndexError or ValueError.
"""

from __future__ import annotations

from functools import lru_cache

from drivers.errors import FrameError

Oid = tuple[int, ...]

# Universal and SNMP application tags (RFC 2578 / RFC 3416).
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_SEQUENCE = 0x30

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_MAX_LENGTH_OCTETS = 4  # 4 GB is far beyond any UDP datagram


class SnmpCodecError(FrameError):
    """Bytes that are not a well-formed SNMP message (or a value that cannot be encoded)."""


def parse_oid(text: str) -> Oid:
    """'1.3.6.1.2.1.1.1.0' (a leading dot allowed) -> (1, 3, 6, 1, 2, 1, 1, 1, 0)."""
    try:
        arcs = tuple(int(part) for part in text.strip().lstrip(".").split("."))
    except ValueError:
        raise SnmpCodecError(f"not a dotted OID: {text!r}") from None
    _check_oid(arcs)
    return arcs


def format_oid(oid: Oid) -> str:
    return ".".join(str(arc) for arc in oid)


def _check_oid(oid: Oid) -> None:
    if len(oid) < 2:
        raise SnmpCodecError(f"OID needs at least two arcs: {oid!r}")
    if oid[0] > 2 or (oid[0] < 2 and oid[1] > 39):
        raise SnmpCodecError(f"OID first arcs out of range: {oid!r}")
    if len(oid) > 128:
        raise SnmpCodecError("OID longer than 128 arcs")
    for arc in oid:
        if arc < 0 or arc > 0xFFFFFFFF:
            raise SnmpCodecError(f"OID arc out of range: {arc}")


# ---------------------------------------------------------------- encoding


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    return bytes((tag,)) + encode_length(length) + content


def encode_signed(value: int) -> bytes:
    """Minimal two's complement content octets."""
    magnitude = value if value >= 0 else ~value
    return value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


def encode_integer(value: int) -> bytes:
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise SnmpCodecError(f"INTEGER out of Integer32 range: {value}")
    return tlv(TAG_INTEGER, encode_signed(value))


def encode_unsigned(tag: int, value: int, bits: int) -> bytes:
    if not 0 <= value < (1 << bits):
        raise SnmpCodecError(f"value {value} out of range for a {bits}-bit unsigned type")
    return tlv(tag, encode_signed(value))


def encode_octets(value: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, value)


NULL = b"\x05\x00"


@lru_cache(maxsize=8192)
def encode_oid_content(oid: Oid) -> bytes:
    """Content octets of an OID; cached because pollers ask for the same OIDs forever."""
    _check_oid(oid)
    out = bytearray()
    _append_base128(out, oid[0] * 40 + oid[1])
    for arc in oid[2:]:
        if arc < 0x80:
            out.append(arc)
        else:
            _append_base128(out, arc)
    return bytes(out)


def _append_base128(out: bytearray, value: int) -> None:
    chunks = [value & 0x7F]
    value >>= 7
    while value:
        chunks.append(0x80 | (value & 0x7F))
        value >>= 7
    out.extend(reversed(chunks))


def encode_oid(oid: Oid) -> bytes:
    return tlv(TAG_OID, encode_oid_content(oid))


# ---------------------------------------------------------------- decoding


def read_tlv(buf: bytes, pos: int, stop: int) -> tuple[int, int, int]:
    """Read one TLV inside buf[pos:stop]; return (tag, content_start, content_stop)."""
    if pos + 2 > stop:
        raise SnmpCodecError(f"truncated: TLV header needs 2 bytes at offset {pos}")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise SnmpCodecError(f"multi-byte tag 0x{tag:02x} at offset {pos} is not used by SNMP")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise SnmpCodecError(f"indefinite length at offset {pos - 1} is not allowed")
        if count > _MAX_LENGTH_OCTETS:
            raise SnmpCodecError(f"length of {count} octets at offset {pos - 1}")
        if pos + count > stop:
            raise SnmpCodecError(f"truncated: length octets at offset {pos}")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > stop:
        raise SnmpCodecError(
            f"truncated: tag 0x{tag:02x} claims {length} bytes, {stop - pos} left at offset {pos}"
        )
    return tag, pos, end


def expect_tlv(buf: bytes, pos: int, stop: int, tag: int, what: str) -> tuple[int, int]:
    got, start, end = read_tlv(buf, pos, stop)
    if got != tag:
        raise SnmpCodecError(f"{what}: expected tag 0x{tag:02x}, got 0x{got:02x} at offset {pos}")
    return start, end


def decode_signed(buf: bytes, start: int, stop: int, what: str) -> int:
    if start == stop:
        raise SnmpCodecError(f"{what}: empty INTEGER")
    return int.from_bytes(buf[start:stop], "big", signed=True)


def decode_integer32(buf: bytes, start: int, stop: int, what: str) -> int:
    value = decode_signed(buf, start, stop, what)
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise SnmpCodecError(f"{what}: {value} out of Integer32 range")
    return value


def decode_unsigned(buf: bytes, start: int, stop: int, bits: int, what: str) -> int:
    value = decode_signed(buf, start, stop, what)
    if not 0 <= value < (1 << bits):
        raise SnmpCodecError(f"{what}: {value} out of range for a {bits}-bit unsigned type")
    return value


_OID_CACHE: dict[bytes, Oid] = {}
_OID_CACHE_LIMIT = 65536  # a pod's agents use a few thousand OIDs; cap it against floods


def decode_oid(buf: bytes, start: int, stop: int) -> Oid:
    """Decode OID content octets; cached by bytes, as pollers see the same OIDs forever."""
    raw = bytes(buf[start:stop])
    oid = _OID_CACHE.get(raw)
    if oid is None:
        oid = _decode_oid(raw)
        if len(_OID_CACHE) >= _OID_CACHE_LIMIT:
            _OID_CACHE.clear()
        _OID_CACHE[raw] = oid
    return oid


def _decode_oid(raw: bytes) -> Oid:
    if not raw:
        raise SnmpCodecError("empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    in_arc = False
    for pos, byte in enumerate(raw):
        if not in_arc and byte == 0x80:
            raise SnmpCodecError(f"OID arc with a leading 0x80 pad at byte {pos}")
        value = (value << 7) | (byte & 0x7F)
        if byte & 0x80:
            in_arc = True
            continue
        arcs.append(value)
        value = 0
        in_arc = False
    if in_arc:
        raise SnmpCodecError("OID ends inside an arc")
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    oid = head + tuple(arcs[1:])
    if len(oid) > 128:
        raise SnmpCodecError("OID longer than 128 arcs")
    if any(arc > 0xFFFFFFFF for arc in oid[1:]):
        raise SnmpCodecError("OID arc above 2^32-1")
    return oid
