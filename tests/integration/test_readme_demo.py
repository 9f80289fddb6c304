"""The README's first command, as written: scripts/demo brings up the simulated
pod with the daemon and shows every device online (--once stops after that),
without tracebacks; when a part cannot start it says which and where its log is."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from tests.helpers import communicate, free_tcp_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


async def _demo_once(tmp_path: Path, mqtt_port: int) -> tuple[int, str]:
    env = {
        **os.environ,
        "MEGAPOD_DEMO_DIR": str(tmp_path / "demo"),
        "MEGAPOD_DEMO_MQTT_PORT": str(mqtt_port),
        # The CDU takes this port and the PDUs the next ones.
        "MEGAPOD_DEMO_BASE_PORT": str(free_tcp_port()),
        "MEGAPOD_DEMO_METRICS_LISTEN": f"127.0.0.1:{free_tcp_port()}",
    }
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "demo"),
        "--once",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    code, out, _ = await communicate(proc, timeout_s=120)
    return code, out.decode()


async def test_scripts_demo_shows_the_pod_online(tmp_path: Path) -> None:
    code, text = await _demo_once(tmp_path, free_tcp_port())
    assert code == 0, text
    for device in ("cdu1", "pdu-r1a", "pdu-r2a", "r1s01", "r2s04"):
        assert device in text
    assert "offline" not in text and "MQTT connected" in text
    assert "Traceback" not in text and "Warning" not in text
    # Stopped in order (daemon before broker): its log ends without an error.
    log = (tmp_path / "demo" / "megapodd.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log


async def test_scripts_demo_names_the_part_that_failed_and_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the demo's broker cannot listen here
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, text = await _demo_once(tmp_path, taken.getsockname()[1])
    assert code == 1, text
    assert "demo: the broker did not start" in text
    assert "Address already in use" in text  # the log's last lines are shown
    assert f"all logs are in {tmp_path / 'demo'}" in text
    assert "Traceback" not in text
