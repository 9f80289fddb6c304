"""Fuzzing the decoders: whatever arrives, only SnmpCodecError (or a clean None) comes out."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.snmp.ber import SnmpCodecError, parse_oid
from drivers.snmp.message import (
    CommunityMessage,
    MsgFlags,
    ScopedPdu,
    decode_message,
    encode_message,
)
from drivers.snmp.protocol_pdu import Pdu, PduType, Tag, VarBind
from drivers.snmp.usm import AuthProtocol, PrivProtocol
from drivers.snmp.v3 import SaltCounter, UsmFailure, UsmUser, protect, unprotect
from sim_devices.snmp_agent import AgentConfig, Mib, SnmpAgent

pytestmark = pytest.mark.fuzz

SYS_DESCR = parse_oid("1.3.6.1.2.1.1.1.0")
USER = UsmUser(
    "fuzz", AuthProtocol.HMAC_SHA_96, "fuzz-auth-pass", PrivProtocol.AES128, "fuzz-priv-pass"
)
ENGINE = b"\x80\x00\x01\x3e\x04fuzz"
KEYS = USER.localize(ENGINE)


def _seeds() -> list[bytes]:
    vbs = (
        VarBind.integer(SYS_DESCR, -5),
        VarBind.octets(parse_oid("1.3.6.1.2.1.1.5.0"), b"name"),
        VarBind(parse_oid("1.3.6.1.2.1.1.3.0"), Tag.TIMETICKS, 12345),
        VarBind(parse_oid("1.3.6.1.2.1.1.2.0"), Tag.OID, parse_oid("1.3.6.1.4.1.318")),
        VarBind(parse_oid("1.3.6.1.2.1.2.0"), Tag.NO_SUCH_INSTANCE),
    )
    v2c = encode_message(CommunityMessage(b"public", Pdu(PduType.RESPONSE, 77, 0, 0, vbs)))
    v3 = protect(
        ScopedPdu(ENGINE, b"", Pdu(PduType.GET, 9, 0, 0, vbs[:2])),
        msg_id=9,
        flags=MsgFlags.AUTH | MsgFlags.PRIV | MsgFlags.REPORTABLE,
        engine_id=ENGINE,
        engine_boots=1,
        engine_time=100,
        user_name=b"fuzz",
        keys=KEYS,
        salt=SaltCounter(),
    )
    v3_plain = protect(
        ScopedPdu(ENGINE, b"", Pdu(PduType.GET, 10, 0, 0, vbs[:1])),
        msg_id=10,
        flags=MsgFlags.AUTH,
        engine_id=ENGINE,
        engine_boots=1,
        engine_time=100,
        user_name=b"fuzz",
        keys=KEYS,
    )
    return [v2c, v3, v3_plain]


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, 0x30, 0x02]))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
    return bytes(data)


def _decode_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(SnmpCodecError):
        decode_message(data)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_codec_error(data: bytes) -> None:
    _decode_only_codec_error(data)


@settings(max_examples=3000, deadline=None)
@given(mutated())
def test_mutated_packets_raise_only_the_codec_error(data: bytes) -> None:
    _decode_only_codec_error(data)


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_mutated_v3_packets_fail_security_cleanly(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except SnmpCodecError:
        return
    if isinstance(msg, CommunityMessage):
        return
    with contextlib.suppress(UsmFailure):
        unprotect(msg, data, KEYS)


def test_seeds_are_valid_so_mutations_start_from_real_packets() -> None:
    for seed in SEEDS:
        decode_message(seed)
    msg = decode_message(SEEDS[1])
    assert not isinstance(msg, CommunityMessage)
    assert unprotect(msg, SEEDS[1], KEYS).pdu.request_id == 9
    tampered = bytearray(SEEDS[1])
    tampered[-1] ^= 0x01
    bad = decode_message(bytes(tampered))
    assert not isinstance(bad, CommunityMessage)
    with pytest.raises(UsmFailure, match="wrong digest"):
        unprotect(bad, bytes(tampered), KEYS)


@pytest.fixture
async def agent() -> SnmpAgent:
    mib = Mib()
    mib.add_constant(SYS_DESCR, Tag.OCTET_STRING, b"fuzz agent")
    return SnmpAgent(mib, AgentConfig(users=(USER,), engine_id=ENGINE))


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(mutated(), st.binary(max_size=120)))
async def test_agent_answers_or_stays_silent_on_garbage(agent: SnmpAgent, data: bytes) -> None:
    reply = agent.handle(data)
    assert reply is None or isinstance(decode_message(reply), object)
    await asyncio.sleep(0)
