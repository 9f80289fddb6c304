"""Invariant 5: the daemon heartbeats the CDU's comm watchdog from its control
tick, so the CDU never falls back while the daemon lives, and does once it is
gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from megapodd.store import DeviceState
from sim_devices.cdu import SimulatedCdu
from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

WATCHDOG_S = 4


async def test_heartbeats_hold_the_cdu_watchdog_and_it_expires_without_them(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    async with SimulatedCdu() as cdu:
        await cdu.start("127.0.0.1", 0)
        cdu.state.watchdog_timeout_s = 600  # the daemon sets its own on connect
        config = write_config(tmp_path, mosquitto, "pod-wd", cdu.port, extra="")
        text = config.read_text().replace(
            "timeout_s = 0.5", f"timeout_s = 0.5\nwatchdog_timeout_s = {WATCHDOG_S}"
        )
        config.write_text(text)
        async with running_daemon(config) as daemon:
            await wait_until(
                lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, timeout_s=5
            )
            assert cdu.state.watchdog_timeout_s == WATCHDOG_S  # armed by the daemon
            # Two and a half watchdog periods with the daemon alive: never expired.
            expired_seen = False

            async def watch() -> None:
                nonlocal expired_seen
                while True:
                    expired_seen |= cdu.state.watchdog_expired
                    await asyncio.sleep(0.1)

            with pytest.raises(TimeoutError):
                async with asyncio.timeout(WATCHDOG_S * 2.5):
                    await watch()
            assert not expired_seen
            heartbeats = [value for address, value in cdu.writes if address == 106]
            assert len(heartbeats) >= 8  # about four per watchdog period
        # The daemon is gone: the CDU goes to its failsafe speed by itself.
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await wait_until(lambda: cdu.state.watchdog_expired, timeout_s=WATCHDOG_S + 2)
        assert loop.time() - stopped <= WATCHDOG_S + 1.5
        assert cdu.input_registers()[14] & (1 << 6)  # status b6 on the wire
