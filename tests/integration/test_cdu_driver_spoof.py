"""Answers that are well-formed Modbus but not the answer to our request are
refused: another function's reply, transaction id 0, a write echo that differs."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest

from drivers.errors import TransportError
from drivers.modbus.cdu import CduDriver

pytestmark = pytest.mark.integration

# Answer: given the request's transaction id, function and body, the bytes to send.
Forge = Callable[[int, int, bytes], bytes]


def _mbap(tid: int, pdu: bytes, unit: int = 1) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def _registers(function: int, count: int) -> bytes:
    return bytes((function, 2 * count)) + bytes(2 * count)


async def _run_with(forge: Forge, action: Callable[[CduDriver], object]) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, _ = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                writer.write(forge(tid, pdu[0], pdu[1:]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = CduDriver(f"modbus+tcp://127.0.0.1:{port}", timeout_s=0.5, retries=0)
    try:
        with pytest.raises(TransportError):
            await action(driver)  # type: ignore[misc]
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()


async def test_another_functions_reply_is_refused() -> None:
    await _run_with(
        lambda tid, function, _body: _mbap(tid, _registers(3, 18)),  # FC 03 for an FC 04
        lambda d: d.read_input_block(),
    )


async def test_a_reply_with_transaction_id_zero_is_refused() -> None:
    await _run_with(
        lambda _tid, function, _body: _mbap(0, _registers(function, 18)),
        lambda d: d.read_input_block(),
    )


async def test_a_write_echo_that_differs_is_refused() -> None:
    def forge(tid: int, function: int, body: bytes) -> bytes:
        address, _value = struct.unpack(">HH", body)
        return _mbap(tid, struct.pack(">BHH", function, address, 0xBEEF))

    await _run_with(forge, lambda d: d.heartbeat())
