"""SNMPv3 USM message processing shared by the client and the simulated agent.

`protect` turns a scoped PDU into signed (and encrypted) bytes; `unprotect`
checks a received message and returns its scoped PDU. Failures raise
UsmFailure carrying the usmStats counter an agent would report.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from drivers.snmp import usm
from drivers.snmp.ber import SnmpCodecError
from drivers.snmp.message import (
    MAX_MESSAGE_SIZE,
    MsgFlags,
    ScopedPdu,
    UsmParams,
    V3Message,
    decode_scoped_pdu,
    encode_scoped_pdu,
    encode_v3,
)
from drivers.snmp.usm import AuthProtocol, PrivProtocol, UsmStat


class UsmFailure(Exception):
    """A v3 message failed security processing; stat names the usmStats counter."""

    def __init__(self, stat: UsmStat, message: str) -> None:
        super().__init__(message)
        self.stat = stat


@dataclass(frozen=True, slots=True)
class UsmUser:
    """A USM user as configured: passphrases, not keys."""

    name: str
    auth_protocol: AuthProtocol = AuthProtocol.NONE
    auth_passphrase: str = ""
    priv_protocol: PrivProtocol = PrivProtocol.NONE
    priv_passphrase: str = ""

    @property
    def flags(self) -> MsgFlags:
        flags = MsgFlags(0)
        if self.auth_protocol is not AuthProtocol.NONE:
            flags |= MsgFlags.AUTH
            if self.priv_protocol is not PrivProtocol.NONE:
                flags |= MsgFlags.PRIV
        return flags

    def localize(self, engine_id: bytes) -> LocalizedUser:
        auth_key = priv_key = b""
        if self.auth_protocol is not AuthProtocol.NONE:
            auth_key = usm.localized_key(self.auth_passphrase, engine_id, self.auth_protocol)
            if self.priv_protocol is not PrivProtocol.NONE:
                # RFC 3826: the privacy key is localized with the auth hash.
                priv_key = usm.localized_key(self.priv_passphrase, engine_id, self.auth_protocol)
        return LocalizedUser(self, engine_id, auth_key, priv_key)


@dataclass(frozen=True, slots=True)
class LocalizedUser:
    user: UsmUser
    engine_id: bytes
    auth_key: bytes
    priv_key: bytes


class SaltCounter:
    """64-bit AES salt: random start, then incremented (RFC 3826 3.1.1.1)."""

    def __init__(self) -> None:
        self._next = secrets.randbits(64)

    def take(self) -> bytes:
        value = self._next
        self._next = (value + 1) & 0xFFFFFFFFFFFFFFFF
        return value.to_bytes(8, "big")


def protect(
    scoped: ScopedPdu,
    *,
    msg_id: int,
    flags: MsgFlags,
    engine_id: bytes,
    engine_boots: int,
    engine_time: int,
    user_name: bytes,
    keys: LocalizedUser | None,
    salt: SaltCounter | None = None,
    max_size: int = MAX_MESSAGE_SIZE,
    encoded_varbinds: bytes | None = None,
) -> bytes:
    """Encode a v3 message at the security level in flags (keys needed for auth/priv)."""
    auth_params = priv_params = b""
    encrypted: bytes | None = None
    plain: ScopedPdu | None = scoped
    if flags & MsgFlags.AUTH:
        if keys is None:
            raise ValueError("authenticated message needs localized keys")
        auth_params = bytes(keys.user.auth_protocol.digest_len)
        if flags & MsgFlags.PRIV:
            priv_params = (salt or SaltCounter()).take()
            encrypted = usm.aes_encrypt(
                keys.priv_key,
                engine_boots,
                engine_time,
                priv_params,
                encode_scoped_pdu(scoped, encoded_varbinds),
            )
            plain = None
    params = UsmParams(engine_id, engine_boots, engine_time, user_name, auth_params, priv_params)
    message = V3Message(msg_id, max_size, flags, params, plain, encrypted)
    raw, auth_offset = encode_v3(message, encoded_varbinds)
    if flags & MsgFlags.AUTH and keys is not None:
        raw = usm.sign(keys.user.auth_protocol, keys.auth_key, raw, auth_offset)
    return raw


def unprotect(msg: V3Message, raw: bytes, keys: LocalizedUser | None) -> ScopedPdu:
    """Authenticate and decrypt a received message at its own security level."""
    if msg.flags & MsgFlags.AUTH:
        if keys is None or keys.user.auth_protocol is AuthProtocol.NONE:
            raise UsmFailure(UsmStat.UNSUPPORTED_SEC_LEVELS, "authentication not configured")
        proto = keys.user.auth_protocol
        if len(msg.usm.auth_params) != proto.digest_len or not usm.verify(
            proto, keys.auth_key, raw, msg.auth_offset
        ):
            raise UsmFailure(UsmStat.WRONG_DIGESTS, "wrong digest")
    if msg.flags & MsgFlags.PRIV:
        if keys is None or keys.user.priv_protocol is PrivProtocol.NONE:
            raise UsmFailure(UsmStat.UNSUPPORTED_SEC_LEVELS, "privacy not configured")
        if msg.encrypted_pdu is None or len(msg.usm.priv_params) != 8:
            raise UsmFailure(UsmStat.DECRYPTION_ERRORS, "no encrypted data or bad salt")
        plain = usm.aes_decrypt(
            keys.priv_key,
            msg.usm.engine_boots,
            msg.usm.engine_time,
            msg.usm.priv_params,
            msg.encrypted_pdu,
        )
        try:
            return decode_scoped_pdu(plain, 0, len(plain))
        except SnmpCodecError:
            raise UsmFailure(
                UsmStat.DECRYPTION_ERRORS, "decrypted data is not a scopedPDU"
            ) from None
    if msg.scoped_pdu is None:
        raise UsmFailure(UsmStat.UNSUPPORTED_SEC_LEVELS, "encrypted data without the privacy flag")
    return msg.scoped_pdu
