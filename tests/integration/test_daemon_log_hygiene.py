"""Malformed Modbus frames (issue 14, finding 6): pymodbus and asyncio complain,
and the daemon's stderr stays JSON lines only: no traceback, no frame dump."""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_helpers import write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _mbap(tid: int, pdu: bytes, length: int | None = None, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1 if length is None else length, 1) + pdu


# Answers to a read of 18 input registers that no CDU should send.
MALFORMED: list[Callable[[int], bytes]] = [
    lambda tid: _mbap(tid, bytes((4, 36)) + bytes(2)),  # byte count past the data
    lambda tid: _mbap(tid, bytes((0x99, 0))),  # no such function
    lambda tid: b"\xde\xad\xbe\xef" * 5,  # line noise
    lambda tid: _mbap(tid, bytes((4, 36)) + bytes(36), length=40),  # length past the frame
    lambda tid: _mbap(tid, bytes((4, 36)) + bytes(36), protocol=7),  # not Modbus
    lambda tid: _mbap(tid, bytes((0x84,))),  # an exception without its code
]


async def test_malformed_cdu_frames_leave_only_json_on_stderr(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    sent = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, _ = struct.unpack(">HHHB", header)
                await reader.readexactly(length - 1)
                writer.write(MALFORMED[sent % len(MALFORMED)](tid))
                sent += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = write_config(tmp_path, mosquitto, "pod-logs", cdu_port=port)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "megapodd"), "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_until(lambda: sent >= len(MALFORMED) + 1, timeout_s=60, interval_s=0.1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, err = await proc.communicate()
        server.close()
        await server.wait_closed()
    text = err.decode()
    assert "Traceback" not in text and ">>>>>" not in text
    records = [json.loads(line) for line in text.splitlines()]  # each line is JSON
    assert all(isinstance(r, dict) and "event" in r and "level" in r for r in records)
    loggers = {r.get("logger") for r in records}
    assert "pymodbus.logging" in loggers, text
    library = [r for r in records if r.get("logger")]
    assert all("\n" not in str(r["event"]) for r in library)
