"""BER codec: known byte vectors and the errors malformed input must raise."""

from __future__ import annotations

import pytest

from drivers.errors import FrameError
from drivers.snmp import ber
from drivers.snmp.ber import SnmpCodecError, parse_oid
from drivers.snmp.message import CommunityMessage, decode_message, encode_message
from drivers.snmp.protocol_pdu import Pdu, PduType, Tag, VarBind, decode_value, encode_value

# snmpget -v2c -c public ... 1.3.6.1.2.1.1.1.0, request-id 5 (checked against pysnmp too)
GET_SYSDESCR = bytes.fromhex(
    "302602010104067075626c6963a019020105020100020100300e300c06082b060102010101000500"
)


def test_get_request_bytes_match_the_reference_encoding() -> None:
    msg = CommunityMessage(
        b"public", Pdu(PduType.GET, 5, 0, 0, (VarBind.null(parse_oid("1.3.6.1.2.1.1.1.0")),))
    )
    assert encode_message(msg) == GET_SYSDESCR
    assert decode_message(GET_SYSDESCR) == msg


@pytest.mark.parametrize(
    ("value", "content"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "0080"),
        (256, "0100"),
        (-1, "ff"),
        (-128, "80"),
        (-129, "ff7f"),
        (2**31 - 1, "7fffffff"),
        (-(2**31), "80000000"),
    ],
)
def test_integer_minimal_twos_complement(value: int, content: str) -> None:
    encoded = ber.encode_integer(value)
    assert encoded == bytes((0x02, len(content) // 2)) + bytes.fromhex(content)
    assert decode_value(encoded, 0, len(encoded)) == (Tag.INTEGER, value, len(encoded))


def test_unsigned_types_get_a_leading_zero_when_the_high_bit_is_set() -> None:
    assert encode_value(Tag.COUNTER32, 2**32 - 1) == bytes.fromhex("410500ffffffff")
    assert encode_value(Tag.COUNTER64, 2**64 - 1) == bytes.fromhex("460900ffffffffffffffff")
    with pytest.raises(SnmpCodecError, match="out of range"):
        encode_value(Tag.GAUGE32, 2**32)


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("1.3.6.1.4.1.318.1.1.26", "2b06010401823e01011a"),
        ("2.999.3", "883703"),
        ("0.0", "00"),
        ("1.3.4294967295", "2b8fffffff7f"),
    ],
)
def test_oid_vectors(text: str, content: str) -> None:
    oid = parse_oid(text)
    raw = bytes.fromhex(content)
    assert ber.encode_oid_content(oid) == raw
    assert ber.decode_oid(raw, 0, len(raw)) == oid


def test_long_form_lengths() -> None:
    assert ber.encode_length(127) == b"\x7f"
    assert ber.encode_length(128) == b"\x81\x80"
    assert ber.encode_length(300) == b"\x82\x01\x2c"
    payload = b"x" * 300
    assert ber.read_tlv(ber.tlv(0x04, payload), 0, 304) == (0x04, 4, 304)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\x30", "truncated"),
        (b"\x30\x80\x00\x00", "indefinite length"),
        (b"\x30\x85\x01\x02\x03\x04\x05", "length of 5 octets"),
        (b"\x30\x05\x02\x01", "truncated"),
        (b"\x1f\x01\x00", "multi-byte tag"),
        (GET_SYSDESCR + b"\x00", "bytes after the message"),
        (GET_SYSDESCR[:-1], "truncated"),
        (bytes.fromhex("300602010502010a"), "unsupported SNMP version 5"),
        (bytes.fromhex("300402010104"), "truncated"),
    ],
)
def test_malformed_messages_raise_the_codec_error(data: bytes, problem: str) -> None:
    with pytest.raises(SnmpCodecError, match=problem):
        decode_message(data)


def test_codec_error_is_a_frame_error() -> None:
    assert issubclass(SnmpCodecError, FrameError)


def test_oid_with_padding_or_open_arc_is_rejected() -> None:
    with pytest.raises(SnmpCodecError, match="0x80 pad"):
        ber.decode_oid(b"\x2b\x80\x01", 0, 3)
    with pytest.raises(SnmpCodecError, match="inside an arc"):
        ber.decode_oid(b"\x2b\x81", 0, 2)
    with pytest.raises(SnmpCodecError, match="empty"):
        ber.decode_oid(b"", 0, 0)


def test_values_out_of_their_type_range_are_rejected() -> None:
    big_int = b"\x02\x05\x01\x00\x00\x00\x00"
    with pytest.raises(SnmpCodecError, match="Integer32"):
        decode_value(big_int, 0, len(big_int))
    negative_counter = b"\x41\x01\xff"
    with pytest.raises(SnmpCodecError, match="out of range"):
        decode_value(negative_counter, 0, 3)
    bad_ip = b"\x40\x03\x01\x02\x03"
    with pytest.raises(SnmpCodecError, match="IpAddress"):
        decode_value(bad_ip, 0, 5)
    null_with_content = b"\x05\x01\x00"
    with pytest.raises(SnmpCodecError, match="NULL with 1 content"):
        decode_value(null_with_content, 0, 3)
    unknown = b"\x47\x01\x00"
    with pytest.raises(SnmpCodecError, match="unsupported value tag 0x47"):
        decode_value(unknown, 0, 3)


def test_parse_oid_rejects_text() -> None:
    with pytest.raises(SnmpCodecError, match="not a dotted OID"):
        parse_oid("1.3.six")
    with pytest.raises(SnmpCodecError, match="first arcs"):
        parse_oid("3.1")
