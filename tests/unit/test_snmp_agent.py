"""The simulated agent's answers, request bytes in, reply bytes out (no sockets)."""

from __future__ import annotations

import pytest

from drivers.snmp.ber import Oid, parse_oid
from drivers.snmp.message import (
    CommunityMessage,
    SnmpVersion,
    V3Message,
    decode_message,
    encode_message,
)
from drivers.snmp.protocol_pdu import ErrorStatus, Pdu, PduType, Tag, VarBind
from drivers.snmp.usm import UsmStat
from drivers.snmp.v3 import UsmUser
from sim_devices.snmp_agent import AgentConfig, Mib, SnmpAgent

SYS = parse_oid("1.3.6.1.2.1.1")
COLUMN = parse_oid("1.3.6.1.4.1.99.1.2")


async def make_agent(max_message_size: int = 65507) -> SnmpAgent:
    mib = Mib()
    mib.add_constant((*SYS, 1, 0), Tag.OCTET_STRING, b"descr")
    store = {"name": b"agent"}

    def check(tag: Tag, value: object) -> ErrorStatus:
        return ErrorStatus.NO_ERROR if tag is Tag.OCTET_STRING else ErrorStatus.WRONG_TYPE

    def apply(value: object) -> None:
        assert isinstance(value, bytes)
        store["name"] = value

    mib.add((*SYS, 5, 0), lambda: (Tag.OCTET_STRING, store["name"]), check=check, apply=apply)
    for row in range(1, 101):
        mib.add_constant((*COLUMN, row), Tag.INTEGER, row * 10)
    return SnmpAgent(mib, AgentConfig(max_message_size=max_message_size, users=(UsmUser("u"),)))


def ask(agent: SnmpAgent, pdu: Pdu, community: bytes = b"public") -> Pdu | None:
    reply = agent.handle(encode_message(CommunityMessage(community, pdu)))
    if reply is None:
        return None
    msg = decode_message(reply)
    assert isinstance(msg, CommunityMessage)
    assert msg.pdu.request_id == pdu.request_id
    return msg.pdu


def nulls(*oids: Oid) -> tuple[VarBind, ...]:
    return tuple(VarBind.null(o) for o in oids)


async def test_get_answers_values_and_the_right_exception() -> None:
    agent = await make_agent()
    pdu = ask(
        agent, Pdu(PduType.GET, 1, 0, 0, nulls((*SYS, 1, 0), (*SYS, 1, 1), (*SYS, 9, 0), (1, 3, 7)))
    )
    assert pdu is not None
    assert [vb.tag for vb in pdu.varbinds] == [
        Tag.OCTET_STRING,
        Tag.NO_SUCH_INSTANCE,  # the object exists, this instance does not
        Tag.NO_SUCH_OBJECT,
        Tag.NO_SUCH_OBJECT,
    ]


async def test_get_next_walks_in_order_and_ends_with_end_of_mib_view() -> None:
    agent = await make_agent()
    pdu = ask(agent, Pdu(PduType.GET_NEXT, 2, 0, 0, nulls(SYS, (*COLUMN, 100))))
    assert pdu is not None
    assert pdu.varbinds[0] == VarBind((*SYS, 1, 0), Tag.OCTET_STRING, b"descr")
    assert pdu.varbinds[1].tag is Tag.END_OF_MIB_VIEW


async def test_get_bulk_repeats_and_honours_non_repeaters() -> None:
    agent = await make_agent()
    pdu = ask(agent, Pdu(PduType.GET_BULK, 3, 1, 5, nulls(SYS, COLUMN)))
    assert pdu is not None
    assert pdu.varbinds[0].oid == (*SYS, 1, 0)
    assert [vb.value for vb in pdu.varbinds[1:]] == [10, 20, 30, 40, 50]


