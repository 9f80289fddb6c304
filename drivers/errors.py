"""Error hierarchy shared by every driver.

The class of an error decides what a supervisor does with it:
- TransportError: the link failed (timeout, refused, garbage). Retry with backoff.
- DeviceError: the device answered and said no (Modbus exception, SNMP error
  status, IPMI completion code). Report it; the link is fine, do not reconnect.
- ConfigurationError: retrying cannot help (bad URL, authentication refused).
  Give up and say what is wrong.
- ValueRejected: refused locally before anything reached the wire.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error a driver raises."""


class TransportError(DriverError):
    """The link failed or the peer is silent; worth a retry."""


class FrameError(TransportError):
    """Bytes arrived that are not a well-formed frame of the protocol."""


class DeviceError(DriverError):
    """The device answered with a refusal."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConfigurationError(DriverError):
    """Retrying cannot help: wrong address, wrong credentials, wrong setup."""


class ValueRejected(DriverError):
    """A command value was refused by the driver before it reached the wire."""
