"""SIGKILL the daemon while a leak rule is latched: on restart the rule is
latched again and the rack is isolated and powered off again, before the
daemon writes anything else to the devices (even if someone reopened the
rack by hand while it was down)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sim_devices.cdu import SimulatedCdu
from sim_devices.pdu import PduFarm, PduSpec, serve_pdus
from tests.daemon_helpers import megapodctl, write_config
from tests.helpers import MosquittoBroker, stop_processes, wait_until

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
ISOLATION, CONTROL_MODE, HEARTBEAT, WATCHDOG_TIMEOUT = 108, 101, 106, 105

RULES = """
[[pdu]]
id = "pdu-r1a"
host = "127.0.0.1"
port = {port}
rack = 1
outlets = 8
fast_poll_s = 0.5
slow_poll_s = 1.0
timeout_s = 0.5

[[interlock]]
id = "leak-tray-r1"
device = "cdu1"
point = "leak_zones"
trip_when = "bit"
bit = 0
on_stale = "hold"
actions = [{{do = "isolate_rack", rack = 1}}, {{do = "outlets_off", rack = 1}}]
"""


@pytest.fixture
async def cdu() -> AsyncIterator[SimulatedCdu]:
    async with SimulatedCdu() as sim:
        await sim.start("127.0.0.1", 0)
        yield sim


@pytest.fixture
async def farm() -> AsyncIterator[PduFarm]:
    async with await serve_pdus([PduSpec("pdu-r1a", outlets=8)]) as pdus:
        yield pdus


async def _start(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "megapodd"),
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=dict(os.environ),
    )


async def _rule_state(sock: str) -> str | None:
    code, out, _ = await megapodctl("--socket", sock, "interlocks", "--json")
    if code != 0:
        return None
    rules: dict[str, Any] = json.loads(out)
    return str(rules["leak-tray-r1"]["state"])


async def test_a_latched_leak_survives_sigkill_and_comes_back_first(
    tmp_path: Path, mosquitto: MosquittoBroker, cdu: SimulatedCdu, farm: PduFarm
) -> None:
    pdu = farm["pdu-r1a"].model
    extra = RULES.format(port=farm["pdu-r1a"].port)
    config = write_config(tmp_path, mosquitto, "pod-kill", cdu.port, extra=extra)
    sock = str(tmp_path / "d.sock")
    proc = await _start(config)
    try:
        await wait_until(lambda: _is(sock, "normal"), timeout_s=20, interval_s=0.2)
        cdu.state.leak_zones = 0b1
        await wait_until(lambda: _is(sock, "tripped"), timeout_s=5, interval_s=0.1)
        await wait_until(lambda: cdu.state.rack_isolation_mask == 0b1, timeout_s=5)
        await wait_until(lambda: not any(pdu.outlet_is_on(n) for n in range(1, 9)), 10)
        cdu.state.leak_zones = 0
        await wait_until(lambda: _is(sock, "latched"), timeout_s=5, interval_s=0.1)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        # While the daemon is down, someone reopens the rack and switches it on.
        cdu.state.rack_isolation_mask = 0
        for outlet in range(1, 9):
            pdu.switch(outlet, True)
        writes_before = len(cdu.writes)
        proc = await _start(config)
        await wait_until(lambda: cdu.state.rack_isolation_mask == 0b1, timeout_s=20)
        await wait_until(lambda: not any(pdu.outlet_is_on(n) for n in range(1, 9)), 10)
        assert await _rule_state(sock) == "latched"
        after = [a for a, _ in cdu.writes[writes_before:] if a not in (HEARTBEAT, WATCHDOG_TIMEOUT)]
        # The isolation is the first thing written; the pumps' hand-back to the
        # CDU's own control (the daemon's start-up default) only after it.
        assert after[0] == ISOLATION, after
        assert CONTROL_MODE not in after or after.index(CONTROL_MODE) > 0

        code, _, err = await megapodctl("--socket", sock, "reset", "leak-tray-r1")
        assert code == 0, err
        assert await _rule_state(sock) == "normal"
        await asyncio.sleep(1.0)
        assert cdu.state.rack_isolation_mask == 0b1  # reopening is someone's decision
    finally:
        await stop_processes(proc, timeout_s=10)


async def _is(sock: str, state: str) -> bool:
    return await _rule_state(sock) == state
