"""IPMI Terminal Mode client: one request in flight per line, matched by sequence number.

Retries with a fresh sequence number after a timeout or a broken frame; a reply
carrying an older sequence number (the answer to an attempt we gave up on) is
dropped. The line's input is discarded before each attempt so a half-received
frame cannot glue onto the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass

import structlog

from drivers.errors import DeviceError, TransportError
from drivers.ipmi.codec import SEQ_MODULO, CompletionCode, Request, Response
from drivers.ipmi.commands import RESPONSE_LENGTHS, check_length
from drivers.ipmi.framing import FrameReader, IpmiFrameError, encode_frame

log = structlog.get_logger(__name__)


class IpmiTimeout(TransportError):
    """No matching reply within the request timeout, after every retry."""


class IpmiCompletionError(DeviceError):
    """The BMC answered with a completion code other than 00."""


@dataclass(slots=True)
class IpmiCounters:
    """Per-line counters the daemon can read (monotonic, never reset)."""

    requests: int = 0  # calls made
    attempts: int = 0  # frames written, retries included
    responses: int = 0  # matching replies accepted
    timeouts: int = 0  # attempts that saw no matching reply in time
    frame_errors: int = 0  # broken frames, bad hex, wrong lengths
    stale_replies: int = 0  # well-formed replies to an earlier attempt
    completion_errors: int = 0  # replies with a completion code other than 00
    failures: int = 0  # calls that raised after all retries
    bytes_sent: int = 0
    bytes_received: int = 0


class IpmiClient:
    """Request/response over one line. Feed received bytes to `data_received`."""

    def __init__(self, write: Callable[[bytes], None], *, timeout_s: float = 1.0,
                 retries: int = 2, name: str = "") -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self._write = write
        self.timeout_s = timeout_s
        self.retries = retries
        self.name = name
        self.counters = IpmiCounters()
        self._lock = asyncio.Lock()
        self._reader = FrameReader()
        self._seq = 0
        self._pending: Request | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._length: tuple[int, int] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.counters.bytes_received += len(data)
        for item in self._reader.feed(data):
            if item.error is not None:
                self.counters.frame_errors += 1
                self._fail(item.error)
                continue
            try:
                response = Response.from_bytes(item.payload or b"")
            except IpmiFrameError as exc:
                self.counters.frame_errors += 1
                self._fail(exc)
                continue
            self._deliver(response)

    def close(self) -> None:
        """The line is closing: no timer left behind, no request left waiting."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.connection_lost()

    def connection_lost(self) -> None:
        self._fail(TransportError(f"{self.name}: line closed"))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _deliver(self, response: Response) -> None:
        waiter = self._waiter
        request = self._pending
        if waiter is None or waiter.done() or request is None or not response.answers(request):
            self.counters.stale_replies += 1
            return
        if response.completion_code == CompletionCode.OK and self._length is not None:
            try:
                check_length(f"reply to netfn 0x{request.netfn:02x} cmd 0x{request.cmd:02x}",
                             response.data, *self._length)
            except IpmiFrameError as exc:
                self.counters.frame_errors += 1
                waiter.set_exception(exc)
                return
        waiter.set_result(response)

    async def call(self, netfn: int, cmd: int, data: bytes = b"", *,
                   length: tuple[int, int] | None = None,
                   accept_codes: Collection[int] = (CompletionCode.OK,),
                   idempotent: bool = True) -> Response:
        """Send one request and return the matching reply.

        `length` is the (min, max) data bytes a reply with completion code 00 must
        carry (default: the command's entry in RESPONSE_LENGTHS; None there means
        unchecked). A completion code outside `accept_codes` raises
        IpmiCompletionError; it is not retried. A non-idempotent request (power
        cycle, hard reset) is sent once.
        """
        if length is None:
            length = RESPONSE_LENGTHS.get((netfn, cmd))
        attempts = 1 + (self.retries if idempotent else 0)
        async with self._lock:
            self.counters.requests += 1
            last_error: TransportError | None = None
            for attempt in range(attempts):
                try:
                    response = await self._attempt(netfn, cmd, data, length)
                except TimeoutError:
                    self.counters.timeouts += 1
                    last_error = IpmiTimeout(
                        f"{self.name}: no reply to netfn 0x{netfn:02x} cmd 0x{cmd:02x} "
                        f"within {self.timeout_s} s"
                    )
                except IpmiFrameError as exc:
                    last_error = exc
                else:
                    self.counters.responses += 1
                    code = response.completion_code
                    if code not in accept_codes:
                        self.counters.completion_errors += 1
                        raise IpmiCompletionError(
                            f"{self.name}: netfn 0x{netfn:02x} cmd 0x{cmd:02x} answered "
                            f"0x{code:02x} ({CompletionCode.describe(code)})", code)
                    return response
                if attempt + 1 < attempts:
                    log.debug("ipmi_retry", line=self.name, netfn=netfn, cmd=cmd,
                              error=str(last_error))
            self.counters.failures += 1
            raise last_error or TransportError(f"{self.name}: request failed")

    async def _attempt(self, netfn: int, cmd: int, data: bytes,
                       length: tuple[int, int] | None) -> Response:
        self._seq = (self._seq + 1) % SEQ_MODULO
        request = Request(netfn, cmd, data, seq=self._seq)
        frame = encode_frame(request.to_bytes())
        self._reader.reset()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter = waiter
        self._pending = request
        self._length = length
        self._arm_timer(loop, loop.time() + self.timeout_s)
        try:
            self.counters.attempts += 1
            self.counters.bytes_sent += len(frame)
            self._write(frame)
            return await waiter
        finally:
            self._waiter = None
            self._pending = None

    # A reply takes well under a millisecond and the timeout is about a second, so one
    # lazily re-armed timer per line replaces a timer per request (asyncio.timeout or
    # call_later push and cancel a heap entry each time: ~10 % of the poller's CPU on a
    # full pod). The timer fires at or before the current deadline and re-arms to it.
    def _arm_timer(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._deadline = deadline
        timer = self._timer
        if timer is not None and timer.when() > deadline:  # timeout_s shrank, or a new clock
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(deadline, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = loop.call_at(self._deadline, self._on_timer, loop)
