"""Files that change into something hostile after validation: the daemon reads them
with the same bounded, non-blocking reader, so a FIFO never hangs its loop."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from megapodd.api.client import call
from megapodd.app import Daemon
from megapodd.config import ConfigError, load_config
from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration


async def test_a_password_file_turned_fifo_leaves_the_daemon_answering(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text("pw\n")
    path = write_config(tmp_path, mosquitto, "pod-fifo")
    path.write_text(
        path.read_text().replace(
            "snapshot_s = 5.0", f'snapshot_s = 5.0\npassword_file = "{password}"'
        )
    )
    config = load_config(path)
    # Swapped after validation: the publisher reads it again on every connect.
    password.unlink()
    os.mkfifo(password)
    async with running_daemon(config) as daemon:
        sock = config.api.socket
        await wait_until(sock.exists, timeout_s=5)
        started = time.monotonic()
        async with asyncio.timeout(2):
            status: Any = await call(sock, "status")
        assert time.monotonic() - started < 2.0
        assert status["pod"]["mqtt"]["connected"] is False
        assert daemon.mqtt.connected is False


async def test_a_pdu_key_file_turned_fifo_stops_the_start_with_its_key(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    key = tmp_path / "auth"
    key.write_text("auth-passphrase\n")
    extra = (
        f'[[pdu]]\nid = "pdu1"\nhost = "127.0.0.1"\nrack = 1\nversion = "3"\nuser = "u"\n'
        f'auth_key_file = "{key}"\n'
    )
    path = write_config(tmp_path, mosquitto, "pod-key", extra=extra)
    config = load_config(path)
    key.unlink()
    os.mkfifo(key)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        Daemon(config, config_path=path)
    assert time.monotonic() - started < 2.0
    [problem] = caught.value.problems
    assert problem.startswith("pdu.0.auth_key_file: ") and "it is a FIFO" in problem
