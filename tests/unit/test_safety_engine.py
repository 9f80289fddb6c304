"""The safety engine over the whole pod, on the loop clock against recording
drivers: aggregates over selectors, one instance per device, staged actions,
soft-then-hard shutdown, self-releasing rules, for_s, rates, offline devices,
the while-guard and the lead pump that is not running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.base import DeviceKind, Point, Quality
from megapodd.config import Config
from megapodd.safety.engine import InterlockEngine, ResetRefused
from megapodd.safety.rules import compile_rules
from megapodd.store import DeviceState
from tests.fakes import FakePod, fake_pod

pytestmark = pytest.mark.looptime

POD: dict[str, Any] = {
    "pod": {"id": "pod"},
    "cdu": [{"id": "cdu1", "url": "modbus+tcp://127.0.0.1:502"}],
    "pdu": [
        {"id": "pdu-r1a", "host": "127.0.0.1", "rack": 1, "outlets": 6},
        {"id": "pdu-r2a", "host": "127.0.0.1", "rack": 2, "outlets": 6},
    ],
    "bmc": [
        {"id": "r1s01", "port": "/dev/ttyS1", "rack": 1, "pdu": "pdu-r1a", "outlet": 1},
        {"id": "r1s02", "port": "/dev/ttyS2", "rack": 1, "pdu": "pdu-r1a", "outlet": 2,
         "priority": 5},
        {"id": "r2s01", "port": "/dev/ttyS3", "rack": 2, "pdu": "pdu-r2a", "outlet": 1},
    ],
}
KINDS = {
    "cdu1": DeviceKind.CDU,
    "pdu-r1a": DeviceKind.PDU,
    "pdu-r2a": DeviceKind.PDU,
    "r1s01": DeviceKind.BMC,
    "r1s02": DeviceKind.BMC,
    "r2s01": DeviceKind.BMC,
}


@dataclass
class Rig:
    pod: FakePod
    engine: InterlockEngine

    def read(self, device: str, **points: object) -> None:
        now = asyncio.get_running_loop().time()
        readings = {n: Point(v, "C" if n.endswith("_c") else "") for n, v in points.items()}  # type: ignore[arg-type]
        self.pod.store.update(device, readings, now, now)

    def state(self, name: str) -> str:
        return str(self.engine.snapshot()[name]["state"])  # type: ignore[index]

    def written(self, device: str, name: str) -> list[object]:
        return self.pod.drivers[device].values(name)

    def events(self, kind: str) -> list[Any]:
        return [e for e in self.pod.events.recent if e.type == kind]


@contextlib.asynccontextmanager
async def _rig(tmp_path: Path, *rules: dict[str, Any]) -> AsyncIterator[Rig]:
    config = Config.model_validate({**POD, "interlock": list(rules)})
    async with fake_pod(KINDS, outlets=6, racks=config.racks()) as pod:
        clock = lambda: asyncio.get_running_loop().time()  # noqa: E731
        engine = InterlockEngine(
            compile_rules(config), pod.store, pod.arbiter, pod.events, tmp_path / "s.json", clock
        )
        pod.store.readings.add("safety engine", engine.on_readings)
        engine.restore()
        await asyncio.sleep(0.1)
        yield Rig(pod, engine)


async def _ticks(engine: InterlockEngine, seconds: float) -> None:
    """The control tick's 0.25 s checks for that long."""
    for _ in range(round(seconds / 0.25)):
        await asyncio.sleep(0.25)
        engine.check_inputs()


LEAK_RACK_1 = {
    "id": "leak-r1",
    "devices": "bmc:rack=1",
    "point": "leak",
    "aggregate": "any",
    "trip_when": "true",
    "on_stale": "hold",
    "actions": [{"do": "isolate_rack", "rack": 1}, {"do": "outlets_off", "rack": 1}],
}


