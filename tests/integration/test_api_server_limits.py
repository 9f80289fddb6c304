"""The local API's connection limits, one at a time, on a real socket: per uid,
slots kept for admins, a client that does not read its replies is dropped, and
the request budget paces a flood instead of refusing it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from megapodd.api import server
from megapodd.api.server import ApiServer, _RequestBudget
from megapodd.commands.caller import Caller, Role
from megapodd.commands.dispatch import Command
from megapodd.commands.requests import EmptyRequest
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

BIG = {"blob": "x" * 200_000}  # a reply far larger than the socket buffers


async def _big(_request: EmptyRequest, _caller: Caller) -> object:
    return BIG


async def _ping(_request: EmptyRequest, _caller: Caller) -> object:
    return "pong"


COMMANDS = {
    "big": Command(_big, EmptyRequest, Role.READER, "a large reply"),
    "ping": Command(_ping, EmptyRequest, Role.READER, "a small reply"),
}


@contextlib.asynccontextmanager
async def _serving(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, Path]]:
    path = tmp_path / "api.sock"
    api = ApiServer(path, COMMANDS)
    task = asyncio.create_task(api.run(), name="api-under-test")
    try:
        await wait_until(path.exists, timeout_s=5)
        yield api, path
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await wait_until(lambda: not api._tasks, timeout_s=5)


async def _open(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path), limit=1 << 22)


async def _ask(
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], cmd: str = "ping"
) -> dict[str, object]:
    reader, writer = streams
    writer.write(json.dumps({"cmd": cmd}).encode() + b"\n")
    await writer.drain()
    async with asyncio.timeout(5):
        reply: dict[str, object] = json.loads(await reader.readline())
    return reply


async def _close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid limit is checked for root here")
async def test_one_uid_gets_eight_connections_and_the_ninth_is_refused(tmp_path: Path) -> None:
    async with _serving(tmp_path) as (api, path):
        conns = [await _open(path) for _ in range(server.MAX_CLIENTS_PER_UID)]
        try:
            for conn in conns:
                assert (await _ask(conn))["ok"] is True
            extra = await _open(path)
            async with asyncio.timeout(5):
                refused = json.loads(await extra[0].readline())
            assert refused == {
                "ok": False,
                "error": "too many connections from uid 0 (at most 8); try again",
            }
            assert await extra[0].read() == b""  # and closed
            await _close_all([extra, conns.pop()])
            # A slot is free again once one of the eight has gone.
            await wait_until(lambda: api._clients == server.MAX_CLIENTS_PER_UID - 1, timeout_s=5)
            again = await _open(path)
            conns.append(again)
            assert (await _ask(again))["ok"] is True
        finally:
            await _close_all(conns)


async def test_the_last_slots_are_kept_for_admins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = {"now": Role.READER}
    monkeypatch.setattr(server, "role_for", lambda *_: role["now"])
    monkeypatch.setattr(server, "ROLE_CACHE_S", 0.0)
    monkeypatch.setattr(server, "MAX_CLIENTS", 4)
    monkeypatch.setattr(server, "ADMIN_RESERVED", 2)
    async with _serving(tmp_path) as (_api, path):
        conns = [await _open(path) for _ in range(2)]
        try:
            for conn in conns:
                assert (await _ask(conn))["ok"] is True
            reader_extra = await _open(path)
            async with asyncio.timeout(5):
                refused = json.loads(await reader_extra[0].readline())
            assert refused == {"ok": False, "error": "too many clients; try again"}
            await _close_all([reader_extra])
            role["now"] = Role.ADMIN
            for _ in range(2):
                admin = await _open(path)
                conns.append(admin)
                assert (await _ask(admin))["ok"] is True
        finally:
            await _close_all(conns)


async def test_a_client_that_does_not_read_is_dropped_and_its_slot_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "WRITE_TIMEOUT_S", 0.5)
    async with _serving(tmp_path) as (api, path):
        _reader, writer = await _open(path)
        try:
            async with asyncio.timeout(10):
                with pytest.raises(ConnectionError):
                    while True:  # requests for large replies, never read
                        writer.write(b'{"cmd":"big"}\n' * 8)
                        await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await wait_until(lambda: api._clients == 0, timeout_s=5)
        fresh = await _open(path)
        try:
            assert (await _ask(fresh))["ok"] is True
        finally:
            await _close_all([fresh])


def test_the_request_budget_paces_a_flood_and_refills() -> None:
    budget = _RequestBudget(server.REQUEST_BURST, 0.0)
    waits = [budget.wait_s(0.0) for _ in range(int(server.REQUEST_BURST))]
    assert waits == [0.0] * int(server.REQUEST_BURST)  # a burst goes through at once
    # Then each one waits its turn at REQUESTS_PER_S_PER_UID.
    step_s = 1.0 / server.REQUESTS_PER_S_PER_UID
    assert budget.wait_s(0.0) == pytest.approx(step_s)
    assert budget.wait_s(0.0) == pytest.approx(2 * step_s)
    # Quiet for a while: the bucket refills, but never past the burst.
    assert budget.wait_s(100.0) == 0.0
    assert budget.tokens == server.REQUEST_BURST - 1