async def test_get_bulk_is_cut_to_the_message_size() -> None:
    agent = await make_agent(max_message_size=484)
    pdu = ask(agent, Pdu(PduType.GET_BULK, 4, 0, 100, nulls(COLUMN)))
    assert pdu is not None
    assert pdu.error_status == 0
    assert 5 < len(pdu.varbinds) < 100
    assert len(encode_message(CommunityMessage(b"public", pdu))) <= 484


async def test_get_too_big_for_one_message_is_too_big() -> None:
    agent = await make_agent(max_message_size=484)
    pdu = ask(agent, Pdu(PduType.GET, 5, 0, 0, nulls(*((*COLUMN, r) for r in range(1, 101)))))
    assert pdu is not None
    assert pdu.error_status == ErrorStatus.TOO_BIG
    assert pdu.varbinds == ()


async def test_set_checks_access_type_and_writability() -> None:
    agent = await make_agent()
    name = (*SYS, 5, 0)
    ok = ask(agent, Pdu(PduType.SET, 6, 0, 0, (VarBind.octets(name, b"new"),)), b"private")
    assert ok is not None
    assert ok.error_status == 0
    assert agent.mib.get(name).value == b"new"
    read_only = ask(agent, Pdu(PduType.SET, 7, 0, 0, (VarBind.octets(name, b"x"),)), b"public")
    assert read_only is not None
    assert read_only.status is ErrorStatus.NO_ACCESS
    wrong_type = ask(
        agent,
        Pdu(PduType.SET, 8, 0, 0, (VarBind.octets(name, b"y"), VarBind.integer(name, 1))),
        b"private",
    )
    assert wrong_type is not None
    assert (wrong_type.status, wrong_type.error_index) == (ErrorStatus.WRONG_TYPE, 2)
    assert agent.mib.get(name).value == b"new"  # nothing applied when one varbind fails
    not_writable = ask(
        agent, Pdu(PduType.SET, 9, 0, 0, (VarBind.octets((*SYS, 1, 0), b"z"),)), b"private"
    )
    assert not_writable is not None
    assert not_writable.status is ErrorStatus.NOT_WRITABLE


@pytest.mark.parametrize(
    "raw",
    [
        encode_message(CommunityMessage(b"wrong", Pdu(PduType.GET, 1, 0, 0, nulls((*SYS, 1, 0))))),
        encode_message(CommunityMessage(b"public", Pdu(PduType.GET, 1, 0, 0, ()), SnmpVersion.V1)),
        encode_message(CommunityMessage(b"public", Pdu(PduType.RESPONSE, 1, 0, 0, ()))),
        b"\x30\x03\x02\x01\x01",
        b"random garbage",
    ],
    ids=["wrong-community", "v1", "response-pdu", "truncated", "garbage"],
)
async def test_silence_for_what_it_should_not_answer(raw: bytes) -> None:
    agent = await make_agent()
    assert agent.handle(raw) is None
    assert agent.stats.dropped == 1


async def test_v3_discovery_draws_an_unknown_engine_id_report() -> None:
    from drivers.snmp.message import MsgFlags, ScopedPdu
    from drivers.snmp.v3 import protect

    agent = await make_agent()
    probe = protect(
        ScopedPdu(b"", b"", Pdu(PduType.GET, 11)),
        msg_id=11,
        flags=MsgFlags.REPORTABLE,
        engine_id=b"",
        engine_boots=0,
        engine_time=0,
        user_name=b"",
        keys=None,
    )
    reply = agent.handle(probe)
    assert reply is not None
    msg = decode_message(reply)
    assert isinstance(msg, V3Message)
    assert msg.msg_id == 11
    assert msg.usm.engine_id == agent.config.engine_id
    assert msg.usm.engine_boots == 1
    assert msg.scoped_pdu is not None
    assert msg.scoped_pdu.pdu.type is PduType.REPORT
    assert msg.scoped_pdu.pdu.varbinds[0].oid == UsmStat.UNKNOWN_ENGINE_IDS.oid
