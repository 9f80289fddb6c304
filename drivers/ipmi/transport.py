"""The serial line to a BMC: a local tty (pyserial-asyncio-fast, 8N1 raw) or `socket://host:port`.

Protocol-based rather than stream-based: received bytes go straight to a
callback, which saves a task switch per exchange on a 144-line pod.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import Callable

import serial
import serial_asyncio_fast
import structlog

from drivers.errors import ConfigurationError, TransportError

log = structlog.get_logger(__name__)

# Opening a tty or a console-server port should take milliseconds; 5 s means something hangs.
OPEN_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0


class _NonBlockingSerial(serial.Serial):  # type: ignore[misc]
    """pyserial port whose read is one non-blocking os.read.

    pyserial's own read does select, read, select again per call (its loop runs
    until `size` bytes or a timeout); the event loop has already said the fd is
    readable, so one read is enough. That saves two syscalls per reply.
    """

    def read(self, size: int = 1) -> bytes:
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise serial.SerialException(f"read failed: {exc}") from exc


def _open_serial(port: str, baud: int) -> _NonBlockingSerial:
    ser = _NonBlockingSerial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1,
                             exclusive=True)
    # Replies to a previous owner's requests may sit in the buffer.
    ser.reset_input_buffer()
    return ser


class _LineProtocol(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost()


class SerialLine:
    """One open line; `write` never blocks; `close` waits until the port is really closed."""

    def __init__(self, transport: asyncio.BaseTransport, protocol: _LineProtocol,
                 port: str) -> None:
        self._transport = transport
        self._protocol = protocol
        self.port = port

    @property
    def is_open(self) -> bool:
        return not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise TransportError(f"{self.port}: line is closed")
        if not isinstance(self._transport, asyncio.WriteTransport):
            raise TransportError(f"{self.port}: transport cannot write")
        self._transport.write(data)

    async def close(self) -> None:
        # abort, not close: close() drains output first (tcdrain in an executor thread),
        # which never returns if the far end stops reading; nothing unsent matters here.
        if not self._transport.is_closing() and isinstance(self._transport, asyncio.Transport):
            self._transport.abort()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(self._protocol.closed)
        except TimeoutError:
            log.warning("ipmi_line_close_timeout", port=self.port)


async def _open_serial_line(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], _LineProtocol],
    port: str,
    baud: int,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    """Open the port in a thread; a port opened after we stopped waiting (timeout,
    cancellation) or that fails to attach is closed, or its exclusive lock would
    refuse every later open."""
    opening = loop.run_in_executor(None, _open_serial, port, baud)
    try:
        ser = await asyncio.shield(opening)
    except BaseException:
        opening.add_done_callback(_close_opened_port)
        raise
    try:
        return await serial_asyncio_fast.connection_for_serial(loop, factory, ser)
    except BaseException:
        ser.close()
        raise


def _close_opened_port(opening: asyncio.Future[serial.Serial]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


async def open_line(port: str, baud: int, on_data: Callable[[bytes], None],
                    on_lost: Callable[[], None]) -> SerialLine:
    """Open `port` (a device path or socket://host:port).

    Raises TransportError (worth a retry) or ConfigurationError (a bad port string).
    """
    loop = asyncio.get_running_loop()

    def factory() -> _LineProtocol:
        return _LineProtocol(on_data, on_lost)

    transport: asyncio.BaseTransport
    protocol: asyncio.BaseProtocol
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            if port.startswith("socket://"):
                url = urllib.parse.urlparse(port)
                if not url.hostname or not url.port:
                    raise ConfigurationError(f"{port}: expected socket://host:port")
                transport, protocol = await loop.create_connection(factory, url.hostname,
                                                                   url.port)
            elif "://" in port:
                raise ConfigurationError(f"{port}: only device paths and socket:// are supported")
            else:
                transport, protocol = await _open_serial_line(loop, factory, port, baud)
    except TimeoutError as exc:
        raise TransportError(f"{port}: open timed out after {OPEN_TIMEOUT_S} s") from exc
    except (OSError, serial.SerialException) as exc:
        raise TransportError(f"{port}: cannot open: {exc}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{port}: {exc}") from exc
    if not isinstance(protocol, _LineProtocol):
        raise TransportError(f"{port}: unexpected protocol object")
    return SerialLine(transport, protocol, port)
