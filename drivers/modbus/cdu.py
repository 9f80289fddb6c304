"""CDU driver: Modbus TCP or RTU (DEVICES.md §1) on the pymodbus async client.

Groups (one request each):
- `safety`   input registers 0–17 (FC 04) every `poll_s`: temperatures, flow,
             pressures, pumps, leak and status bits. This is what interlocks act on.
- `settings` holding registers 100–109 (FC 03) every `settings_factor × poll_s`
             (default 5×): setpoints change only when someone writes them, and
             every write here is read back on the spot anyway.

Error mapping: a Modbus exception response is a `ModbusDeviceError` (a
`DeviceError` carrying the exception code; the link stays up); no answer, a
lost connection or a malformed answer is a `TransportError`, after which the
client is dropped and the next call reconnects. pymodbus's own reconnect task
is switched off (reconnect_delay=0) so this driver owns the connection and no
stray task outlives it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import termios
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.base import DeviceKind, Point, PollGroup
from drivers.errors import (
    ConfigurationError,
    DeviceError,
    FrameError,
    TransportError,
    ValueRejected,
)
from drivers.modbus import cdu_map as m
from drivers.modbus.cdu_map import ControlBit, ControlMode, LeadPump
from drivers.modbus.url import ModbusTransport, ModbusUrl, parse_modbus_url

log = structlog.get_logger(__name__)

SAFETY_GROUP: Final = "safety"
SETTINGS_GROUP: Final = "settings"

T = TypeVar("T")


# The Modbus function each request name sends (FC 04, 03, 06).
_FUNCTION_CODES = {"read_input_registers": 4, "read_holding_registers": 3, "write_register": 6}


class ModbusExceptionCode(enum.IntEnum):
    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    DEVICE_FAILURE = 0x04  # this CDU also answers it to remote writes in local mode
    ACKNOWLEDGE = 0x05
    DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B
    UNKNOWN = -1

    @classmethod
    def from_wire(cls, code: int) -> ModbusExceptionCode:
        try:
            return cls(code)
        except ValueError:
            return cls.UNKNOWN


class ModbusDeviceError(DeviceError):
    """The CDU answered with a Modbus exception response."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.exception = ModbusExceptionCode.from_wire(code)


class WriteNotConfirmed(DeviceError):
    """A write was accepted but reading it back gave another value."""


Client = AsyncModbusTcpClient | AsyncModbusSerialClient


@dataclass(slots=True)
class CduCounters:
    """Per-link counters (monotonic, never reset)."""

    requests: int = 0  # requests asked for, retries not counted
    retries: int = 0
    timeouts: int = 0  # attempts that got no answer in time
    frame_errors: int = 0  # answers that were not to our request, or malformed
    device_errors: int = 0  # Modbus exception responses


