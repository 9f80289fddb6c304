"""Parse the `[[cdu]] url` setting: `modbus+tcp://host:port` or `modbus+rtu:///dev/ttyX?...`.

RTU defaults to 19200 8E1 (DEVICES.md §1); query keys `baud`, `parity` (N/E/O),
`bytesize` (7/8) and `stopbits` (1/2) override it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from drivers.errors import ConfigurationError

DEFAULT_TCP_PORT = 502
DEFAULT_RTU_BAUD = 19200
# The rates serial adapters and termios offer; anything else is a typo.
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
_RTU_KEYS = frozenset({"baud", "parity", "bytesize", "stopbits"})


class ModbusTransport(enum.StrEnum):
    TCP = "tcp"
    RTU = "rtu"


@dataclass(frozen=True, slots=True)
class ModbusUrl:
    """Where a Modbus device is and how to frame for it."""

    transport: ModbusTransport
    host: str = ""  # TCP only
    port: int = DEFAULT_TCP_PORT  # TCP only
    device: str = ""  # RTU only: serial device path
    baud: int = DEFAULT_RTU_BAUD
    parity: str = "E"
    bytesize: int = 8
    stopbits: int = 1


def _int_option(url: str, key: str, raw: str, allowed: frozenset[int] | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{url}: {key}={raw!r} is not an integer") from None
    if value <= 0 or (allowed is not None and value not in allowed):
        choices = f" (one of {sorted(allowed)})" if allowed else ""
        raise ConfigurationError(f"{url}: {key}={raw!r} is not allowed{choices}")
    return value


def parse_modbus_url(url: str) -> ModbusUrl:
    """Parse a CDU URL; raise ConfigurationError naming what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{url!r}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme == "modbus+tcp":
        if not parts.hostname:
            raise ConfigurationError(f"{url!r}: modbus+tcp URL has no host")
        if parts.path not in ("", "/") or parts.query:
            raise ConfigurationError(f"{url!r}: modbus+tcp URL takes only host and port")
        if port is not None and not 1 <= port <= 65535:
            raise ConfigurationError(f"{url!r}: port {port} is outside 1–65535")
        return ModbusUrl(
            transport=ModbusTransport.TCP,
            host=parts.hostname,
            port=DEFAULT_TCP_PORT if port is None else port,
        )
    if scheme == "modbus+rtu":
        if parts.netloc:
            raise ConfigurationError(
                f"{url!r}: modbus+rtu URL must have an empty host (modbus+rtu:///dev/ttyX)"
            )
        if not parts.path or parts.path == "/":
            raise ConfigurationError(f"{url!r}: modbus+rtu URL has no serial device path")
        options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        unknown = sorted(set(options) - _RTU_KEYS)
        if unknown:
            raise ConfigurationError(
                f"{url!r}: unknown option {unknown[0]!r} (known: {', '.join(sorted(_RTU_KEYS))})"
            )
        parity = options.get("parity", "E").upper()
        if parity not in ("N", "E", "O"):
            raise ConfigurationError(f"{url!r}: parity={parity!r} is not one of N, E, O")
        return ModbusUrl(
            transport=ModbusTransport.RTU,
            device=parts.path,
            baud=_int_option(
                url, "baud", options.get("baud", str(DEFAULT_RTU_BAUD)), frozenset(STANDARD_BAUDS)
            ),
            parity=parity,
            bytesize=_int_option(url, "bytesize", options.get("bytesize", "8"), frozenset({7, 8})),
            stopbits=_int_option(url, "stopbits", options.get("stopbits", "1"), frozenset({1, 2})),
        )
    raise ConfigurationError(
        f"{url!r}: scheme {parts.scheme!r} is not modbus+tcp or modbus+rtu"
    )