async def test_any_server_leak_of_a_rack_isolates_and_powers_off_that_rack(
    tmp_path: Path,
) -> None:
    async with _rig(tmp_path, LEAK_RACK_1) as rig:
        rig.read("r1s01", leak=True)
        rig.read("r1s02", leak=False)
        rig.read("r1s01", leak=False)  # r1s01 did not confirm: a flipped bit
        rig.read("r1s02", leak=True)
        assert rig.state("leak-r1") == "normal"  # two reads of one server must agree
        rig.read("r1s02", leak=True)
        assert rig.state("leak-r1") == "tripped"
        await asyncio.sleep(0.1)
        assert rig.written("cdu1", "rack_1_isolation") == ["closed"]
        assert rig.written("cdu1", "rack_2_isolation") == []
        assert sorted(n for n, v in rig.pod.drivers["pdu-r1a"].calls) == [
            f"outlet_{n}" for n in range(1, 7)
        ]
        assert rig.pod.drivers["pdu-r2a"].calls == []
        results = {e.data["result"] for e in rig.events("interlock_action")}
        assert results == {"done"} and len(rig.events("interlock_action")) == 7
        # Clear only once every server of the rack reads dry twice since the trip.
        rig.read("r1s02", leak=False)
        rig.read("r1s02", leak=False)
        rig.read("r1s01", leak=False)
        assert rig.state("leak-r1") == "tripped"
        rig.read("r1s01", leak=False)
        assert rig.state("leak-r1") == "latched"
        assert rig.engine.reset("leak-r1", "uid 0") == ["leak-r1"]
        await asyncio.sleep(0.1)
        # Nothing was reopened or switched back on by itself.
        assert rig.written("cdu1", "rack_1_isolation") == ["closed"]
        assert all(v == "off" for _, v in rig.pod.drivers["pdu-r1a"].calls)


async def test_each_server_has_its_own_instance_and_caps_only_itself(tmp_path: Path) -> None:
    rule = {
        "id": "gpu-hot",
        "devices": "bmc",
        "point": "gpu*_temp_c",
        "aggregate": "max",
        "scope": "each",
        "trip_when": "above",
        "limit": 87.0,
        "clear_margin": 2.0,
        "latch": False,
        "severity": "alarm",
        "actions": [{"do": "power_cap", "servers": "matched", "watts": 6000}],
    }
    async with _rig(tmp_path, rule) as rig:
        assert set(rig.engine.snapshot()) == {"gpu-hot@r1s01", "gpu-hot@r1s02", "gpu-hot@r2s01"}
        for _ in range(2):
            rig.read("r1s02", gpu1_temp_c=70.0, gpu2_temp_c=88.5)
            rig.read("r1s01", gpu1_temp_c=70.0, gpu2_temp_c=71.0)
        assert rig.state("gpu-hot@r1s02") == "tripped"
        assert rig.state("gpu-hot@r1s01") == "normal"
        await asyncio.sleep(0.1)
        assert rig.written("r1s02", "power_limit_w") == [6000]
        assert rig.written("r1s01", "power_limit_w") == []
        [trip] = rig.events("interlock_tripped")
        assert trip.severity == "alarm" and "reads 88.5" in trip.message
        # Non-latching: it releases by itself once clear (two agreeing reads).
        rig.read("r1s02", gpu1_temp_c=70.0, gpu2_temp_c=86.0)  # inside the margin
        rig.read("r1s02", gpu1_temp_c=70.0, gpu2_temp_c=86.0)
        assert rig.state("gpu-hot@r1s02") == "tripped"
        for _ in range(2):
            rig.read("r1s02", gpu1_temp_c=70.0, gpu2_temp_c=84.0)
        assert rig.state("gpu-hot@r1s02") == "normal"
        await asyncio.sleep(0.1)
        assert rig.written("r1s02", "power_limit_w") == [6000, None]  # the cap removed
        assert rig.events("interlock_released")


async def test_stages_run_later_only_while_still_tripped_and_hard_off_only_if_on(
    tmp_path: Path,
) -> None:
    rule = {
        "id": "supply-critical",
        "device": "cdu1",
        "point": "supply_temp_c",
        "trip_when": "above",
        "limit": 50.0,
        "for_s": 2.0,
        "actions": [
            {"do": "pumps_max"},
            {"do": "server_shutdown", "servers": "all", "after_s": 5, "hard_after_s": 10},
            {"do": "outlets_off", "outlets": "all", "after_s": 60},
        ],
    }
    async with _rig(tmp_path, rule) as rig:
        rig.read("cdu1", supply_temp_c=51.0)
        await _ticks(rig.engine, 1.5)
        assert rig.state("supply-critical") == "normal"  # not yet 2 s
        rig.read("cdu1", supply_temp_c=51.0)
        await _ticks(rig.engine, 1.0)
        assert rig.state("supply-critical") == "tripped"
        await asyncio.sleep(0.1)
        assert rig.written("cdu1", "pump_speed_pct") == [100.0]
        assert rig.written("r1s01", "chassis_power") == []
        await _ticks(rig.engine, 5.0)
        for server in ("r1s01", "r1s02", "r2s01"):
            assert rig.written(server, "chassis_power") == ["SOFT_SHUTDOWN"]
        # r1s01 went off by itself; the others are still on when the hard stage comes.
        rig.read("r1s01", chassis_power="off")
        rig.read("r1s02", chassis_power="on")
        rig.read("r2s01", chassis_power="on")
        await _ticks(rig.engine, 10.0)
        assert rig.written("r1s01", "chassis_power") == ["SOFT_SHUTDOWN"]
        assert rig.written("r1s02", "chassis_power") == ["SOFT_SHUTDOWN", "OFF"]
        skipped = [e for e in rig.events("interlock_action") if e.data["result"] == "skipped"]
        assert [e.data["output"] for e in skipped] == ["r1s01.chassis_power"]
        # The condition clears before the outlets stage: that stage never runs.
        rig.read("cdu1", supply_temp_c=40.0)
        assert rig.state("supply-critical") == "latched"
        await _ticks(rig.engine, 60.0)
        assert rig.pod.drivers["pdu-r1a"].calls == []


