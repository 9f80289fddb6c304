"""Technician writes to the CDU through the daemon: range checks before the
wire, device refusals as typed errors and events, setpoints unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from megapodd.api.client import ApiClientError, call
from megapodd.store import DeviceState
from sim_devices.cdu import SimulatedCdu
from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration


async def test_override_writes_verified_and_refusals_change_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    async with SimulatedCdu() as cdu:
        await cdu.start("127.0.0.1", 0)
        config = write_config(tmp_path, mosquitto, "pod-cmd", cdu.port)
        async with running_daemon(config) as daemon:
            sock = daemon.config.api.socket
            await wait_until(
                lambda: daemon.store.device("cdu1").state is DeviceState.ONLINE, timeout_s=5
            )
            request = {"device": "cdu1", "output": "pump_speed_pct", "duration_s": 600}

            assert cdu.state.control_mode == 1  # the CDU's own constant-Δp control
            result: Any = await call(sock, "override", {**request, "value": 75.0})
            assert result["held_by"] is None
            assert cdu.state.pump_speed_setpoint_pct == pytest.approx(75.0)
            assert cdu.state.control_mode == 0  # remote speed: the setpoint now counts
            assert cdu.target_speed_pct() == pytest.approx(75.0)
            owners = [e for e in daemon.events.recent if e.type == "output_owner_changed"]
            assert owners[-1].data["to"] == "override"

            # 15 % is below the CDU's valid range: refused before the wire.
            requests_before = len(cdu.requests)
            refusal = r"refused: cdu1.pump_speed_pct 15.0 is outside 20–100 %"
            with pytest.raises(ApiClientError, match=refusal):
                await call(sock, "override", {**request, "value": 15.0})
            # Only comm-watchdog heartbeats (register 106) were written since.
            since = list(cdu.requests)[requests_before:]
            assert all(r.address == 106 for r in since if r.function in (6, 16))
            assert cdu.state.pump_speed_setpoint_pct == pytest.approx(75.0)
            assert daemon.events.recent[-1].type == "command_rejected"

            # In local mode the CDU refuses remote writes with exception 04.
            cdu.state.local_mode = True
            with pytest.raises(ApiClientError, match=r"device refused"):
                await call(sock, "override", {**request, "value": 80.0})
            assert cdu.state.pump_speed_setpoint_pct == pytest.approx(75.0)
            failed = [e for e in daemon.events.recent if e.type == "command_failed"][-1]
            assert failed.data["code"] == 4
            outputs: Any = await call(sock, "outputs")
            claims = outputs["cdu1.pump_speed_pct"]["claims"]
            assert [c["value"] for c in claims] == [75.0]  # the refused claim did not stay

            cdu.state.local_mode = False
            released: Any = await call(
                sock, "release", {"device": "cdu1", "output": "pump_speed_pct"}
            )
            assert released["owner"] is None
            # No lower owner: the CDU's own Δp control takes the pumps back
            # (a release never stops a pump).
            await wait_until(lambda: cdu.state.control_mode == 1, timeout_s=2)
            assert cdu.state.pump_speed_setpoint_pct == pytest.approx(75.0)
            assert cdu.target_speed_pct() > 20.0

            with pytest.raises(ApiClientError, match=r"no output 'cdu1\.pump'"):
                await call(sock, "override", {**request, "output": "pump", "value": 50})
            with pytest.raises(ApiClientError, match="'duration_s' must be a number"):
                await call(sock, "override", {**request, "value": 50, "duration_s": 10 * 3600})
