"""Interlocks end to end: coolant too hot at the simulated CDU trips the rule,
pumps and facility valve go to 100 %, the state is on MQTT, reset works only
once the temperature is back, and a latched interlock survives a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from megapodd.api.client import ApiClientError, call
from megapodd.store import DeviceState
from sim_devices.cdu import SimulatedCdu
from tests.daemon_helpers import retained_when, running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

RULE = """
[[interlock]]
id = "supply-hot"
device = "cdu1"
point = "supply_temp_c"
trip_when = "above"
limit = 45.0
clear_margin = 2.0
actions = [
    {output = "cdu1.pump_speed_pct", value = 100},
    {output = "cdu1.facility_valve_pct", value = 100},
]
"""
SUPPLY_TEMP_REGISTER = 0  # input register 0, 0.01 °C


def _state(daemon: Any, rule: str = "supply-hot") -> str:
    return str(daemon.interlocks.snapshot()[rule]["state"])


async def test_hot_coolant_trips_drives_cooling_and_latches_until_reset(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    async with SimulatedCdu() as cdu:
        await cdu.start("127.0.0.1", 0)
        config = write_config(tmp_path, mosquitto, "pod-ilk", cdu.port, extra=RULE)
        async with running_daemon(config) as daemon:
            sock = daemon.config.api.socket
            await wait_until(
                lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, timeout_s=5
            )
            assert _state(daemon) == "normal"
            cdu.override_input(SUPPLY_TEMP_REGISTER, 4650)  # 46.5 °C to the racks
            await wait_until(lambda: _state(daemon) == "tripped", timeout_s=3)
            await wait_until(lambda: cdu.target_speed_pct() == 100.0, timeout_s=3)
            assert cdu.state.control_mode == 0  # remote speed, driven by the interlock
            await wait_until(lambda: cdu.state.facility_valve_setpoint_pct == 100.0, 3)
            tripped = [e for e in daemon.events.recent if e.type == "interlock_tripped"]
            assert tripped and tripped[0].severity == "critical"
            published = await retained_when(
                mosquitto,
                "megapod/v1/pod-ilk/interlocks",
                lambda p: p["interlocks"]["supply-hot"]["state"] == "tripped",
            )
            assert published["interlocks"]["supply-hot"]["last_trip"] is not None

            with pytest.raises(ApiClientError, match="still tripped"):
                await call(sock, "reset", {"interlock": "supply-hot"})
            # A technician override cannot beat the interlock.
            held: Any = await call(
                sock,
                "override",
                {"device": "cdu1", "output": "pump_speed_pct", "value": 40, "duration_s": 60},
            )
            assert held["held_by"] == "interlock" and cdu.target_speed_pct() == 100.0
            with pytest.raises(ApiClientError, match="outside 20–100"):
                await call(
                    sock,
                    "override",
                    {"device": "cdu1", "output": "pump_speed_pct", "value": 5, "duration_s": 60},
                )
            await call(sock, "release", {"device": "cdu1", "output": "pump_speed_pct"})

            cdu.override_input(SUPPLY_TEMP_REGISTER, 4400)  # below the limit, not the margin
            await wait_until(lambda: daemon.store.get("cdu1", "supply_temp_c").value == 44.0, 3)  # type: ignore[union-attr]
            assert _state(daemon) == "tripped"
            cdu.override_input(SUPPLY_TEMP_REGISTER, 4200)
            await wait_until(lambda: _state(daemon) == "latched", timeout_s=3)
            assert cdu.target_speed_pct() == 100.0  # still held while latched
            result: Any = await call(sock, "reset", {"interlock": "supply-hot"})
            assert result["state"] == "normal"
            # Nobody claims the pumps now: back to the CDU's own Δp control.
            await wait_until(lambda: cdu.state.control_mode == 1, timeout_s=3)


async def test_a_latched_interlock_survives_a_restart(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    async with SimulatedCdu() as cdu:
        await cdu.start("127.0.0.1", 0)
        config = write_config(tmp_path, mosquitto, "pod-ilk2", cdu.port, extra=RULE)
        async with running_daemon(config) as daemon:
            await wait_until(
                lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, timeout_s=5
            )
            cdu.override_input(SUPPLY_TEMP_REGISTER, 5000)
            await wait_until(lambda: _state(daemon) == "tripped", timeout_s=3)
            cdu.override_input(SUPPLY_TEMP_REGISTER, 3000)
            await wait_until(lambda: _state(daemon) == "latched", timeout_s=3)
        # Someone put the pumps back by hand while the daemon was down.
        cdu.state.pump_speed_setpoint_pct = 50.0
        cdu.state.control_mode = 1
        async with running_daemon(config) as daemon:
            assert _state(daemon) == "latched"  # restored before anything ran
            await wait_until(lambda: cdu.target_speed_pct() == 100.0, timeout_s=5)