async def test_rate_of_change_trips(tmp_path: Path) -> None:
    rule = {
        "id": "supply-rising",
        "device": "cdu1",
        "point": "supply_temp_c",
        "trip_when": "rises_faster_than",
        "limit": 0.5,
        "actions": [{"do": "alarm"}],
    }
    async with _rig(tmp_path, rule) as rig:
        rig.read("cdu1", supply_temp_c=30.0)
        await asyncio.sleep(1.0)
        rig.read("cdu1", supply_temp_c=30.3)  # 0.3 K/s
        assert rig.state("supply-rising") == "normal"
        await asyncio.sleep(1.0)
        rig.read("cdu1", supply_temp_c=31.3)  # 1 K/s
        assert rig.state("supply-rising") == "tripped"
        assert rig.engine.snapshot()["supply-rising"]["alarm"] is True  # type: ignore[index]


async def test_a_device_offline_trips_its_own_instance_and_fans_go_full(
    tmp_path: Path,
) -> None:
    rule = {
        "id": "bmc-lost",
        "devices": "bmc",
        "scope": "each",
        "trip_when": "offline",
        "for_s": 1.0,
        "latch": False,
        "severity": "alarm",
        "actions": [{"do": "fans_max", "servers": "matched"}, {"do": "alarm"}],
    }
    async with _rig(tmp_path, rule) as rig:
        store = rig.pod.store
        for device in ("r1s01", "r1s02", "r2s01"):
            store.set_state(device, DeviceState.ONLINE, "polling")
            rig.read(device, inlet_temp_c=25.0)  # it answered once
        store.set_state("r1s02", DeviceState.OFFLINE, "link lost")
        await _ticks(rig.engine, 1.5)
        assert rig.state("bmc-lost@r1s02") == "tripped"
        assert rig.state("bmc-lost@r1s01") == "normal"
        await asyncio.sleep(0.1)
        assert rig.written("r1s02", "fan_duty_pct") == [100]
        store.set_state("r1s02", DeviceState.ONLINE, "polling")
        await _ticks(rig.engine, 0.5)
        assert rig.state("bmc-lost@r1s02") == "normal"


async def test_loss_of_flow_while_a_pump_runs_switches_to_the_other_pump(
    tmp_path: Path,
) -> None:
    rule = {
        "id": "flow-lost",
        "device": "cdu1",
        "point": "flow_lpm",
        "trip_when": "below",
        "limit": 50.0,
        "while": "pump*_running",
        "actions": [{"do": "lead_pump", "pump": "other"}],
    }
    async with _rig(tmp_path, rule) as rig:
        rig.read("cdu1", pump1_running=False, pump2_running=False, flow_lpm=0.0)
        assert rig.state("flow-lost") == "normal"  # no pump runs: nothing to switch
        rig.read("cdu1", pump1_running=True, pump2_running=False, flow_lpm=0.0)
        assert rig.state("flow-lost") == "tripped"
        await asyncio.sleep(0.1)
        assert rig.written("cdu1", "lead_pump") == ["pump2"]
        assert rig.engine.snapshot()["flow-lost"]["holding"] == {"cdu1.lead_pump": "pump2"}  # type: ignore[index]


