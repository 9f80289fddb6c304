"""Lean SNMP engine: BER codec, v2c/v3 messages, USM, asyncio UDP client.

pysnmp costs 60–340 ms of CPU per PDU read (PERF-NOTES.md); this does it in a
few ms. Codec modules are pure; only transport.py and client.py touch sockets.
"""

from drivers.snmp.ber import Oid, SnmpCodecError, format_oid, parse_oid
from drivers.snmp.client import ClientStats, SnmpClient
from drivers.snmp.errors import (
    NoSuchNameError,
    NotWritableError,
    SnmpAuthError,
    SnmpStatusError,
    SnmpTimeout,
    TooBigError,
    WrongValueError,
)
from drivers.snmp.protocol_pdu import ErrorStatus, Pdu, PduType, Tag, VarBind
from drivers.snmp.usm import AuthProtocol, PrivProtocol
from drivers.snmp.v3 import UsmUser

__all__ = [
    "AuthProtocol",
    "ClientStats",
    "ErrorStatus",
    "NoSuchNameError",
    "NotWritableError",
    "Oid",
    "Pdu",
    "PduType",
    "PrivProtocol",
    "SnmpAuthError",
    "SnmpClient",
    "SnmpCodecError",
    "SnmpStatusError",
    "SnmpTimeout",
    "Tag",
    "TooBigError",
    "UsmUser",
    "VarBind",
    "WrongValueError",
    "format_oid",
    "parse_oid",
]
