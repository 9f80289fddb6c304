"""A small client for the local API, used by megapodctl and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Mapping
from pathlib import Path

from megapodd.commands.payload import MAX_REQUEST_BYTES

# A full-pod status is large; the daemon's replies are bounded by what it has.
REPLY_LIMIT_BYTES = 64 * 1024 * 1024
# A full listen queue (a connection flood) answers connect() with EAGAIN: try again.
CONNECT_RETRY_S = 0.002


class ApiClientError(Exception):
    """The daemon refused the request, or (as DaemonUnreachable) did not answer."""


class DaemonUnreachable(ApiClientError):
    """No answer from the daemon: no socket, refused, closed, timed out, garbled."""


class DaemonNotRunning(DaemonUnreachable):
    """Nothing listens at the socket path (no file, or a stale socket)."""


class DaemonTimeout(DaemonUnreachable):
    """The daemon took the connection but did not answer in time."""


class SocketNotPermitted(ApiClientError):
    """The caller may not open the socket (not in the daemon's reader group)."""


class _Broken(Exception):
    """The connection failed mid-exchange; `sent` says whether the request was out."""

    def __init__(self, sent: bool) -> None:
        super().__init__()
        self.sent = sent


async def _connect(socket_path: Path) -> socket.socket:
    """A connected Unix socket; waits (under the caller's timeout) while the
    daemon's listen queue is full. asyncio's own connect would take EAGAIN for
    "in progress" and hand back a socket that is not connected."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.connect(str(socket_path))
            except BlockingIOError:
                await asyncio.sleep(CONNECT_RETRY_S)
            else:
                return sock
    except BaseException:
        sock.close()
        raise


async def _exchange(socket_path: Path, request: bytes) -> tuple[bytes, bool]:
    """(the reply line, whether the whole request was sent)."""
    sock = await _connect(socket_path)
    try:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=REPLY_LIMIT_BYTES)
    except BaseException:
        sock.close()
        raise
    sent = False
    try:
        try:
            writer.write(request)
            await writer.drain()
            sent = True
            return await reader.readline(), sent
        except (OSError, ValueError) as exc:  # ValueError: a reply over the limit
            raise _Broken(sent) from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _lost(socket_path: Path, sent: bool) -> DaemonUnreachable:
    if sent:
        return DaemonUnreachable(
            f"megapodd at {socket_path} closed the connection without answering "
            "(the request was sent: whether it ran is unknown)"
        )
    return DaemonUnreachable(
        f"megapodd at {socket_path} closed the connection before taking the request "
        "(it did not run)"
    )


async def call(
    socket_path: Path, cmd: str, args: Mapping[str, object] | None = None, timeout_s: float = 10.0
) -> object:
    """Send one request and return its result; ApiClientError if refused,
    DaemonUnreachable if there is no answer."""
    request = json.dumps({"cmd": cmd, "args": dict(args or {})}).encode() + b"\n"
    if len(request) > MAX_REQUEST_BYTES:
        raise ApiClientError(f"request is {len(request)} bytes; at most {MAX_REQUEST_BYTES}")
    try:
        async with asyncio.timeout(timeout_s):
            line, sent = await _exchange(socket_path, request)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonNotRunning(
            f"megapodd is not running at {socket_path} ({exc.strerror})"
        ) from None
    except PermissionError:
        raise SocketNotPermitted(f"no permission to open {socket_path}") from None
    except TimeoutError:
        raise DaemonTimeout(
            f"megapodd at {socket_path} did not answer in {timeout_s:g} s"
        ) from None
    except _Broken as exc:
        raise _lost(socket_path, exc.sent) from None
    except OSError as exc:
        raise DaemonUnreachable(f"cannot reach megapodd at {socket_path}: {exc.strerror}") from None
    if not line.endswith(b"\n"):
        raise _lost(socket_path, sent)
    try:
        response = json.loads(line)
    except ValueError:
        raise DaemonUnreachable(f"megapodd at {socket_path} answered with no JSON") from None
    if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
        raise DaemonUnreachable(f"megapodd at {socket_path} answered without an ok field")
    if not response["ok"]:
        raise ApiClientError(str(response.get("error", "unknown error")))
    return response.get("result")