async def test_a_restart_claims_exactly_what_was_held(tmp_path: Path) -> None:
    rule = {
        "id": "flow-lost",
        "device": "cdu1",
        "point": "flow_lpm",
        "trip_when": "below",
        "limit": 50.0,
        "actions": [{"do": "lead_pump", "pump": "other"}, {"do": "pumps_max", "after_s": 5}],
    }
    async with _rig(tmp_path, rule) as rig:
        rig.read("cdu1", pump1_running=False, pump2_running=True, flow_lpm=0.0)
        await rig.engine.state_writer.flush()
    async with _rig(tmp_path, rule) as again:
        assert again.state("flow-lost") == "tripped"
        assert again.written("cdu1", "lead_pump") == ["pump1"]  # as decided then, not now
        assert again.written("cdu1", "pump_speed_pct") == []  # the later stage had not run
        await _ticks(again.engine, 5.0)
        await asyncio.sleep(0.1)
        assert again.written("cdu1", "pump_speed_pct") == [100.0]


async def test_a_reset_needs_every_watched_point_clear_now(tmp_path: Path) -> None:
    async with _rig(tmp_path, LEAK_RACK_1) as rig:
        for _ in range(2):
            rig.read("r1s01", leak=True)
        for _ in range(2):
            rig.read("r1s01", leak=False)
            rig.read("r1s02", leak=False)
        assert rig.state("leak-r1") == "latched"
        now = asyncio.get_running_loop().time()
        rig.pod.store.update("r1s02", {"leak": Point(None, "", Quality.BAD)}, now, now)
        with pytest.raises(ResetRefused, match=r"no current good reading of r1s02.leak"):
            rig.engine.reset("leak-r1", "uid 0")
        with pytest.raises(ResetRefused, match="no interlock 'nope'"):
            rig.engine.reset("nope", "uid 0")


async def test_a_trip_from_latched_is_a_new_incident_with_its_own_stages(
    tmp_path: Path,
) -> None:
    rule = {
        "id": "flow-lost",
        "device": "cdu1",
        "point": "flow_lpm",
        "trip_when": "below",
        "limit": 50.0,
        "clear_margin": 5.0,
        "while": "pump*_running",
        "actions": [
            {"do": "lead_pump", "pump": "other"},
            {"do": "server_shutdown", "servers": "all", "after_s": 5, "hard_after_s": 60},
        ],
    }
    async with _rig(tmp_path, rule) as rig:
        rig.read("cdu1", pump1_running=True, pump2_running=False, flow_lpm=0.0)
        await _ticks(rig.engine, 2.0)
        rig.read("cdu1", pump1_running=False, pump2_running=True, flow_lpm=120.0)  # the lag pump
        assert rig.state("flow-lost") == "latched"
        await _ticks(rig.engine, 3600.0)
        assert rig.written("r1s01", "chassis_power") == []  # the stage never came
        # An hour later pump 2 loses flow too: the lead pump goes back to 1 at
        # once, and the servers get their 5 s and their soft shutdown first.
        rig.read("r1s01", chassis_power="on")
        rig.read("cdu1", pump1_running=False, pump2_running=True, flow_lpm=0.0)
        assert rig.state("flow-lost") == "tripped"
        await _ticks(rig.engine, 1.0)
        assert rig.written("cdu1", "lead_pump") == ["pump2", "pump1"]
        assert rig.written("r1s01", "chassis_power") == []
        await _ticks(rig.engine, 5.0)
        assert rig.written("r1s01", "chassis_power") == ["SOFT_SHUTDOWN"]
        await _ticks(rig.engine, 60.0)
        assert rig.written("r1s01", "chassis_power") == ["SOFT_SHUTDOWN", "OFF"]


async def test_a_rule_tripped_by_a_silent_device_stays_tripped_until_it_answers(
    tmp_path: Path,
) -> None:
    rule = {
        "id": "gpu-fans",
        "devices": "bmc",
        "point": "gpu1_temp_c",
        "aggregate": "max",
        "trip_when": "above",
        "limit": 87.0,
        "latch": False,
        "on_stale": "trip",
        "stale_after_s": 5.0,
        "actions": [{"do": "fans_max", "servers": "all"}],
    }
    async with _rig(tmp_path, rule) as rig:
        # r2s01 never answers; the other two read cool all along.
        for _ in range(40):
            rig.read("r1s01", gpu1_temp_c=60.0)
            rig.read("r1s02", gpu1_temp_c=60.0)
            await _ticks(rig.engine, 1.0)
        assert rig.state("gpu-fans") == "tripped"
        assert len(rig.events("interlock_tripped")) == 1  # no trip-release-trip
        assert rig.events("interlock_released") == []
        for _ in range(2):  # BMC readings: two agreeing reads
            rig.read("r2s01", gpu1_temp_c=60.0)
            await _ticks(rig.engine, 1.0)
        assert rig.state("gpu-fans") == "normal"
