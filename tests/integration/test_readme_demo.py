"""The README's first command, as written: scripts/demo brings up the simulated
pod with the daemon and shows every device online (--once stops after that)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.helpers import free_tcp_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


async def test_scripts_demo_shows_the_pod_online(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MEGAPOD_DEMO_DIR": str(tmp_path / "demo"),
        "MEGAPOD_DEMO_MQTT_PORT": str(free_tcp_port()),
        # The CDU takes this port and the PDUs the next ones.
        "MEGAPOD_DEMO_BASE_PORT": str(free_tcp_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "demo"),
        "--once",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(120):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    for device in ("cdu1", "pdu-r1a", "pdu-r2a", "r1s01", "r2s04"):
        assert device in text
    assert "offline" not in text and "MQTT connected" in text