class CduDriver:
    """One CDU. Implements `drivers.base.DeviceDriver` (kind "cdu")."""

    def __init__(
        self,
        url: str,
        unit: int = 1,
        poll_s: float = 0.25,
        timeout_s: float = 1.0,
        retries: int = 1,
        *,
        settings_factor: float = 5.0,
    ) -> None:
        self.url: ModbusUrl = parse_modbus_url(url)
        if not 0 <= unit <= 247:
            raise ConfigurationError(f"cdu unit {unit} is outside 0–247")
        if poll_s <= 0 or timeout_s <= 0 or settings_factor < 1:
            raise ConfigurationError(
                f"cdu poll_s ({poll_s}), timeout_s ({timeout_s}) must be > 0 "
                f"and settings_factor ({settings_factor}) >= 1"
            )
        if retries < 0:
            raise ConfigurationError(f"cdu retries {retries} must be >= 0")
        self._url_text = url
        self.unit = unit
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.retries = retries
        self._groups = (
            PollGroup(SAFETY_GROUP, poll_s),
            PollGroup(SETTINGS_GROUP, poll_s * settings_factor),
        )
        self._client: Client | None = None
        # Resolved when the current client is dropped, so a request waiting on
        # it ends at once (pymodbus would wait out its timeout).
        self._client_closed: asyncio.Future[None] | None = None
        self._closes = 0  # close() calls: a request started before one does not retry
        # One request (with its retries) at a time on the link: an RTU line is
        # one bus, and a retry must not race another caller's reconnect.
        self._lock = asyncio.Lock()
        self._heartbeat_counter = 0
        self.counters = CduCounters()

    # -- DeviceDriver ------------------------------------------------------

    @property
    def kind(self) -> DeviceKind:
        return DeviceKind.CDU

    def link_stats(self) -> Mapping[str, int]:
        return dataclasses.asdict(self.counters)

    def poll_groups(self) -> Sequence[PollGroup]:
        return self._groups

    async def connect(self) -> None:
        async with self._lock:
            await self._ensure_client()

    async def close(self) -> None:
        # No lock: closing under a hung request makes that request fail at once.
        self._closes += 1
        self._drop_client()

    async def read_group(self, group: str) -> Mapping[str, Point]:
        if group == SAFETY_GROUP:
            return m.decode_input_block(await self.read_input_block())
        if group == SETTINGS_GROUP:
            return m.decode_holding_block(await self.read_holding_block())
        raise ConfigurationError(
            f"cdu has no poll group {group!r} (groups: {SAFETY_GROUP}, {SETTINGS_GROUP})"
        )

    # -- raw blocks --------------------------------------------------------

    async def read_input_block(self) -> list[int]:
        """Input registers 0–17 in one FC 04 request."""
        return await self._request(
            "read_input_registers",
            lambda c: c.read_input_registers(
                m.INPUT_START, count=m.INPUT_COUNT, device_id=self.unit
            ),
            expect_count=m.INPUT_COUNT,
        )

    async def read_holding_block(self) -> list[int]:
        """Holding registers 100–109 in one FC 03 request."""
        return await self._request(
            "read_holding_registers",
            lambda c: c.read_holding_registers(
                m.HOLDING_START, count=m.HOLDING_COUNT, device_id=self.unit
            ),
            expect_count=m.HOLDING_COUNT,
        )

    # -- writes (range-checked, written, read back) -------------------------

    async def set_pump_speed_pct(self, pct: float) -> None:
        await self._write_verified(m.HR_PUMP_SPEED_SETPOINT, m.PUMP_SPEED_LIMIT.to_raw(pct))

    async def set_failsafe_speed_pct(self, pct: float) -> None:
        await self._write_verified(m.HR_FAILSAFE_SPEED, m.FAILSAFE_SPEED_LIMIT.to_raw(pct))

    async def set_facility_valve_pct(self, pct: float) -> None:
        await self._write_verified(m.HR_VALVE_SETPOINT, m.VALVE_LIMIT.to_raw(pct))

    async def set_watchdog_timeout_s(self, timeout_s: int) -> None:
        """0 switches the CDU's comm watchdog off."""
        raw = m.WATCHDOG_LIMIT.to_raw(timeout_s)
        if raw != timeout_s:
            raise ValueRejected(f"comm watchdog timeout {timeout_s!r} s is not whole seconds")
        await self._write_verified(m.HR_WATCHDOG_TIMEOUT, raw)

    async def set_control_mode(self, mode: ControlMode | str) -> None:
        await self._write_verified(m.HR_CONTROL_MODE, m.parse_enum(ControlMode, mode).value)

    async def set_lead_pump(self, lead: LeadPump | str) -> None:
        await self._write_verified(m.HR_LEAD_PUMP, m.parse_enum(LeadPump, lead).value)

    async def set_rack_isolation(self, mask: int) -> None:
        """Bit n closes rack n+1's supply valve."""
        if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask <= m.RACK_MASK_MAX:
            raise ValueRejected(f"rack isolation mask {mask!r} is outside 0–0xFFFF")
        await self._write_verified(m.HR_RACK_ISOLATION, mask)

    async def set_rack_isolated(self, rack: int, closed: bool) -> None:
        """Close (or open) rack `rack`'s supply valve alone: read 108, change the
        rack's bit, write it and read it back. Not atomic on the wire: the
        caller must be the only writer of 108 (the daemon's supervisor is)."""
        if isinstance(rack, bool) or not isinstance(rack, int) or not 1 <= rack <= 16:
            raise ValueRejected(f"rack {rack!r} is outside 1–16 (register 108 has 16 bits)")
        mask = await self._read_holding(m.HR_RACK_ISOLATION)
        bit = 1 << (rack - 1)
        await self._write_verified(m.HR_RACK_ISOLATION, (mask | bit) if closed else (mask & ~bit))

    async def set_run(self, run: bool) -> None:
        await self._set_control_bit(ControlBit.RUN, run)

    async def set_remote_enable(self, enable: bool) -> None:
        await self._set_control_bit(ControlBit.REMOTE_ENABLE, enable)

    async def alarm_reset(self) -> None:
        """Pulse control bit b2 (the CDU acts on its rising edge), then clear it."""
        bits = (await self._read_holding(m.HR_CONTROL)) & ~ControlBit.ALARM_RESET
        await self._write_verified(m.HR_CONTROL, bits | ControlBit.ALARM_RESET)
        await self._write_verified(m.HR_CONTROL, bits)

    async def heartbeat(self) -> None:
        """Refresh the CDU's comm watchdog (any write to 106). The FC 06 echo confirms it."""
        self._heartbeat_counter = (self._heartbeat_counter + 1) & 0xFFFF
        await self._write(m.HR_WATCHDOG_HEARTBEAT, self._heartbeat_counter)

    # -- internals ---------------------------------------------------------

    async def _set_control_bit(self, bit: ControlBit, on: bool) -> None:
        bits = (await self._read_holding(m.HR_CONTROL)) & ~ControlBit.ALARM_RESET
        await self._write_verified(m.HR_CONTROL, (bits | bit) if on else (bits & ~bit))

    async def _read_holding(self, address: int) -> int:
        regs = await self._request(
            "read_holding_registers",
            lambda c: c.read_holding_registers(address, count=1, device_id=self.unit),
            expect_count=1,
        )
        return regs[0]

    async def _write(self, address: int, value: int) -> None:
        value = int(value)  # plain int on the wire and in logs, not a ControlBit
        await self._request(
            "write_register",
            lambda c: c.write_register(address, value, device_id=self.unit),
            expect_count=None,
            echo=(address, value),
        )

    async def _write_verified(self, address: int, value: int) -> None:
        value = int(value)
        await self._write(address, value)
        read_back = await self._read_holding(address)
        if read_back != value:
            log.warning("cdu_write_not_confirmed", address=address, wrote=value, read=read_back)
            raise WriteNotConfirmed(
                f"register {address}: wrote {value}, read back {read_back}", None
            )
        log.debug("cdu_write", address=address, value=value)

    async def _ensure_client(self) -> Client:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop_client()
        client = self._make_client()
        try:
            async with asyncio.timeout(self.timeout_s):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise TransportError(f"cdu {self._url_text}: connect failed: {exc!r}") from exc
        except (termios.error, ValueError) as exc:
            # The serial port refused the line settings (baud, parity, ...): a retry won't help.
            client.close()
            raise ConfigurationError(
                f"cdu {self._url_text}: serial port refused its settings: {exc!r}"
            ) from exc
        if not ok:
            client.close()
            raise TransportError(f"cdu {self._url_text}: connect failed")
        self._client = client
        self._client_closed = asyncio.get_running_loop().create_future()
        log.debug("cdu_connected", url=self._url_text)
        return client

    def _make_client(self) -> Client:
        u = self.url
        if u.transport is ModbusTransport.TCP:
            return AsyncModbusTcpClient(
                u.host, port=u.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            u.device,
            baudrate=u.baud,
            bytesize=u.bytesize,
            parity=u.parity,
            stopbits=u.stopbits,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._client_closed is not None:
            if not self._client_closed.done():
                self._client_closed.set_result(None)
            self._client_closed = None

    async def _request(
        self,
        what: str,
        call: Callable[[Client], Awaitable[ModbusPDU]],
        expect_count: int | None,
        echo: tuple[int, int] | None = None,
    ) -> list[int]:
        """One request with `retries` retries on transport failure; registers of the answer."""
        attempt = 0
        closes = self._closes
        self.counters.requests += 1
        async with self._lock:
            while True:
                try:
                    return await self._attempt(what, call, expect_count, echo)
                except ModbusDeviceError:
                    self.counters.device_errors += 1
                    raise
                except TransportError as exc:
                    if isinstance(exc, FrameError):
                        self.counters.frame_errors += 1
                    elif isinstance(exc.__cause__, TimeoutError | ModbusIOException):
                        self.counters.timeouts += 1
                    self._drop_client()
                    attempt += 1
                    if attempt > self.retries or closes != self._closes:
                        raise
                    self.counters.retries += 1
                    log.debug("cdu_retry", request=what, attempt=attempt, error=str(exc))

    def _check_answers_request(
        self, what: str, response: ModbusPDU, echo: tuple[int, int] | None
    ) -> None:
        """pymodbus matches answers by transaction id only, and takes id 0 as a
        match for anything: check that this is the answer to this request."""
        function = _FUNCTION_CODES[what]
        if response.function_code & 0x7F != function:
            raise FrameError(
                f"cdu {self._url_text}: {what}: answer has function {response.function_code}, "
                f"asked {function}"
            )
        if self.url.transport is ModbusTransport.TCP and response.transaction_id == 0:
            raise FrameError(f"cdu {self._url_text}: {what}: answer with transaction id 0")
        if echo is not None and (response.address, list(response.registers)) != (
            echo[0],
            [echo[1]],
        ):
            raise FrameError(
                f"cdu {self._url_text}: {what}: echo {response.address}="
                f"{list(response.registers)} is not the write {echo[0]}={echo[1]}"
            )

    async def _attempt(
        self,
        what: str,
        call: Callable[[Client], Awaitable[ModbusPDU]],
        expect_count: int | None,
        echo: tuple[int, int] | None = None,
    ) -> list[int]:
        client = await self._ensure_client()
        closed = self._client_closed
        if closed is None:  # _ensure_client always sets it; keeps mypy and the reader sure
            raise TransportError(f"cdu {self._url_text}: {what}: not connected")
        pending = asyncio.ensure_future(call(client))
        try:
            # pymodbus times the answer itself; this bounds the whole call too.
            async with asyncio.timeout(self.timeout_s * 1.5):
                await asyncio.wait((pending, closed), return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                raise TransportError(f"cdu {self._url_text}: {what}: connection closed")
            response = pending.result()
        except (TimeoutError, OSError, ModbusException) as exc:
            raise TransportError(f"cdu {self._url_text}: {what}: {exc!r}") from exc
        except asyncio.CancelledError:
            # The answer may still arrive and be taken for the next request's.
            self._drop_client()
            raise
        finally:
            if not pending.done():
                pending.cancel()
                # Not suppress(CancelledError): that would swallow our own cancellation.
                await asyncio.wait((pending,))
        if response.isError():
            code = response.exception_code
            name = ModbusExceptionCode.from_wire(code).name.lower()
            log.info("cdu_exception_response", request=what, code=code)
            raise ModbusDeviceError(
                f"cdu {self._url_text}: {what} refused with exception {code:02d} ({name})", code
            )
        self._check_answers_request(what, response, echo)
        registers = list(response.registers)
        if expect_count is not None and len(registers) != expect_count:
            raise FrameError(
                f"cdu {self._url_text}: {what}: expected {expect_count} registers, "
                f"got {len(registers)}"
            )
        return registers
