"""The daemon with simulated BMCs on ptys: points on MQTT with units, chassis
power through megapodctl seen on the next poll, fan and power-limit overrides."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from megapodd.api.client import call
from megapodd.store import DeviceState
from sim_devices.bmc import BmcFarm, BmcSpec, serve_bmcs
from tests.daemon_helpers import megapodctl, retained_when, running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

POLL_S = 1.0


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[BmcFarm]:
    bmcs = await serve_bmcs([BmcSpec("r1s01"), BmcSpec("r1s02")], tmp_path / "pty")
    try:
        yield bmcs
    finally:
        await bmcs.close()


def _bmc_sections(farm: BmcFarm) -> str:
    return "".join(
        f'[[bmc]]\nid = "{name}"\nport = "{farm[name].path}"\nrack = 1\npoll_s = {POLL_S}\n'
        for name in ("r1s01", "r1s02")
    )


async def test_bmc_points_reach_mqtt_and_chassis_off_shows_on_the_next_poll(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: BmcFarm
) -> None:
    state = farm["r1s01"].bmc.state
    state.gpu_temps_c[2] = 61.0
    state.inlet_temp_c = 24.0
    config = write_config(tmp_path, mosquitto, "pod-bmc", extra=_bmc_sections(farm))
    async with running_daemon(config) as daemon:
        await wait_until(
            lambda: (
                daemon.store.device("r1s01").state is DeviceState.ONLINE
                and daemon.store.get("r1s01", "chassis_power") is not None
            ),
            timeout_s=15,
        )
        published = await retained_when(
            mosquitto,
            "megapod/v1/pod-bmc/devices/r1s01/state",
            lambda p: (
                p["state"] == "online" and {"fan2_rpm", "chassis_power"} <= p["points"].keys()
            ),
        )
        points = published["points"]
        assert published["kind"] == "bmc" and published["state"] == "online"
        assert points["gpu3_temp_c"]["value"] == pytest.approx(61.0, abs=1.0)
        assert points["inlet_temp_c"]["value"] == pytest.approx(24.0, abs=1.0)
        assert points["fan2_rpm"]["quality"] == "good"
        assert points["psu_power_w"]["value"] > 0
        assert points["chassis_power"]["value"] == "on"
        units = {name: point["unit"] for name, point in points.items()}
        assert units["gpu3_temp_c"] and units["fan2_rpm"] and units["psu_power_w"]

        sock = str(tmp_path / "d.sock")
        code, out, err = await megapodctl("--socket", sock, "server", "r1s01", "off")
        assert code == 0, err
        assert "done; power off" in out
        assert not state.chassis_on
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await wait_until(
            lambda: (
                (p := daemon.store.get("r1s01", "chassis_power")) is not None and p.value == "off"
            ),
            timeout_s=POLL_S + 1.0,
        )
        assert loop.time() - asked <= POLL_S + 1.0
        other = daemon.store.get("r1s02", "chassis_power")
        assert other is not None and other.value == "on"
        command = [e for e in daemon.events.recent if e.type == "command"][-1]
        assert command.data["command"] == "server" and command.source == "r1s01"

        code, out, err = await megapodctl("--socket", sock, "status", "r1s01", "--json")
        assert code == 0, err
        link = json.loads(out)["devices"][0]["link"]
        assert link["polls_ok"] > 0 and link["responses"] > 0 and link["frame_errors"] == 0


async def test_fan_duty_and_power_limit_overrides_reach_the_bmc(
    tmp_path: Path, mosquitto: MosquittoBroker, farm: BmcFarm
) -> None:
    state = farm["r1s02"].bmc.state
    config = write_config(tmp_path, mosquitto, "pod-bmc-ovr", extra=_bmc_sections(farm))
    async with running_daemon(config) as daemon:
        await wait_until(
            lambda: daemon.store.device("r1s02").state is DeviceState.ONLINE, timeout_s=15
        )
        sock = daemon.config.api.socket
        await call(
            sock,
            "override",
            {"device": "r1s02", "output": "fan_duty_pct", "value": 85, "duration_s": 60},
        )
        assert state.fan_duty_pct[0] == 85
        await call(
            sock,
            "override",
            {"device": "r1s02", "output": "power_limit_w", "value": 4000, "duration_s": 60},
        )
        assert state.power_limit_w == 4000 and state.power_limit_active
