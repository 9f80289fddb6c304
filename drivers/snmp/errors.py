"""SNMP errors on top of the shared driver hierarchy.

An error-status in a Response becomes a DeviceError subclass (the agent
answered and refused); silence is a TransportError; USM refusals that no retry
can fix are ConfigurationErrors.
"""

from __future__ import annotations

from drivers.errors import ConfigurationError, DeviceError, TransportError
from drivers.snmp.ber import SnmpCodecError
from drivers.snmp.protocol_pdu import ErrorStatus

__all__ = [
    "NoSuchNameError",
    "NotWritableError",
    "SnmpAuthError",
    "SnmpCodecError",
    "SnmpStatusError",
    "SnmpTimeout",
    "TooBigError",
    "WrongValueError",
    "status_error",
]


class SnmpTimeout(TransportError):
    """No matching answer within the timeout on any attempt."""


class SnmpAuthError(ConfigurationError):
    """The agent refused our v3 credentials (unknown user, wrong digest, security level)."""


class SnmpStatusError(DeviceError):
    """A Response carried a non-zero error-status."""

    def __init__(self, status: ErrorStatus, index: int, message: str) -> None:
        super().__init__(message, int(status))
        self.status = status
        self.index = index


class TooBigError(SnmpStatusError):
    """The answer would not fit in one message: ask for less."""


class NoSuchNameError(SnmpStatusError):
    """noSuchName (v1-style agents)."""


class NotWritableError(SnmpStatusError):
    """notWritable, readOnly, noAccess, noCreation, authorizationError."""


class WrongValueError(SnmpStatusError):
    """The value was refused: wrongValue, badValue, wrongType, wrongLength, inconsistentValue..."""


_CLASSES: dict[ErrorStatus, type[SnmpStatusError]] = {
    ErrorStatus.TOO_BIG: TooBigError,
    ErrorStatus.NO_SUCH_NAME: NoSuchNameError,
    ErrorStatus.READ_ONLY: NotWritableError,
    ErrorStatus.NO_ACCESS: NotWritableError,
    ErrorStatus.NOT_WRITABLE: NotWritableError,
    ErrorStatus.NO_CREATION: NotWritableError,
    ErrorStatus.AUTHORIZATION_ERROR: NotWritableError,
    ErrorStatus.BAD_VALUE: WrongValueError,
    ErrorStatus.WRONG_TYPE: WrongValueError,
    ErrorStatus.WRONG_LENGTH: WrongValueError,
    ErrorStatus.WRONG_ENCODING: WrongValueError,
    ErrorStatus.WRONG_VALUE: WrongValueError,
    ErrorStatus.INCONSISTENT_VALUE: WrongValueError,
    ErrorStatus.INCONSISTENT_NAME: WrongValueError,
}


def status_error(raw_status: int, index: int, what: str) -> SnmpStatusError:
    status = ErrorStatus.from_wire(raw_status)
    cls = _CLASSES.get(status, SnmpStatusError)
    return cls(status, index, f"{what}: agent answered {status.name} (varbind {index})")
