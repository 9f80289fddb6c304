"""Our codec against pysnmp's (pyasn1) as the reference oracle, by hypothesis.

Messages we encode decode identically with pysnmp, pysnmp's encodings decode
identically with ours, and the bytes are the same.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api
from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

from drivers.snmp.ber import Oid
from drivers.snmp.message import (
    CommunityMessage,
    MsgFlags,
    ScopedPdu,
    UsmParams,
    V3Message,
    decode_message,
    encode_message,
    encode_v3,
)
from drivers.snmp.protocol_pdu import Pdu, PduType, Tag, Value, VarBind

P = api.v2c

_PDU_CLASSES: dict[PduType, Any] = {
    PduType.GET: P.GetRequestPDU,
    PduType.GET_NEXT: P.GetNextRequestPDU,
    PduType.RESPONSE: P.ResponsePDU,
    PduType.SET: P.SetRequestPDU,
    PduType.GET_BULK: P.GetBulkRequestPDU,
    PduType.INFORM: P.InformRequestPDU,
    PduType.TRAP_V2: P.SNMPv2TrapPDU,
    PduType.REPORT: P.ReportPDU,
}
_VALUE_CLASSES: dict[Tag, Any] = {
    Tag.INTEGER: P.Integer,
    Tag.OCTET_STRING: P.OctetString,
    Tag.OID: P.ObjectIdentifier,
    Tag.IP_ADDRESS: P.IpAddress,
    Tag.COUNTER32: P.Counter32,
    Tag.GAUGE32: P.Gauge32,
    Tag.TIMETICKS: P.TimeTicks,
    Tag.OPAQUE: P.Opaque,
    Tag.COUNTER64: P.Counter64,
}
_EMPTY_CLASSES: dict[Tag, Any] = {
    Tag.NULL: P.Null,
    Tag.NO_SUCH_OBJECT: P.NoSuchObject,
    Tag.NO_SUCH_INSTANCE: P.NoSuchInstance,
    Tag.END_OF_MIB_VIEW: P.EndOfMibView,
}

# ---------------------------------------------------------------- strategies

arcs = st.integers(0, 2**32 - 1)
small_arcs = st.integers(0, 300)
oids = st.builds(
    lambda first, second, rest: (first, second, *rest),
    st.integers(0, 1),
    st.integers(0, 39),
    st.lists(st.one_of(small_arcs, arcs), max_size=20),
) | st.builds(
    lambda second, rest: (2, second, *rest), st.integers(0, 2000), st.lists(arcs, max_size=8)
)
int32 = st.integers(-(2**31), 2**31 - 1)


def _values() -> st.SearchStrategy[tuple[Tag, Value]]:
    return st.one_of(
        st.tuples(st.just(Tag.INTEGER), int32),
        st.tuples(st.just(Tag.OCTET_STRING), st.binary(max_size=300)),
        st.tuples(st.just(Tag.OPAQUE), st.binary(max_size=20)),
        st.tuples(st.just(Tag.OID), oids),
        st.tuples(st.just(Tag.IP_ADDRESS), st.binary(min_size=4, max_size=4)),
        st.tuples(
            st.sampled_from([Tag.COUNTER32, Tag.GAUGE32, Tag.TIMETICKS]), st.integers(0, 2**32 - 1)
        ),
        st.tuples(st.just(Tag.COUNTER64), st.integers(0, 2**64 - 1)),
        st.tuples(st.sampled_from(list(_EMPTY_CLASSES)), st.none()),
    )


varbinds = st.builds(lambda oid, tv: VarBind(oid, tv[0], tv[1]), oids, _values())
pdus = st.builds(
    Pdu,
    st.sampled_from(list(_PDU_CLASSES)),
    int32,
    st.integers(0, 18),
    st.integers(0, 2**31 - 1),
    st.lists(varbinds, max_size=12).map(tuple),
)
messages = st.builds(CommunityMessage, st.binary(max_size=40), pdus)

# ---------------------------------------------------------------- conversion


def to_pysnmp(msg: CommunityMessage) -> Any:
    pdu = _PDU_CLASSES[msg.pdu.type]()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, msg.pdu.request_id)
    if msg.pdu.type is PduType.GET_BULK:
        P.apiBulkPDU.set_non_repeaters(pdu, msg.pdu.error_status)
        P.apiBulkPDU.set_max_repetitions(pdu, msg.pdu.error_index)
    else:
        P.apiPDU.set_error_status(pdu, msg.pdu.error_status)
        P.apiPDU.set_error_index(pdu, msg.pdu.error_index)
    binds = []
    for vb in msg.pdu.varbinds:
        if vb.tag in _EMPTY_CLASSES:
            binds.append((vb.oid, _EMPTY_CLASSES[vb.tag]("")))
        else:
            binds.append((vb.oid, _VALUE_CLASSES[vb.tag](vb.value)))
    P.apiPDU.set_varbinds(pdu, binds)
    out = P.Message()
    P.apiMessage.set_defaults(out)
    P.apiMessage.set_community(out, msg.community)
    P.apiMessage.set_pdu(out, pdu)
    return out


def from_pysnmp(message: Any) -> CommunityMessage:
    pdu = P.apiMessage.get_pdu(message)
    tag = pdu.tagSet.superTags[-1]
    pdu_type = PduType(tag.tagClass | tag.tagFormat | tag.tagId)
    varbinds = []
    for name, value in P.apiPDU.get_varbinds(pdu):
        vtag = value.tagSet.superTags[-1]
        kind = Tag(vtag.tagClass | vtag.tagFormat | vtag.tagId)
        py: Value
        if kind in _EMPTY_CLASSES:
            py = None
        elif kind in (Tag.OCTET_STRING, Tag.OPAQUE, Tag.IP_ADDRESS):
            py = bytes(value)
        elif kind is Tag.OID:
            py = tuple(value)
        else:
            py = int(value)
        varbinds.append(VarBind(tuple(name), kind, py))
    # By position: pysnmp's getters second-guess error-index against the varbinds.
    status = int(pdu.getComponentByPosition(1))
    index = int(pdu.getComponentByPosition(2))
    return CommunityMessage(
        bytes(P.apiMessage.get_community(message)),
        Pdu(pdu_type, int(P.apiPDU.get_request_id(pdu)), status, index, tuple(varbinds)),
    )


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(messages)
def test_our_encoding_decodes_identically_with_pysnmp(msg: CommunityMessage) -> None:
    raw = encode_message(msg)
    decoded, rest = decoder.decode(raw, asn1Spec=P.Message())
    assert rest == b""
    assert from_pysnmp(decoded) == msg


@settings(max_examples=300, deadline=None)
@given(messages)
def test_pysnmp_encoding_decodes_identically_with_ours(msg: CommunityMessage) -> None:
    raw = encoder.encode(to_pysnmp(msg))
    assert decode_message(raw) == msg
    # Bytes may differ: pyasn1 pads some negative integers (-128 -> ff 80),
    # which BER allows on decode; we emit the minimal form.


def _pysnmp_v3(msg: V3Message) -> Any:
    decoded, rest = decoder.decode(encode_v3(msg)[0], asn1Spec=SNMPv3Message())
    assert rest == b""
    return decoded


usm_params = st.builds(
    UsmParams,
    st.binary(max_size=32),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**31 - 1),
    st.binary(max_size=32),
    st.binary(max_size=24),
    st.binary(max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(
    msg_id=st.integers(0, 2**31 - 1),
    max_size=st.integers(484, 2**31 - 1),
    flags=st.sampled_from([0, 1, 3, 4, 5, 7]),
    usm=usm_params,
    pdu=pdus,
    context=st.binary(max_size=32),
)
def test_v3_framing_agrees_with_pysnmp(
    msg_id: int, max_size: int, flags: int, usm: UsmParams, pdu: Pdu, context: bytes
) -> None:
    msg = V3Message(msg_id, max_size, MsgFlags(flags), usm, ScopedPdu(context, b"ctx", pdu))
    theirs = _pysnmp_v3(msg)
    header = theirs["msgGlobalData"]
    assert int(header["msgID"]) == msg_id
    assert int(header["msgMaxSize"]) == max_size
    assert bytes(header["msgFlags"]) == bytes((flags,))
    sec, _ = decoder.decode(
        bytes(theirs["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters()
    )
    assert bytes(sec["msgAuthoritativeEngineId"]) == usm.engine_id
    assert int(sec["msgAuthoritativeEngineBoots"]) == usm.engine_boots
    assert int(sec["msgAuthoritativeEngineTime"]) == usm.engine_time
    assert bytes(sec["msgUserName"]) == usm.user_name
    assert bytes(sec["msgAuthenticationParameters"]) == usm.auth_params
    assert bytes(sec["msgPrivacyParameters"]) == usm.priv_params
    scoped = theirs["msgData"]["plaintext"]
    assert bytes(scoped["contextEngineId"]) == context
    # And back: pysnmp's bytes decode to the same message with ours.
    assert decode_message(encoder.encode(theirs)) == msg


def test_conversion_helpers_notice_a_difference() -> None:
    """The oracle is not vacuous: a changed value shows up as a mismatch."""
    oid: Oid = (1, 3, 6, 1)
    msg = CommunityMessage(b"c", Pdu(PduType.GET, 1, 0, 0, (VarBind.integer(oid, 5),)))
    other = CommunityMessage(b"c", Pdu(PduType.GET, 1, 0, 0, (VarBind(oid, Tag.GAUGE32, 5),)))
    decoded, _ = decoder.decode(encode_message(msg), asn1Spec=P.Message())
    assert from_pysnmp(decoded) == msg
    assert from_pysnmp(decoded) != other
