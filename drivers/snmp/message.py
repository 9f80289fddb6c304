"""SNMP message envelopes: community (v2c) and USM (v3, RFC 3412/3414) framing.

Encoding a v3 message leaves the authentication parameters as zeros and
returns where they are, so the USM layer can sign the finished bytes in place;
decoding returns the same offset so it can check the digest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from drivers.snmp import ber
from drivers.snmp.ber import SnmpCodecError
from drivers.snmp.protocol_pdu import Pdu, decode_pdu, encode_pdu


class SnmpVersion(enum.IntEnum):
    V1 = 0
    V2C = 1
    V3 = 3


class MsgFlags(enum.IntFlag):
    AUTH = 0x01
    PRIV = 0x02
    REPORTABLE = 0x04


USM_SECURITY_MODEL = 3
MAX_MESSAGE_SIZE = 65507  # largest UDP payload over IPv4


@dataclass(frozen=True, slots=True)
class CommunityMessage:
    """An SNMPv2c (or v1) message."""

    community: bytes
    pdu: Pdu
    version: SnmpVersion = SnmpVersion.V2C


@dataclass(frozen=True, slots=True)
class UsmParams:
    """UsmSecurityParameters (RFC 3414 section 2.4)."""

    engine_id: bytes = b""
    engine_boots: int = 0
    engine_time: int = 0
    user_name: bytes = b""
    auth_params: bytes = b""
    priv_params: bytes = b""


@dataclass(frozen=True, slots=True)
class ScopedPdu:
    context_engine_id: bytes
    context_name: bytes
    pdu: Pdu


@dataclass(frozen=True, slots=True)
class V3Message:
    """An SNMPv3 message: scoped_pdu when plaintext, encrypted_pdu when privacy is on.

    auth_offset is where the authentication parameters start in the encoded
    message (-1 when there are none); it is a by-product of (de)coding.
    """

    msg_id: int
    max_size: int
    flags: MsgFlags
    usm: UsmParams
    scoped_pdu: ScopedPdu | None = None
    encrypted_pdu: bytes | None = None
    auth_offset: int = field(default=-1, compare=False)


def encode_scoped_pdu(scoped: ScopedPdu, encoded_varbinds: bytes | None = None) -> bytes:
    """encoded_varbinds: the PDU's varbind list already encoded (saves encoding twice)."""
    return ber.tlv(
        ber.TAG_SEQUENCE,
        ber.encode_octets(scoped.context_engine_id)
        + ber.encode_octets(scoped.context_name)
        + encode_pdu(scoped.pdu, encoded_varbinds),
    )


def encode_community(msg: CommunityMessage, encoded_varbinds: bytes | None = None) -> bytes:
    return ber.tlv(
        ber.TAG_SEQUENCE,
        ber.encode_integer(msg.version)
        + ber.encode_octets(msg.community)
        + encode_pdu(msg.pdu, encoded_varbinds),
    )


def encode_v3(msg: V3Message, encoded_varbinds: bytes | None = None) -> tuple[bytes, int]:
    """Encode; return the bytes and the offset of the auth parameters' content (or -1)."""
    usm = msg.usm
    sec_head = (
        ber.encode_octets(usm.engine_id)
        + ber.encode_integer(usm.engine_boots)
        + ber.encode_integer(usm.engine_time)
        + ber.encode_octets(usm.user_name)
    )
    auth = ber.encode_octets(usm.auth_params)
    sec_content = sec_head + auth + ber.encode_octets(usm.priv_params)
    sec_seq = ber.tlv(ber.TAG_SEQUENCE, sec_content)
    # Offset of the auth parameters' content inside sec_seq.
    auth_in_seq = (
        (len(sec_seq) - len(sec_content)) + len(sec_head) + (len(auth) - len(usm.auth_params))
    )
    if msg.scoped_pdu is not None:
        data = encode_scoped_pdu(msg.scoped_pdu, encoded_varbinds)
    elif msg.encrypted_pdu is not None:
        data = ber.encode_octets(msg.encrypted_pdu)
    else:
        raise SnmpCodecError("v3 message needs a scoped PDU or encrypted data")
    head = ber.encode_integer(SnmpVersion.V3) + ber.tlv(
        ber.TAG_SEQUENCE,
        ber.encode_integer(msg.msg_id)
        + ber.encode_integer(msg.max_size)
        + ber.encode_octets(bytes((int(msg.flags),)))
        + ber.encode_integer(USM_SECURITY_MODEL),
    )
    sec_octets = ber.encode_octets(sec_seq)
    body = head + sec_octets + data
    out = ber.tlv(ber.TAG_SEQUENCE, body)
    outer_header = len(out) - len(body)
    sec_header = len(sec_octets) - len(sec_seq)
    auth_offset = outer_header + len(head) + sec_header + auth_in_seq
    return out, auth_offset if usm.auth_params else -1


def encode_message(msg: CommunityMessage | V3Message) -> bytes:
    if isinstance(msg, CommunityMessage):
        return encode_community(msg)
    return encode_v3(msg)[0]


# ---------------------------------------------------------------- decoding


def _octets(buf: bytes, pos: int, stop: int, what: str) -> tuple[bytes, int]:
    start, end = ber.expect_tlv(buf, pos, stop, ber.TAG_OCTET_STRING, what)
    return bytes(buf[start:end]), end


