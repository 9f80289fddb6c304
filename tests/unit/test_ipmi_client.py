"""IpmiClient: sequence matching, retries, resynchronisation, counters (bytes in, bytes out).

The peer here is a scripted function of the request bytes the client writes;
the loop clock is fake (looptime), so timeouts cost no wall time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from drivers.errors import DeviceError, TransportError
from drivers.ipmi.client import IpmiClient, IpmiCompletionError, IpmiTimeout
from drivers.ipmi.codec import NetFn, Request, Response
from drivers.ipmi.framing import FrameReader, IpmiFrameError, encode_frame

Script = Callable[[Request, int], list[bytes]]  # (request, attempt number) -> bytes to send back


class Peer:
    """Answers each request the client writes with the bytes the script returns."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.client: IpmiClient | None = None
        self.requests: list[Request] = []
        self._reader = FrameReader()

    def write(self, data: bytes) -> None:
        for item in self._reader.feed(data):
            assert item.payload is not None
            request = Request.from_bytes(item.payload)
            self.requests.append(request)
            replies = self.script(request, len(self.requests))
            loop = asyncio.get_running_loop()
            for chunk in replies:
                assert self.client is not None
                loop.call_soon(self.client.data_received, chunk)


def make(script: Script, **kwargs: float) -> tuple[IpmiClient, Peer]:
    peer = Peer(script)
    client = IpmiClient(
        peer.write,
        timeout_s=kwargs.get("timeout_s", 0.5),
        retries=int(kwargs.get("retries", 2)),
        name="test",
    )
    peer.client = client
    return client, peer


def reply(req: Request, data: bytes = b"", code: int = 0, seq: int | None = None) -> bytes:
    rsp = Response(req.netfn, req.cmd, code, data, req.seq if seq is None else seq)
    return encode_frame(rsp.to_bytes(), b"\r\n")


async def test_request_bytes_and_reply() -> None:
    written: list[bytes] = []

    def write(data: bytes) -> None:
        written.append(data)
        rsp = Response(NetFn.APP, 0x01, 0, bytes(11), seq=1)
        asyncio.get_running_loop().call_soon(
            client.data_received, encode_frame(rsp.to_bytes(), b"\r\n")
        )

    client = IpmiClient(write, timeout_s=0.5, retries=0)
    rsp = await client.call(NetFn.APP, 0x01)
    assert written == [b"[180401]\r"]
    assert rsp.data == bytes(11)
    assert client.counters.requests == 1 and client.counters.responses == 1


async def test_sequence_numbers_advance_and_wrap() -> None:
    client, peer = make(lambda req, n: [reply(req, b"\x00")], retries=0)
    for _ in range(70):
        await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))
    seqs = [r.seq for r in peer.requests]
    assert seqs[:3] == [1, 2, 3] and seqs[62:66] == [63, 0, 1, 2]


async def test_stale_reply_with_wrong_seq_is_dropped() -> None:
    def script(req: Request, n: int) -> list[bytes]:
        # An old answer (seq - 1) with a different value first, then the real one.
        return [reply(req, b"\x11", seq=(req.seq - 1) % 64), reply(req, b"\x22")]

    client, _ = make(script)
    rsp = await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))
    assert rsp.data == b"\x22"
    assert client.counters.stale_replies == 1


async def test_reply_for_other_command_is_not_accepted() -> None:
    def script(req: Request, n: int) -> list[bytes]:
        wrong = Response(req.netfn, req.cmd + 1, 0, b"\x11", req.seq)
        return [encode_frame(wrong.to_bytes()), reply(req, b"\x22")]

    client, _ = make(script)
    assert (await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))).data == b"\x22"


@pytest.mark.looptime
async def test_timeout_then_retry_succeeds() -> None:
    client, peer = make(lambda req, n: [] if n == 1 else [reply(req, b"\x01")], timeout_s=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    rsp = await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))
    assert rsp.data == b"\x01"
    assert loop.time() - start == pytest.approx(0.5)
    assert client.counters.timeouts == 1 and client.counters.attempts == 2
    assert peer.requests[0].seq != peer.requests[1].seq


@pytest.mark.looptime
async def test_silent_peer_raises_timeout_after_all_retries() -> None:
    client, peer = make(lambda req, n: [], timeout_s=0.5, retries=2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(IpmiTimeout, match="no reply"):
        await client.call(NetFn.APP, 0x01)
    assert loop.time() - start == pytest.approx(1.5)
    assert len(peer.requests) == 3
    assert client.counters.failures == 1
    assert issubclass(IpmiTimeout, TransportError)


@pytest.mark.looptime
async def test_broken_frame_resyncs_and_retries_at_once() -> None:
    def script(req: Request, n: int) -> list[bytes]:
        if n == 1:
            good = reply(req, b"\x01")
            return [b"\x00\xff" + good[:7] + b"\r\n"]  # cut short, line end survived
        return [reply(req, b"\x02")]

    client, _ = make(script, timeout_s=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    rsp = await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))
    assert rsp.data == b"\x02"
    assert loop.time() - start < 0.1  # no timeout was waited for
    assert client.counters.frame_errors == 1 and client.counters.timeouts == 0


