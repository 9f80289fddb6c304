"""The simulator's control socket: newline-delimited JSON over a Unix socket.

One request per line, one reply per line. Requests are objects with an "op":
``{"op": "inject", "fault": "leak", "args": ["r1s03"]}``,
``{"op": "clear", "fault": "leak", "args": []}`` (fault null: clear all),
``{"op": "status"}``. Replies are ``{"ok": true, ...}`` or
``{"ok": false, "error": "<what is wrong>"}``. A bad request never stops the
simulator: it gets an error reply and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MAX_LINE_BYTES = 64 * 1024  # a request is a few words; anything longer is not one
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class BadRequest(ValueError):
    """A request line that is not a well-formed request."""


class ControlError(Exception):
    """The simulator could not be reached or answered nonsense."""


def decode_request(line: bytes) -> dict[str, Any]:
    """Parse one request line; BadRequest names what is wrong."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadRequest("request must be a JSON object")
    if not isinstance(message.get("op"), str):
        raise BadRequest('request needs an "op" string')
    return message


class ControlServer:
    """Serves a handler on a Unix socket; owns its connection tasks."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()  # left by a killed run; a live sim would own the dir
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_LINE_BYTES
        )
        os.chmod(self.path, 0o600)  # fault injection is for this user only
        log.info("sim_control_listening", path=str(self.path))

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_encode({"ok": False, "error": "request line too long"}))
                    await writer.drain()
                    return
                writer.write(_encode(self._answer(line)))
                await writer.drain()
        except ConnectionError:
            return
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = decode_request(line)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        try:
            return self._handler(request)
        except ValueError as exc:  # the handler's way of saying "bad request"
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # one bad request must not end the control socket
            log.exception("sim_control_request_failed", op=request.get("op"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


def request(path: Path, message: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """One blocking request/reply (for the CLI, which has nothing else to do)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            sock.sendall(_encode(message))
            buffer = b""
            while not buffer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlError(f"simulator at {path} closed the connection")
                buffer += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"no simulator is running with control socket {path}") from None
    except TimeoutError:
        raise ControlError(f"simulator at {path} did not answer in {timeout_s:g} s") from None
    except OSError as exc:
        raise ControlError(f"cannot talk to the simulator at {path}: {exc.strerror}") from None
    reply = json.loads(buffer)
    if not isinstance(reply, dict):
        raise ControlError(f"simulator at {path} answered nonsense: {buffer[:80]!r}")
    return reply
