"""USM security primitives (RFC 3414, RFC 3826, RFC 7860) on the `cryptography` package.

Password-to-key and key localization, HMAC-SHA-96 and HMAC-SHA-256-192
authentication, AES-128-CFB privacy. Pure functions over bytes.
"""

from __future__ import annotations

import enum
import hmac as std_hmac
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # CFB moved to "decrepit" in cryptography 47; SNMP still needs it (RFC 3826).
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from drivers.errors import ConfigurationError

_PASSWORD_EXPANSION_BYTES = 1_048_576  # RFC 3414 A.2: hash 1 MB of the repeated password
_MIN_PASSPHRASE_CHARS = 8  # RFC 3414 11.2; net-snmp refuses shorter ones too

# usmStats counters an agent reports (RFC 3414 section 5): OID prefix 1.3.6.1.6.3.15.1.1.x.0
USM_STATS = (1, 3, 6, 1, 6, 3, 15, 1, 1)


class UsmStat(enum.IntEnum):
    UNSUPPORTED_SEC_LEVELS = 1
    NOT_IN_TIME_WINDOWS = 2
    UNKNOWN_USER_NAMES = 3
    UNKNOWN_ENGINE_IDS = 4
    WRONG_DIGESTS = 5
    DECRYPTION_ERRORS = 6

    @property
    def oid(self) -> tuple[int, ...]:
        return (*USM_STATS, int(self), 0)


class AuthProtocol(enum.Enum):
    """Authentication protocols: value is (name, digest length on the wire)."""

    NONE = ("none", 0)
    HMAC_SHA_96 = ("SHA", 12)
    HMAC_SHA256_192 = ("SHA-256", 24)

    @property
    def digest_len(self) -> int:
        return self.value[1]

    def hash(self) -> hashes.HashAlgorithm:
        if self is AuthProtocol.HMAC_SHA256_192:
            return hashes.SHA256()
        return hashes.SHA1()  # noqa: S303 - HMAC-SHA-96 is what RFC 3414 specifies

    @classmethod
    def parse(cls, name: str) -> AuthProtocol:
        names = {
            "sha": cls.HMAC_SHA_96,
            "sha1": cls.HMAC_SHA_96,
            "sha-256": cls.HMAC_SHA256_192,
            "sha256": cls.HMAC_SHA256_192,
            "none": cls.NONE,
        }
        try:
            return names[name.strip().lower()]
        except KeyError:
            raise ConfigurationError(
                f"unknown SNMPv3 auth protocol {name!r} (SHA, SHA-256)"
            ) from None


class PrivProtocol(enum.Enum):
    NONE = "none"
    AES128 = "AES"

    @classmethod
    def parse(cls, name: str) -> PrivProtocol:
        names = {"aes": cls.AES128, "aes128": cls.AES128, "aes-128": cls.AES128, "none": cls.NONE}
        try:
            return names[name.strip().lower()]
        except KeyError:
            raise ConfigurationError(f"unknown SNMPv3 privacy protocol {name!r} (AES)") from None


def _digest(proto: AuthProtocol, data: bytes) -> bytes:
    h = hashes.Hash(proto.hash())
    h.update(data)
    return h.finalize()


@lru_cache(maxsize=64)
def password_to_key(password: bytes, proto: AuthProtocol) -> bytes:
    """RFC 3414 A.2: hash the password repeated to 1 MB."""
    if len(password) < _MIN_PASSPHRASE_CHARS:
        raise ConfigurationError(
            f"SNMPv3 passphrase shorter than {_MIN_PASSPHRASE_CHARS} characters"
        )
    repeats = _PASSWORD_EXPANSION_BYTES // len(password) + 1
    return _digest(proto, (password * repeats)[:_PASSWORD_EXPANSION_BYTES])


@lru_cache(maxsize=256)
def localize_key(key: bytes, engine_id: bytes, proto: AuthProtocol) -> bytes:
    """RFC 3414 A.2: Kul = H(Ku || engineID || Ku)."""
    return _digest(proto, key + engine_id + key)


def localized_key(password: str | bytes, engine_id: bytes, proto: AuthProtocol) -> bytes:
    raw = password.encode() if isinstance(password, str) else password
    return localize_key(password_to_key(raw, proto), engine_id, proto)


def compute_digest(proto: AuthProtocol, auth_key: bytes, message: bytes) -> bytes:
    """HMAC of the whole message (auth parameters zeroed), truncated per protocol."""
    mac = crypto_hmac.HMAC(auth_key, proto.hash())
    mac.update(message)
    return mac.finalize()[: proto.digest_len]


def sign(proto: AuthProtocol, auth_key: bytes, message: bytes, auth_offset: int) -> bytes:
    """Fill the zeroed auth parameters at auth_offset with the digest."""
    digest = compute_digest(proto, auth_key, message)
    return message[:auth_offset] + digest + message[auth_offset + proto.digest_len :]


def verify(proto: AuthProtocol, auth_key: bytes, message: bytes, auth_offset: int) -> bool:
    """Check a received message's digest; False on any mismatch, including length."""
    n = proto.digest_len
    if auth_offset < 0 or auth_offset + n > len(message):
        return False
    received = message[auth_offset : auth_offset + n]
    zeroed = message[:auth_offset] + bytes(n) + message[auth_offset + n :]
    return std_hmac.compare_digest(received, compute_digest(proto, auth_key, zeroed))


def _aes_cfb(priv_key: bytes, boots: int, time: int, salt: bytes) -> Cipher[CFB]:
    # RFC 3826 3.1.2.1: IV = boots (4) || time (4) || salt (8); key = first 16 bytes.
    iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + salt
    return Cipher(algorithms.AES(priv_key[:16]), CFB(iv))


def aes_encrypt(priv_key: bytes, boots: int, time: int, salt: bytes, plaintext: bytes) -> bytes:
    enc = _aes_cfb(priv_key, boots, time, salt).encryptor()
    return enc.update(plaintext) + enc.finalize()


def aes_decrypt(priv_key: bytes, boots: int, time: int, salt: bytes, ciphertext: bytes) -> bytes:
    if len(salt) != 8:
        raise ValueError("AES privacy parameters must be 8 bytes")
    dec = _aes_cfb(priv_key, boots, time, salt).decryptor()
    return dec.update(ciphertext) + dec.finalize()