@pytest.mark.looptime
async def test_partial_frame_is_discarded_before_the_next_attempt() -> None:
    # Attempt 1 gets half a frame and no line end; it must not glue onto attempt 2's reply.
    def script(req: Request, n: int) -> list[bytes]:
        if n == 1:
            return [reply(req, b"\x01")[:6]]
        return [reply(req, b"\x02")]

    client, _ = make(script)
    assert (await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))).data == b"\x02"
    assert client.counters.timeouts == 1 and client.counters.frame_errors == 0


async def test_wrong_length_is_a_frame_error_and_retried() -> None:
    client, _ = make(lambda req, n: [reply(req, b"\x01\x02" if n == 1 else b"\x03")])
    rsp = await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))
    assert rsp.data == b"\x03"
    assert client.counters.frame_errors == 1


async def test_persistent_garbage_raises_frame_error() -> None:
    client, _ = make(lambda req, n: [b"[1G]\r\n"], retries=1)
    with pytest.raises(IpmiFrameError, match="non-hex"):
        await client.call(NetFn.APP, 0x01)
    assert client.counters.frame_errors == 2


async def test_completion_code_raises_device_error_without_retry() -> None:
    client, peer = make(lambda req, n: [reply(req, code=0xC1)])
    with pytest.raises(IpmiCompletionError, match="0xc1 \\(invalid_command\\)") as info:
        await client.call(NetFn.GROUP_EXTENSION, 0x00, b"\x00")
    assert isinstance(info.value, DeviceError) and info.value.code == 0xC1
    assert len(peer.requests) == 1
    assert client.counters.completion_errors == 1


async def test_accepted_nonzero_code_is_returned() -> None:
    client, _ = make(lambda req, n: [reply(req, bytes(14), code=0x80)])
    rsp = await client.call(NetFn.GROUP_EXTENSION, 0x03, b"\xdc\x00\x00", accept_codes=(0, 0x80))
    assert rsp.completion_code == 0x80


@pytest.mark.looptime
async def test_non_idempotent_request_is_sent_once() -> None:
    client, peer = make(lambda req, n: [])
    with pytest.raises(IpmiTimeout):
        await client.call(NetFn.CHASSIS, 0x02, b"\x02", idempotent=False)
    assert len(peer.requests) == 1


async def test_one_request_in_flight_per_line() -> None:
    in_flight = 0
    most = 0
    client: IpmiClient

    def write(data: bytes) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        (item,) = FrameReader().feed(data)
        assert item.payload is not None
        req = Request.from_bytes(item.payload)

        def answer() -> None:
            nonlocal in_flight
            in_flight -= 1
            client.data_received(reply(req, b"\x00"))

        asyncio.get_running_loop().call_later(0.001, answer)

    client = IpmiClient(write, timeout_s=1.0)
    await asyncio.gather(
        *(client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1)) for _ in range(10))
    )
    assert most == 1 and client.counters.responses == 10


async def test_cancellation_propagates_and_clears_waiter() -> None:
    client, _ = make(lambda req, n: [])
    task = asyncio.create_task(client.call(NetFn.APP, 0x01))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The line is free again and a late reply is counted as stale, not delivered.
    client.data_received(encode_frame(Response(NetFn.APP, 0x01, 0, bytes(11), 1).to_bytes()))
    assert client.counters.stale_replies == 1


@pytest.mark.looptime
async def test_each_attempt_gets_its_full_timeout() -> None:
    # One lazily re-armed timer per line: a timer left from an earlier request must
    # neither cut a later attempt short nor leave it waiting longer.
    client, _ = make(
        lambda req, n: [reply(req, b"\x00")] if n in (1, 3) else [], timeout_s=0.5, retries=0
    )
    loop = asyncio.get_running_loop()
    await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))  # arms at t=0.5
    await asyncio.sleep(0.3)
    start = loop.time()
    with pytest.raises(IpmiTimeout):
        await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))
    assert loop.time() - start == pytest.approx(0.5)
    await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))  # arms at +0.5
    client.timeout_s = 0.1  # shorter than the pending timer: re-armed earlier
    start = loop.time()
    with pytest.raises(IpmiTimeout):
        await client.call(NetFn.OEM_SUPERMICRO, 0x45, b"\x00", length=(1, 1))
    assert loop.time() - start == pytest.approx(0.1)