def _int(buf: bytes, pos: int, stop: int, what: str) -> tuple[int, int]:
    start, end = ber.expect_tlv(buf, pos, stop, ber.TAG_INTEGER, what)
    return ber.decode_integer32(buf, start, end, what), end


def decode_scoped_pdu(buf: bytes, pos: int, stop: int) -> ScopedPdu:
    start, end = ber.expect_tlv(buf, pos, stop, ber.TAG_SEQUENCE, "scopedPDU")
    engine_id, cursor = _octets(buf, start, end, "contextEngineID")
    name, cursor = _octets(buf, cursor, end, "contextName")
    pdu, cursor = decode_pdu(buf, cursor, end)
    if cursor != end:
        raise SnmpCodecError("scopedPDU has trailing bytes")
    return ScopedPdu(engine_id, name, pdu)


def _decode_usm(buf: bytes, start: int, stop: int) -> tuple[UsmParams, int]:
    seq_start, seq_end = ber.expect_tlv(buf, start, stop, ber.TAG_SEQUENCE, "securityParameters")
    if seq_end != stop:
        raise SnmpCodecError("securityParameters has trailing bytes")
    engine_id, cursor = _octets(buf, seq_start, seq_end, "msgAuthoritativeEngineID")
    boots, cursor = _int(buf, cursor, seq_end, "msgAuthoritativeEngineBoots")
    time, cursor = _int(buf, cursor, seq_end, "msgAuthoritativeEngineTime")
    user, cursor = _octets(buf, cursor, seq_end, "msgUserName")
    auth_start, auth_end = ber.expect_tlv(
        buf, cursor, seq_end, ber.TAG_OCTET_STRING, "msgAuthenticationParameters"
    )
    priv, cursor = _octets(buf, auth_end, seq_end, "msgPrivacyParameters")
    if cursor != seq_end:
        raise SnmpCodecError("securityParameters has trailing fields")
    if boots < 0 or time < 0:
        raise SnmpCodecError("negative engine boots/time")
    if len(engine_id) > 32 or len(user) > 32:
        raise SnmpCodecError("engine ID or user name longer than 32 bytes")
    usm = UsmParams(engine_id, boots, time, user, bytes(buf[auth_start:auth_end]), priv)
    return usm, (auth_start if auth_end > auth_start else -1)


def _decode_v3(buf: bytes, cursor: int, end: int) -> V3Message:
    g_start, g_end = ber.expect_tlv(buf, cursor, end, ber.TAG_SEQUENCE, "msgGlobalData")
    msg_id, c = _int(buf, g_start, g_end, "msgID")
    max_size, c = _int(buf, c, g_end, "msgMaxSize")
    flags_raw, c = _octets(buf, c, g_end, "msgFlags")
    model, c = _int(buf, c, g_end, "msgSecurityModel")
    if c != g_end:
        raise SnmpCodecError("msgGlobalData has trailing bytes")
    if msg_id < 0 or max_size < 484:
        raise SnmpCodecError(f"msgID {msg_id} or msgMaxSize {max_size} out of range")
    if len(flags_raw) != 1:
        raise SnmpCodecError(f"msgFlags of {len(flags_raw)} bytes")
    flags = MsgFlags(flags_raw[0] & 0x07)
    if flags & MsgFlags.PRIV and not flags & MsgFlags.AUTH:
        raise SnmpCodecError("msgFlags: privacy without authentication")
    if model != USM_SECURITY_MODEL:
        raise SnmpCodecError(f"security model {model} is not USM")
    sec_start, sec_end = ber.expect_tlv(
        buf, g_end, end, ber.TAG_OCTET_STRING, "msgSecurityParameters"
    )
    usm, auth_offset = _decode_usm(buf, sec_start, sec_end)
    tag, d_start, d_end = ber.read_tlv(buf, sec_end, end)
    if d_end != end:
        raise SnmpCodecError("v3 message has trailing bytes")
    if tag == ber.TAG_OCTET_STRING:
        return V3Message(msg_id, max_size, flags, usm, None, bytes(buf[d_start:d_end]), auth_offset)
    if tag != ber.TAG_SEQUENCE:
        raise SnmpCodecError(f"msgData: unexpected tag 0x{tag:02x}")
    scoped = decode_scoped_pdu(buf, sec_end, end)
    return V3Message(msg_id, max_size, flags, usm, scoped, None, auth_offset)


def decode_message(data: bytes) -> CommunityMessage | V3Message:
    """Decode one datagram. Raises SnmpCodecError on anything malformed."""
    start, end = ber.expect_tlv(data, 0, len(data), ber.TAG_SEQUENCE, "message")
    if end != len(data):
        raise SnmpCodecError(f"{len(data) - end} bytes after the message")
    version, cursor = _int(data, start, end, "version")
    if version == SnmpVersion.V3:
        return _decode_v3(data, cursor, end)
    if version not in (SnmpVersion.V1, SnmpVersion.V2C):
        raise SnmpCodecError(f"unsupported SNMP version {version}")
    community, cursor = _octets(data, cursor, end, "community")
    pdu, cursor = decode_pdu(data, cursor, end)
    if cursor != end:
        raise SnmpCodecError("message has trailing bytes")
    return CommunityMessage(community, pdu, SnmpVersion(version))
