"""Local API: newline-delimited JSON over a Unix socket (a thin transport).

Request:  {"cmd": "status", "args": {...}}
Response: {"ok": true, "result": ...} or {"ok": false, "error": "..."}

The caller's role comes from the kernel (SO_PEERCRED), never from the request:
members of the reader group may read; root, the daemon's own user and members
of the admin group may act. What a command is and does is megapodd/commands/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

import structlog

from megapodd.commands.caller import Caller, group_id, role_for
from megapodd.commands.dispatch import Command, RefusalAudit, refused, run_command
from megapodd.commands.payload import MAX_REQUEST_BYTES, loads_strict

log = structlog.get_logger("megapodd.api")

# A client that says nothing for this long is dropped, and no more than this
# many may be connected: a stuck script must not use up the daemon's files.
IDLE_TIMEOUT_S = 60.0
MAX_CLIENTS = 32


def peer_caller(sock: socket.socket, reader_group: str, admin_group: str) -> Caller:
    """The caller as the kernel tells it (SO_PEERCRED), never as the request says."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Caller(uid=uid, pid=pid, role=role_for(uid, gid, reader_group, admin_group))


class ApiServer:
    def __init__(
        self,
        path: Path,
        commands: Mapping[str, Command],
        reader_group: str = "megapod",
        admin_group: str = "megapod-admin",
        on_refused: RefusalAudit | None = None,
    ) -> None:
        self._path = path
        self._on_refused = on_refused
        self._clients = 0
        self._commands = dict(commands)
        self._reader_group = reader_group
        self._admin_group = admin_group

    async def run(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(
            self._serve_client, path=str(self._path), limit=MAX_REQUEST_BYTES
        )
        # Group members reach the socket; the role check decides what they may do.
        os.chmod(self._path, 0o660)
        reader_gid = group_id(self._reader_group)
        # Root may give it to any group; anyone else only to a group it is in.
        if reader_gid is not None and (os.geteuid() == 0 or reader_gid in os.getgroups()):
            os.chown(self._path, -1, reader_gid)
        log.info("api_listening", socket=str(self._path))
        try:
            async with server:
                await server.serve_forever()
        finally:
            self._path.unlink(missing_ok=True)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        caller = peer_caller(sock, self._reader_group, self._admin_group)
        self._clients += 1
        try:
            if self._clients > MAX_CLIENTS:
                await self._reply(writer, {"ok": False, "error": "too many clients; try again"})
                return
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_S):
                        line = await reader.readline()
                except ValueError:  # longer than the stream limit
                    await self._reply(writer, {"ok": False, "error": "request too long"})
                    return
                except TimeoutError:
                    return
                if not line:
                    return
                response = await self._handle(line, caller)
                await self._reply(writer, response)
        except ConnectionError:
            return
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _reply(self, writer: asyncio.StreamWriter, response: Mapping[str, object]) -> None:
        writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
        await writer.drain()

    async def _handle(self, line: bytes, caller: Caller) -> dict[str, object]:
        try:
            request = loads_strict(line)
        except ValueError as exc:
            return refused(str(exc))
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return refused('request must be an object with a string "cmd"')
        args = request.get("args", {})
        if not isinstance(args, dict):
            return refused('"args" must be an object')
        return await run_command(self._commands, self._on_refused, request["cmd"], args, caller)


