"""Local API: newline-delimited JSON over a Unix socket.

Request:  {"cmd": "status", "args": {...}}
Response: {"ok": true, "result": ...} or {"ok": false, "error": "..."}

The caller's role comes from the kernel (SO_PEERCRED), never from the request:
members of the reader group may read; root, the daemon's own user and members
of the admin group may act.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import grp
import json
import math
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from megapodd.safe_files import FileRefused, check_socket_path

log = structlog.get_logger("megapodd.api")

MAX_REQUEST_BYTES = 64 * 1024
# A client that says nothing for this long is dropped, and no more than this
# many may be connected: a stuck script must not use up the daemon's files.
IDLE_TIMEOUT_S = 60.0
MAX_CLIENTS = 32


class Role(enum.IntEnum):
    NONE = 0
    READER = 1
    ADMIN = 2


class ApiError(Exception):
    """A request was refused; the message goes back to the caller."""

    def __init__(self, message: str, audited: bool = False) -> None:
        super().__init__(message)
        self.audited = audited  # an event already records this refusal


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, as the kernel tells it; commands are audited with it."""

    uid: int
    pid: int
    role: Role
    via: str = "socket"  # or "mqtt": a fleet command through the broker

    def as_json(self) -> dict[str, object]:
        return {"uid": self.uid, "pid": self.pid, "role": self.role.name.lower(), "via": self.via}

    @property
    def who(self) -> str:
        """How claims and releases name their author: "uid 1001" or "mqtt"."""
        return f"uid {self.uid}" if self.via == "socket" else self.via


Handler = Callable[[Mapping[str, object], Caller], Awaitable[object]]
# Told of every acting request refused before its handler ran (for the audit trail).
RefusalAudit = Callable[[str, Mapping[str, object], Caller, str], None]


@dataclass(frozen=True, slots=True)
class Command:
    handler: Handler
    role: Role  # the least role allowed to call it
    help: str


def _refuse_constant(name: str) -> object:
    """NaN and Infinity are not JSON; a request carrying one is refused."""
    raise ValueError(f"request is not JSON: {name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"request is not JSON: {text} is out of range for a number")
    return value


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def peer_caller(sock: socket.socket, reader_group: str, admin_group: str) -> Caller:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Caller(uid=uid, pid=pid, role=_role(uid, gid, reader_group, admin_group))


def _role(uid: int, gid: int, reader_group: str, admin_group: str) -> Role:
    if uid in (0, os.getuid()):
        return Role.ADMIN
    try:
        groups = set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except KeyError:
        groups = {gid}
    admin_gid, reader_gid = _group_id(admin_group), _group_id(reader_group)
    if admin_gid is not None and admin_gid in groups:
        return Role.ADMIN
    if reader_gid is not None and reader_gid in groups:
        return Role.READER
    return Role.NONE


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
        _remove_socket(self._path)
        server = await asyncio.start_unix_server(
            self._serve_client, path=str(self._path), limit=MAX_REQUEST_BYTES
        )
        # Group members reach the socket; the role check decides what they may do.
        os.chmod(self._path, 0o660)
        reader_gid = _group_id(self._reader_group)
        # Root may give it to any group; anyone else only to a group it is in.
        if reader_gid is not None and (os.geteuid() == 0 or reader_gid in os.getgroups()):
            os.chown(self._path, -1, reader_gid)
        log.info("api_listening", socket=str(self._path))
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileRefused):
                _remove_socket(self._path)

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
            return {"ok": False, "error": str(exc)}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a string "cmd"'}
        args = request.get("args", {})
        if not isinstance(args, dict):
            return {"ok": False, "error": '"args" must be an object'}
        return await run_command(self._commands, self._on_refused, request["cmd"], args, caller)


def _remove_socket(path: Path) -> None:
    """Remove a socket left at `path` (a stale one); refuse to remove anything else."""
    check_socket_path(path)
    path.unlink(missing_ok=True)


def loads_strict(data: bytes) -> object:
    """JSON as a request may carry it: no NaN, no Infinity, no overflowing number.
    Raises ValueError with a message that names the problem."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"request is {len(data)} bytes; at most {MAX_REQUEST_BYTES}")
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"request is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("request is not JSON the daemon accepts: nested too deeply") from None


async def run_command(
    commands: Mapping[str, Command],
    on_refused: RefusalAudit | None,
    name: str,
    args: Mapping[str, object],
    caller: Caller,
) -> dict[str, object]:
    """Check the caller's role, run the command, and audit refusals of acting ones."""
    command = commands.get(name)
    if command is None:
        return {"ok": False, "error": f"unknown command {name!r}; known: {sorted(commands)}"}
    if caller.role < command.role:
        error = f"{name!r} needs the {command.role.name.lower()} role"
        if command.role is Role.ADMIN and on_refused is not None:
            on_refused(name, args, caller, error)
        return {"ok": False, "error": error}
    try:
        result = await command.handler(args, caller)
    except ApiError as exc:
        if command.role is Role.ADMIN and not exc.audited and on_refused is not None:
            on_refused(name, args, caller, str(exc))
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # the daemon must outlive a bad request
        log.exception("api_command_failed", cmd=name)
        return {"ok": False, "error": f"{name} failed: {type(exc).__name__}: {exc}"}
    return {"ok": True, "result": result}
