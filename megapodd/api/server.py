"""Local API: newline-delimited JSON over a Unix socket (a thin transport).

Request:  {"cmd": "status", "args": {...}}
Response: {"ok": true, "result": ...} or {"ok": false, "error": "..."}

The caller's role comes from the kernel (SO_PEERCRED), never from the request:
members of the reader group may read; root, the daemon's own user and members
of the admin group may act. What a command is and does is megapodd/commands/.
No local client can lock it: connections are limited per uid (checked from the
kernel's credentials before anything else), the last slots are kept for root
and admins, requests are paced per uid, and a client that does not read its
replies is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from megapodd.commands.caller import Caller, Role, group_id, role_for
from megapodd.commands.dispatch import Command, RefusalAudit, refused, run_command
from megapodd.commands.payload import MAX_REQUEST_BYTES, loads_strict
from megapodd.safe_files import FileRefused, check_socket_path

log = structlog.get_logger("megapodd.api")

# A client that says nothing for this long is dropped, and one that does not
# read its reply for WRITE_TIMEOUT_S too: a stuck script must not hold a slot.
IDLE_TIMEOUT_S = 60.0
WRITE_TIMEOUT_S = 5.0
# Connections are counted per uid, after the role check, so one local user
# cannot take them all; the last ADMIN_RESERVED are kept for root and admins.
MAX_CLIENTS = 128
MAX_CLIENTS_PER_UID = 8
ADMIN_RESERVED = 16
# Connections waiting for accept(); clients retry while it is full. Accepting
# is cheap (a refusal costs three system calls), so a connect flood does not
# keep it full, and at most ACCEPT_BATCH are taken per turn of the loop.
LISTEN_BACKLOG = 1024
ACCEPT_BATCH = 256
ACCEPT_RETRY_S = 1.0  # after EMFILE and the like: the error would repeat at once
# Requests per uid: a burst, then this many a second (a watch asks once a
# second). Past it a request waits its turn: a flood cannot starve the loop.
REQUESTS_PER_S_PER_UID = 20.0
REQUEST_BURST = 40.0
# Group lookups go through NSS; a connection flood must not make one per connect.
ROLE_CACHE_S = 5.0


class _NotReading(ConnectionError):
    """The client did not take its reply within WRITE_TIMEOUT_S."""


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, from the kernel."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


@dataclass(slots=True)
class _RequestBudget:
    """A token bucket per uid; tokens below zero are requests waiting their turn."""

    tokens: float
    at_s: float

    def wait_s(self, now_s: float) -> float:
        """Take one request; how long it must wait first."""
        elapsed_s = max(0.0, now_s - self.at_s)
        self.tokens = min(REQUEST_BURST, self.tokens + elapsed_s * REQUESTS_PER_S_PER_UID) - 1
        self.at_s = now_s
        return 0.0 if self.tokens >= 0 else -self.tokens / REQUESTS_PER_S_PER_UID


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
        self._clients_by_uid: collections.Counter[int] = collections.Counter()
        self._budgets: dict[int, _RequestBudget] = {}
        self._roles: dict[tuple[int, int], tuple[Role, float]] = {}  # (uid, gid) -> role, when
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references to the handlers
        self._commands = dict(commands)
        self._reader_group = reader_group
        self._admin_group = admin_group

    async def run(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        _remove_socket(self._path)
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.setblocking(False)
            listener.bind(str(self._path))
            listener.listen(LISTEN_BACKLOG)
            # Group members reach the socket; the role check decides what they may do.
            os.chmod(self._path, 0o660)
            reader_gid = group_id(self._reader_group)
            # Root may give it to any group; anyone else only to a group it is in.
            if reader_gid is not None and (os.geteuid() == 0 or reader_gid in os.getgroups()):
                os.chown(self._path, -1, reader_gid)
            log.info("api_listening", socket=str(self._path))
            loop.add_reader(listener.fileno(), self._accept, listener)
            try:
                await loop.create_future()  # serve until cancelled
            finally:
                loop.remove_reader(listener.fileno())
        finally:
            listener.close()
            # Idle handlers end with the server, not at loop teardown; one in
            # the middle of a command is not cancelled (it may be writing to a device).
            for writer in self._writers:
                writer.transport.abort()
            with contextlib.suppress(FileRefused):
                _remove_socket(self._path)

    def _accept(self, listener: socket.socket) -> None:
        """Take waiting connections; refuse the ones over a limit on the spot."""
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, most likely
                log.warning("api_accept_failed", error=str(exc), retry_in_s=ACCEPT_RETRY_S)
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_S, self._resume_accept, listener)
                return
            try:
                caller = self._admit(conn)
            except Exception:  # a failed lookup must not stop accepting
                log.exception("api_admission_failed")
                caller = None
            if caller is None:
                conn.close()
                continue
            self._clients += 1
            self._clients_by_uid[caller.uid] += 1
            task = loop.create_task(self._serve_client(conn, caller), name="api-client")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _admit(self, conn: socket.socket) -> Caller | None:
        """The caller, if it may have one more connection; else None, refused with a line."""
        conn.setblocking(False)
        try:
            pid, uid, gid = _peer_credentials(conn)
        except OSError:
            return None
        # The per-uid limit needs no role: checked first, a connect flood costs
        # no group lookup. The role is known before anything is counted.
        if self._clients_by_uid[uid] >= MAX_CLIENTS_PER_UID:
            refusal = f"too many connections from uid {uid} (at most {MAX_CLIENTS_PER_UID})"
        else:
            caller = Caller(uid=uid, pid=pid, role=self._role_of(uid, gid))
            limit = MAX_CLIENTS if caller.role is Role.ADMIN else MAX_CLIENTS - ADMIN_RESERVED
            if self._clients < limit:
                return caller
            refusal = "too many clients"
        with contextlib.suppress(OSError):  # one small line; never waited for
            conn.send(_reply_line({"ok": False, "error": f"{refusal}; try again"}))
        return None

    def _resume_accept(self, listener: socket.socket) -> None:
        if listener.fileno() >= 0:  # not closed meanwhile
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    async def _serve_client(self, conn: socket.socket, caller: Caller) -> None:
        uid = caller.uid
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_REQUEST_BYTES)
        except BaseException:
            conn.close()
            self._release(uid)
            raise
        self._writers.add(writer)
        try:
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
                await self._take_turn(uid)
                response = await self._handle(line, caller)
                await self._reply(writer, response)
        except ConnectionError:
            return
        finally:
            self._release(uid)
            await _close(writer)
            self._writers.discard(writer)

    def _release(self, uid: int) -> None:
        self._clients -= 1
        self._clients_by_uid[uid] -= 1
        if not self._clients_by_uid[uid]:
            del self._clients_by_uid[uid]

    def _role_of(self, uid: int, gid: int) -> Role:
        """The caller's role, looked up at most every ROLE_CACHE_S per (uid, gid)."""
        now_s = asyncio.get_running_loop().time()
        cached = self._roles.get((uid, gid))
        if cached is not None and now_s - cached[1] < ROLE_CACHE_S:
            return cached[0]
        if len(self._roles) >= MAX_CLIENTS:  # bounded: forget the lot, they are cheap
            self._roles.clear()
        role = role_for(uid, gid, self._reader_group, self._admin_group)
        self._roles[(uid, gid)] = (role, now_s)
        return role

    async def _take_turn(self, uid: int) -> None:
        """Wait while this uid is past its request rate."""
        now_s = asyncio.get_running_loop().time()
        budget = self._budgets.get(uid)
        if budget is None:
            if len(self._budgets) >= MAX_CLIENTS:  # bounded: keep only uids in debt
                self._budgets = {u: b for u, b in self._budgets.items() if b.tokens < 0}
            budget = self._budgets[uid] = _RequestBudget(REQUEST_BURST, now_s)
        wait_s = budget.wait_s(now_s)
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _reply(self, writer: asyncio.StreamWriter, response: Mapping[str, object]) -> None:
        writer.write(_reply_line(response))
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()  # drop what it did not read
            raise _NotReading from None

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


def _reply_line(response: Mapping[str, object]) -> bytes:
    return json.dumps(response, separators=(",", ":")).encode() + b"\n"


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a connection; a reply still unread after WRITE_TIMEOUT_S is dropped with it
    (a plain close would wait for the client to read it, for ever)."""
    writer.close()
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except ConnectionError:
        pass


def _remove_socket(path: Path) -> None:
    """Remove a socket left at `path` (a stale one); refuse to remove anything else."""
    check_socket_path(path)
    path.unlink(missing_ok=True)
