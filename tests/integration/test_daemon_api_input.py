"""Bad requests on the local socket get a clear error; the daemon carries on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from megapodd.api.client import call
from tests.daemon_helpers import read_retained, running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration


async def _raw(sock: Path, line: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(line)
        await writer.drain()
        async with asyncio.timeout(5):
            reply: dict[str, Any] = json.loads(await reader.readline())
        return reply
    finally:
        writer.close()
        await writer.wait_closed()


async def test_malformed_requests_are_refused_by_name(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    config = write_config(tmp_path, mosquitto, "pod-input")
    async with running_daemon(config) as daemon:
        sock = daemon.config.api.socket
        await wait_until(sock.exists, timeout_s=5)
        cases = {
            b"not json\n": "request is not JSON",
            b'{"cmd":"override","args":{"device":"x","output":"y","value":NaN}}\n': "NaN",
            b'{"cmd":"status","args":{"count":Infinity}}\n': "Infinity",
            b'{"cmd":"override","args":{"device":"x","output":"y","value":1e999}}\n': "1e999",
            b"[1,2]\n": 'request must be an object with a string "cmd"',
            b'{"cmd":"status","args":[]}\n': '"args" must be an object',
            b'{"cmd":"launch"}\n': "unknown command 'launch'",
            b'{"cmd":"events","args":{"count":0}}\n': "'count' must be an integer from 1 to 500",
            b"\xff\xfe\n": "request is not JSON",
        }
        for line, error in cases.items():
            reply = await _raw(sock, line)
            assert reply["ok"] is False and error in reply["error"], (line, reply)
        too_long = await _raw(sock, b'{"cmd":"status","pad":"' + b"x" * 70_000 + b'"}\n')
        assert too_long == {"ok": False, "error": "request too long"}
        # Still serving, still publishing: nothing above reached the events as NaN.
        status: Any = await call(sock, "status")
        assert status["pod"]["id"] == "pod-input"
        online: Any = await read_retained(mosquitto, "megapod/v1/pod-input/status")
        assert online["state"] == "online"
