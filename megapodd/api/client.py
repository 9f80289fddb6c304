"""A small client for the local API, used by megapodctl and the tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

from megapodd.commands.payload import MAX_REQUEST_BYTES


class ApiClientError(Exception):
    """The daemon refused the request or could not be reached."""


async def call(
    socket_path: Path, cmd: str, args: Mapping[str, object] | None = None, timeout_s: float = 10.0
) -> object:
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(
                str(socket_path), limit=16 * MAX_REQUEST_BYTES * 64
            )
            try:
                request = {"cmd": cmd, "args": dict(args or {})}
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                await writer.wait_closed()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ApiClientError(f"megapodd is not running at {socket_path} ({exc.strerror})") from None
    except PermissionError:
        raise ApiClientError(f"no permission to open {socket_path}") from None
    except TimeoutError:
        raise ApiClientError(f"megapodd at {socket_path} did not answer in {timeout_s} s") from None
    if not line:
        raise ApiClientError("megapodd closed the connection without answering")
    response = json.loads(line)
    if not response.get("ok"):
        raise ApiClientError(str(response.get("error", "unknown error")))
    return response.get("result")
