"""megapodd as a real process: MQTT Will on SIGKILL, clean SIGTERM, sd_notify,
megapodctl against it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sim_devices.cdu import SimulatedCdu
from tests.daemon_helpers import megapodctl, read_retained, retained_when, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


async def _start_daemon(
    config: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "megapodd"),
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


@pytest.fixture
async def cdu() -> AsyncIterator[SimulatedCdu]:
    sim = SimulatedCdu()
    await sim.start("127.0.0.1", 0)
    try:
        yield sim
    finally:
        await sim.close()


async def test_retained_state_then_will_on_sigkill(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu
) -> None:
    cdu.state.flow_lpm = 240.0
    config = write_config(tmp_path, mosquitto, "pod-will", cdu.port)
    proc = await _start_daemon(config)
    try:
        sock = tmp_path / "d.sock"

        async def cdu_online() -> bool:
            if not sock.exists():
                return False
            code, out, _ = await megapodctl("--socket", str(sock), "status", "--json")
            return code == 0 and json.loads(out)["devices"][0]["state"] == "online"

        await wait_until(cdu_online, timeout_s=15, interval_s=0.3)
        status: Any = await read_retained(mosquitto, "megapod/v1/pod-will/status")
        assert status["state"] == "online" and status["boot_id"]
        state = await retained_when(
            mosquitto,
            "megapod/v1/pod-will/devices/cdu1/state",
            lambda p: p["state"] == "online" and "flow_lpm" in p["points"],
        )
        assert state["kind"] == "cdu" and state["state"] == "online"
        flow = state["points"]["flow_lpm"]
        assert flow["unit"] == "lpm" and flow["quality"] == "good" and flow["value"] > 0
        assert state["points"]["supply_temp_c"]["unit"] == "C"

        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        # The broker publishes the Will once it notices the dead connection.
        async def offline() -> bool:
            got: Any = await read_retained(mosquitto, "megapod/v1/pod-will/status")
            return bool(got["state"] == "offline" and got["boot_id"] == status["boot_id"])

        await wait_until(offline, timeout_s=10, interval_s=0.2)
    finally:
        await _reap(proc)


async def test_sigterm_publishes_offline_and_exits_within_5_s(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu
) -> None:
    config = write_config(tmp_path, mosquitto, "pod-term", cdu.port)
    proc = await _start_daemon(config)
    loop = asyncio.get_running_loop()
    try:

        async def online() -> bool:
            got: Any = await read_retained(mosquitto, "megapod/v1/pod-term/status")
            return bool(got["state"] == "online")

        await wait_until(online, timeout_s=15, interval_s=0.2)
        # At start the daemon hands the unclaimed pumps to the CDU's own Δp
        # control (register 101 = 1); everything after that must be heartbeats.
        await wait_until(lambda: (101, 1) in cdu.writes, timeout_s=10)
        writes_before = len(cdu.writes)
        setpoint_before = cdu.state.pump_speed_setpoint_pct
        started = loop.time()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            code = await proc.wait()
        assert code == 0
        assert loop.time() - started < 5.0
        got: Any = await read_retained(mosquitto, "megapod/v1/pod-term/status")
        assert got["state"] == "offline"
        # Stopping is not a fault: nothing but heartbeats was written on the way out.
        assert all(addr == 106 for addr, _ in cdu.writes[writes_before:])
        assert cdu.state.pump_speed_setpoint_pct == setpoint_before
    finally:
        await _reap(proc)


async def test_sd_notify_ready_and_watchdog_from_the_tick(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu
) -> None:
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)
    config = write_config(tmp_path, mosquitto, "pod-notify", cdu.port)
    loop = asyncio.get_running_loop()
    proc = await _start_daemon(
        config, {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    )
    messages: list[str] = []
    try:
        async with asyncio.timeout(15):
            while sum(m == "WATCHDOG=1" for m in messages) < 4:
                data = await loop.sock_recv(receiver, 4096)
                messages.append(data.decode())
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            while "STOPPING=1" not in messages:
                messages.append((await loop.sock_recv(receiver, 4096)).decode())
            await proc.wait()
    finally:
        receiver.close()
        await _reap(proc)
    ready = [m for m in messages if m.startswith("READY=1")]
    assert len(ready) == 1
    assert messages.index(ready[0]) < messages.index("WATCHDOG=1")
    assert "STOPPING=1" in messages


async def test_megapodctl_status_table_and_json(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu
) -> None:
    config = write_config(tmp_path, mosquitto, "pod-ctl", cdu.port)
    proc = await _start_daemon(config)
    sock = str(tmp_path / "d.sock")
    try:

        async def online() -> bool:
            code, out, _ = await megapodctl("--socket", sock, "status", "--json")
            return code == 0 and json.loads(out)["devices"][0]["state"] == "online"

        await wait_until(online, timeout_s=15, interval_s=0.3)
        code, out, _ = await megapodctl("--socket", sock, "status", "--json")
        status = json.loads(out)
        assert status["pod"]["id"] == "pod-ctl"
        assert {"id", "kind", "state", "points"} <= set(status["devices"][0])
        code, table, _ = await megapodctl("--socket", sock, "status")
        assert code == 0
        assert "cdu1" in table and "online" in table and "supply_temp" in table
        code, _, err = await megapodctl("--socket", sock, "status", "no-such-device")
        assert code == 1 and "no device 'no-such-device'" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        await _reap(proc)
    code, _, err = await megapodctl("--socket", sock, "status")
    assert code == 3 and "not running" in err  # 3: megapodd did not answer
