"""The control socket: requests, replies, and bad input that never stops it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sim_devices.control import MAX_LINE_BYTES, ControlError, ControlServer, request

pytestmark = pytest.mark.integration


def handler(message: dict[str, Any]) -> dict[str, Any]:
    if message["op"] == "echo":
        return {"ok": True, "echo": message.get("text")}
    if message["op"] == "boom":
        raise KeyError("no such thing")
    raise ValueError(f"unknown op {message['op']!r}")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ControlServer]:
    control = ControlServer(tmp_path / "ctl" / "sim.sock", handler)
    await control.start()
    try:
        yield control
    finally:
        await control.close()


async def exchange(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=4 * MAX_LINE_BYTES)
    try:
        replies = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            async with asyncio.timeout(5):
                replies.append(json.loads(await reader.readline()))
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


async def test_requests_get_replies_and_bad_ones_get_errors_on_the_same_connection(
    server: ControlServer,
) -> None:
    replies = await exchange(
        server.path,
        b'{"op": "echo", "text": "hi"}\n',
        b"not json\n",
        b"[1, 2]\n",
        b'{"no_op": 1}\n',
        b'{"op": "nope"}\n',
        b'{"op": "boom"}\n',
        b"\xff\xfe\n",
        b'{"op": "echo", "text": "still here"}\n',
    )
    assert replies[0] == {"ok": True, "echo": "hi"}
    assert replies[1]["ok"] is False and "not JSON" in replies[1]["error"]
    assert replies[2] == {"ok": False, "error": "request must be a JSON object"}
    assert replies[3] == {"ok": False, "error": 'request needs an "op" string'}
    assert replies[4] == {"ok": False, "error": "unknown op 'nope'"}
    assert replies[5]["ok"] is False and "internal error: KeyError" in replies[5]["error"]
    assert replies[6]["ok"] is False and "not JSON" in replies[6]["error"]
    assert replies[7] == {"ok": True, "echo": "still here"}


async def test_an_overlong_line_is_refused_and_the_server_goes_on(server: ControlServer) -> None:
    replies = await exchange(server.path, b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    assert replies == [{"ok": False, "error": "request line too long"}]
    assert await exchange(server.path, b'{"op": "echo", "text": 1}\n') == [{"ok": True, "echo": 1}]


async def test_socket_is_private_and_removed_on_close(tmp_path: Path) -> None:
    control = ControlServer(tmp_path / "sim.sock", handler)
    await control.start()
    assert control.path.stat().st_mode & 0o777 == 0o600
    await control.close()
    assert not control.path.exists()


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    first = ControlServer(tmp_path / "sim.sock", handler)
    await first.start()
    # A killed sim leaves its socket file behind: the next one takes the path.
    assert first._server is not None
    first._server.close()
    await first._server.wait_closed()
    second = ControlServer(tmp_path / "sim.sock", handler)
    await second.start()
    try:
        assert (await exchange(second.path, b'{"op": "echo"}\n'))[0]["ok"] is True
    finally:
        await second.close()
        first._server = None
        await first.close()


async def test_blocking_client_reports_a_missing_simulator(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no simulator is running"):
        await asyncio.to_thread(request, tmp_path / "absent.sock", {"op": "status"})
