"""USM: RFC 3414 A.3 key vectors, HMAC and AES checked against pysnmp's implementations."""

from __future__ import annotations

from hashlib import sha1, sha256

import pytest
from pyasn1.type import univ
from pysnmp.proto.secmod.rfc3414 import localkey
from pysnmp.proto.secmod.rfc3414.auth.hmacsha import HmacSha
from pysnmp.proto.secmod.rfc3826.priv.aes import Aes
from pysnmp.proto.secmod.rfc7860.auth.hmacsha2 import HmacSha2

from drivers.errors import ConfigurationError
from drivers.snmp import usm
from drivers.snmp.ber import parse_oid
from drivers.snmp.message import MsgFlags, ScopedPdu, V3Message, decode_message
from drivers.snmp.protocol_pdu import Pdu, PduType, VarBind, encode_pdu
from drivers.snmp.usm import AuthProtocol, PrivProtocol
from drivers.snmp.v3 import SaltCounter, UsmFailure, UsmUser, protect, unprotect

RFC_ENGINE = bytes.fromhex("000000000000000000000002")


def test_rfc3414_a32_sha_password_to_key_and_localization() -> None:
    key = usm.password_to_key(b"maplesyrup", AuthProtocol.HMAC_SHA_96)
    assert key.hex() == "9fb5cc0381497b3793528939ff788d5d79145211"
    local = usm.localize_key(key, RFC_ENGINE, AuthProtocol.HMAC_SHA_96)
    assert local.hex() == "6695febc9288e36282235fc7151f128497b38f3f"


def test_sha256_keys_match_pysnmp() -> None:
    ours = usm.localized_key("maplesyrup", RFC_ENGINE, AuthProtocol.HMAC_SHA256_192)
    ku = localkey.hash_passphrase(univ.OctetString(b"maplesyrup"), sha256)
    theirs = localkey.localize_key(ku, univ.OctetString(RFC_ENGINE), sha256)
    assert ours == bytes(theirs)
    assert len(ours) == 32


def test_short_passphrase_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="shorter than 8"):
        usm.password_to_key(b"short", AuthProtocol.HMAC_SHA_96)


ENGINE = b"\x80\x00\x01\x3e\x04usm-test"
GET = Pdu(PduType.GET, 42, 0, 0, (VarBind.null(parse_oid("1.3.6.1.2.1.1.5.0")),))


def _signed(proto: AuthProtocol) -> tuple[bytes, bytes, UsmUser]:
    user = UsmUser("alice", proto, "alice-auth-pass")
    keys = user.localize(ENGINE)
    raw = protect(
        ScopedPdu(ENGINE, b"", GET),
        msg_id=42,
        flags=MsgFlags.AUTH | MsgFlags.REPORTABLE,
        engine_id=ENGINE,
        engine_boots=3,
        engine_time=1000,
        user_name=b"alice",
        keys=keys,
    )
    return raw, keys.auth_key, user


@pytest.mark.parametrize(
    ("proto", "pysnmp_auth"),
    [
        (AuthProtocol.HMAC_SHA_96, HmacSha()),
        (AuthProtocol.HMAC_SHA256_192, HmacSha2(HmacSha2.SHA256_SERVICE_ID)),
    ],
)
def test_digest_matches_pysnmp(proto: AuthProtocol, pysnmp_auth: object) -> None:
    raw, auth_key, _ = _signed(proto)
    msg = decode_message(raw)
    assert isinstance(msg, V3Message)
    n = proto.digest_len
    zeroed = raw[: msg.auth_offset] + bytes(n) + raw[msg.auth_offset + n :]
    theirs = pysnmp_auth.authenticate_outgoing_message(univ.OctetString(auth_key), zeroed)  # type: ignore[attr-defined]
    assert theirs == raw
    assert usm.verify(proto, auth_key, raw, msg.auth_offset)


def test_aes_ciphertext_decrypts_with_pysnmp() -> None:
    user = UsmUser(
        "bob", AuthProtocol.HMAC_SHA_96, "bob-auth-pass", PrivProtocol.AES128, "bob-priv-pass"
    )
    keys = user.localize(ENGINE)
    raw = protect(
        ScopedPdu(ENGINE, b"", GET),
        msg_id=7,
        flags=MsgFlags.AUTH | MsgFlags.PRIV,
        engine_id=ENGINE,
        engine_boots=5,
        engine_time=77,
        user_name=b"bob",
        keys=keys,
        salt=SaltCounter(),
    )
    msg = decode_message(raw)
    assert isinstance(msg, V3Message)
    assert msg.encrypted_pdu is not None
    pysnmp_key = Aes().localize_key(
        HmacSha.SERVICE_ID,
        Aes().hash_passphrase(HmacSha.SERVICE_ID, univ.OctetString(b"bob-priv-pass")),
        univ.OctetString(ENGINE),
    )
    assert bytes(pysnmp_key) == keys.priv_key[:16]
    plain = Aes().decrypt_data(
        pysnmp_key, (5, 77, list(msg.usm.priv_params)), univ.OctetString(msg.encrypted_pdu)
    )
    assert plain[-len(encode_pdu(GET)) :] == encode_pdu(GET)
    assert unprotect(msg, raw, keys).pdu == GET


def test_wrong_passphrase_is_a_wrong_digest() -> None:
    raw, _, _ = _signed(AuthProtocol.HMAC_SHA_96)
    msg = decode_message(raw)
    assert isinstance(msg, V3Message)
    other = UsmUser("alice", AuthProtocol.HMAC_SHA_96, "not-the-pass").localize(ENGINE)
    with pytest.raises(UsmFailure, match="wrong digest") as info:
        unprotect(msg, raw, other)
    assert info.value.stat is usm.UsmStat.WRONG_DIGESTS


def test_sha1_is_the_rfc_hash() -> None:
    """Guard against a silent swap of the hash behind HMAC-SHA-96."""
    key = usm.password_to_key(b"maplesyrup", AuthProtocol.HMAC_SHA_96)
    expanded = (b"maplesyrup" * 104858)[:1048576]
    assert key == sha1(expanded).digest()  # noqa: S324 - the RFC algorithm is the point


def test_protocol_names_parse() -> None:
    assert AuthProtocol.parse("SHA") is AuthProtocol.HMAC_SHA_96
    assert AuthProtocol.parse("sha-256") is AuthProtocol.HMAC_SHA256_192
    assert PrivProtocol.parse("AES") is PrivProtocol.AES128
    with pytest.raises(ConfigurationError, match="MD5"):
        AuthProtocol.parse("MD5")
    with pytest.raises(ConfigurationError, match="DES"):
        PrivProtocol.parse("DES")
