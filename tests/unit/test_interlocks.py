"""Interlock engine: trips on readings, latches, resets only when clear, trips
on stale input, needs agreeing BMC reads, survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.base import DeviceKind, Point, Quality
from megapodd.config import (
    BmcConfig,
    CduConfig,
    Config,
    InterlockAction,
    InterlockConfig,
    PodConfig,
)
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.events import EventBus
from megapodd.safety.engine import InterlockEngine, ResetRefused, RuleState
from megapodd.safety.rules import compile_rules
from megapodd.store import PointStore
from tests.fakes import FakePod, fake_pod

pytestmark = pytest.mark.looptime

PUMP = "cdu1.pump_speed_pct"
FANS = "r1s01.fan_duty_pct"
DEVICES = {"cdu1": DeviceKind.CDU, "r1s01": DeviceKind.BMC}


def _rules() -> list[InterlockConfig]:
    return [
        InterlockConfig(
            id="cdu-leak",
            device="cdu1",
            point="leak",
            trip_when="true",
            actions=[InterlockAction(output=PUMP, value=100.0)],
        ),
        InterlockConfig(
            id="gpu-hot",
            device="r1s01",
            point="gpu1_temp_c",
            trip_when="above",
            limit=87.0,
            clear_margin=5.0,
            stale_after_s=5.0,
            actions=[InterlockAction(output=FANS, value=100.0)],
        ),
    ]


@dataclass
class Rig:
    store: PointStore
    arbiter: OutputArbiter
    engine: InterlockEngine
    pod: FakePod
    events: EventBus

    def written(self, device: str, name: str) -> list[object]:
        return self.pod.drivers[device].values(name)


@contextlib.asynccontextmanager
async def _setup(
    state_path: Path, rules: list[InterlockConfig] | None = None, second_bmc: bool = False
) -> AsyncIterator[Rig]:
    bmcs = [BmcConfig(id="r1s01", port="/dev/ttyUSB0", rack=1)]
    devices = dict(DEVICES)
    if second_bmc:
        bmcs.append(BmcConfig(id="r1s02", port="/dev/ttyUSB1", rack=1))
        devices["r1s02"] = DeviceKind.BMC
    config = Config(
        pod=PodConfig(id="pod"),
        cdu=[CduConfig(id="cdu1", url="modbus+tcp://127.0.0.1:502")],
        bmc=bmcs,
        interlock=rules if rules is not None else _rules(),
    )
    async with fake_pod(devices, racks=config.racks()) as pod:
        clock = lambda: asyncio.get_running_loop().time()  # noqa: E731
        engine = InterlockEngine(
            compile_rules(config), pod.store, pod.arbiter, pod.events, state_path, clock
        )
        pod.store.readings.add("safety engine", engine.on_readings)
        yield Rig(pod.store, pod.arbiter, engine, pod, pod.events)


async def _settle() -> None:
    """Let the supervisors run what was queued."""
    await asyncio.sleep(0.1)


def _read(store: PointStore, device: str, name: str, value: object) -> None:
    now = asyncio.get_running_loop().time()
    store.update(device, {name: Point(value, "C" if name.endswith("_c") else "")}, now, now)  # type: ignore[arg-type]


async def test_a_leak_trips_latches_and_resets_only_when_clear(tmp_path: Path) -> None:
    async with _setup(tmp_path / "interlocks.json") as rig:
        store, arbiter, engine, events = rig.store, rig.arbiter, rig.engine, rig.events
        engine.restore()
        _read(store, "cdu1", "leak", False)
        _read(store, "cdu1", "leak", True)
        await _settle()
        assert rig.written("cdu1", "pump_speed_pct") == [100.0]
        assert arbiter.outputs[PUMP].winner() == Claim(Owner.INTERLOCK, 100.0, "cdu-leak")
        assert engine.snapshot()["cdu-leak"]["state"] == "tripped"  # type: ignore[index]
        with pytest.raises(ResetRefused, match="still tripped"):
            engine.reset("cdu-leak", "uid 0")
        _read(store, "cdu1", "leak", False)
        assert engine.snapshot()["cdu-leak"]["state"] == "latched"  # type: ignore[index]
        # Latched: the outputs stay held although the leak is gone.
        assert arbiter.outputs[PUMP].winner() is not None
        engine.reset("cdu-leak", "uid 0")
        assert arbiter.outputs[PUMP].winner() is None
        await _settle()
        assert rig.written("cdu1", "control_mode")[-1] == "local_dp"  # the CDU's own control
        kinds = [e.type for e in events.recent if e.type.startswith("interlock_")]
        assert [k for k in kinds if k != "interlock_action"] == [
            "interlock_tripped",
            "interlock_cleared",
            "interlock_reset",
        ]
        [done] = [e for e in events.recent if e.type == "interlock_action"]
        assert done.data["result"] == "done" and done.data["output"] == PUMP


async def test_bmc_readings_must_agree_twice_and_clear_with_hysteresis(tmp_path: Path) -> None:
    async with _setup(tmp_path / "interlocks.json") as rig:
        store, engine = rig.store, rig.engine
        engine.restore()
        _read(store, "r1s01", "gpu1_temp_c", 95.0)  # one read: could be a flipped bit
        assert engine.snapshot()["gpu-hot"]["state"] == "normal"  # type: ignore[index]
        _read(store, "r1s01", "gpu1_temp_c", 60.0)
        _read(store, "r1s01", "gpu1_temp_c", 95.0)
        assert engine.snapshot()["gpu-hot"]["state"] == "normal"  # type: ignore[index]
        _read(store, "r1s01", "gpu1_temp_c", 96.0)  # two in a row
        assert engine.snapshot()["gpu-hot"]["state"] == "tripped"  # type: ignore[index]
        _read(store, "r1s01", "gpu1_temp_c", 85.0)  # below the limit, not below the margin
        assert engine.snapshot()["gpu-hot"]["state"] == "tripped"  # type: ignore[index]
        _read(store, "r1s01", "gpu1_temp_c", 81.0)
        assert engine.snapshot()["gpu-hot"]["state"] == "tripped"  # type: ignore[index]
        _read(store, "r1s01", "gpu1_temp_c", 81.0)  # clearing needs two agreeing reads too
        assert engine.snapshot()["gpu-hot"]["state"] == "latched"  # type: ignore[index]
        _read(store, "r1s01", "gpu1_temp_c", 99.0)  # latched: one read does not re-trip either
        assert engine.snapshot()["gpu-hot"]["state"] == "latched"  # type: ignore[index]
        _read(store, "r1s01", "gpu1_temp_c", 99.0)
        assert engine.snapshot()["gpu-hot"]["state"] == "tripped"  # type: ignore[index]
        await _settle()
        assert rig.written("r1s01", "fan_duty_pct") == [100]


async def test_no_good_reading_trips_the_rule(tmp_path: Path) -> None:
    async with _setup(tmp_path / "interlocks.json") as rig:
        store, engine, events = rig.store, rig.engine, rig.events
        engine.restore()
        engine.check_inputs()
        _read(store, "cdu1", "leak", False)
        await asyncio.sleep(4.0)
        engine.check_inputs()
        assert engine.snapshot()["cdu-leak"]["state"] == "normal"  # type: ignore[index]
        now = asyncio.get_running_loop().time()
        store.update("cdu1", {"leak": Point(None, "", Quality.BAD)}, now, now)
        await asyncio.sleep(1.5)  # 5 s since the last good reading
        engine.check_inputs()
        rule = engine.snapshot()["cdu-leak"]
        assert rule["state"] == "tripped" and "no good reading" in rule["reason"]  # type: ignore[index]
        # GPU never read at all: trips 5 s after start, not at once.
        assert engine.snapshot()["gpu-hot"]["state"] == "tripped"  # type: ignore[index]
        assert any(e.type == "interlock_tripped" for e in events.recent)


async def test_a_device_never_read_is_stale_while_the_others_answer(tmp_path: Path) -> None:
    rule = InterlockConfig(
        id="rack-hot",
        devices="bmc:rack=1",
        point="gpu1_temp_c",
        aggregate="any",
        trip_when="above",
        limit=87.0,
        stale_after_s=5.0,
        actions=[InterlockAction(output=FANS, value=100.0)],
    )
    async with _setup(tmp_path / "interlocks.json", [rule], second_bmc=True) as rig:
        rig.engine.restore()
        rig.engine.check_inputs()
        for _ in range(6):  # r1s01 answers every second, r1s02 never
            _read(rig.store, "r1s01", "gpu1_temp_c", 60.0)
            await asyncio.sleep(1.0)
            rig.engine.check_inputs()
        state = rig.engine.snapshot()["rack-hot"]
        assert state["state"] == "tripped"  # type: ignore[index]
        assert "r1s02.gpu1_temp_c (never read)" in state["reason"]  # type: ignore[index]
        assert "r1s01" not in state["reason"]  # type: ignore[index]


async def test_latched_state_is_restored_and_claimed_before_any_write(tmp_path: Path) -> None:
    path = tmp_path / "interlocks.json"
    async with _setup(path) as rig:
        rig.engine.restore()
        _read(rig.store, "cdu1", "leak", True)
        _read(rig.store, "cdu1", "leak", False)
        await rig.engine.state_writer.flush()
        saved = json.loads(path.read_text())
        assert saved["rules"]["cdu-leak"]["state"] == RuleState.LATCHED
    # A new daemon: the claim is there before the arbiter writes anything.
    async with _setup(path) as rig2:
        rig2.engine.restore()
        assert rig2.arbiter.outputs[PUMP].winner() == Claim(Owner.INTERLOCK, 100.0, "cdu-leak")
        rig2.arbiter.start()
        await _settle()
        assert rig2.written("cdu1", "pump_speed_pct") == [100.0]
        # The interlock's write came first: queued at the top priority, ahead of hand-backs.
        assert rig2.pod.drivers["cdu1"].calls[0] == ("pump_speed_pct", 100.0)
        assert rig2.engine.snapshot()["cdu-leak"]["state"] == "latched"  # type: ignore[index]


async def test_an_unreadable_state_file_latches_every_rule_and_cuts_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "interlocks.json"
    path.write_text("{not json")
    async with _setup(path) as rig:
        rig.engine.restore()
        # Latched, holding nothing: a bad file is no reason to power the pod off...
        states = {r["state"] for r in rig.engine.snapshot().values()}  # type: ignore[index]
        assert states == {"latched"}
        assert rig.arbiter.outputs[PUMP].winner() is None
        assert any(e.type == "interlock_state_unreadable" for e in rig.events.recent)
        assert (tmp_path / "interlocks.json.bad").read_text() == "{not json"  # kept to look at
        # ...but a condition that is still there acts at its first reading,
        now = asyncio.get_running_loop().time()
        rig.store.update("cdu1", {"leak": Point(True)}, now, now)
        assert rig.engine.snapshot()["cdu-leak"]["state"] == "tripped"  # type: ignore[index]
        await _settle()
        assert rig.written("cdu1", "pump_speed_pct") == [100.0]
        # and one that is gone still needs a technician's reset.
        rig.store.update("r1s01", {"gpu1_temp_c": Point(60.0, "C")}, now, now)
        rig.store.update("r1s01", {"gpu1_temp_c": Point(60.0, "C")}, now + 1, now + 1)
        assert rig.engine.snapshot()["gpu-hot"]["state"] == "latched"  # type: ignore[index]
        assert rig.engine.reset("gpu-hot", "uid 0") == ["gpu-hot"]


async def test_a_saved_claim_the_output_refuses_is_held_as_configured(tmp_path: Path) -> None:
    path = tmp_path / "interlocks.json"
    entry = {"state": "latched", "reason": "x", "steps": [0], "claims": {PUMP: 5.0}}
    path.write_text(json.dumps({"version": 1, "rules": {"cdu-leak": entry}}))
    async with _setup(path) as rig:
        rig.engine.restore()  # 5 % is below the pumps' floor: not a crash
        winner = rig.arbiter.outputs[PUMP].winner()
        assert winner is not None and winner.value == 100.0  # the configured value
        [bad] = [e for e in rig.events.recent if e.type == "interlock_state_unreadable"]
        assert "5.0" in bad.message and bad.severity == "critical"


async def test_two_rules_on_one_output_hold_the_safer_value(tmp_path: Path) -> None:
    limit = "r1s01.power_limit_w"
    rules = [
        InterlockConfig(
            id=f"hot-{n}",
            device="r1s01",
            point=f"gpu{n}_temp_c",
            trip_when="above",
            limit=87.0,
            actions=[InterlockAction(output=limit, value=watts)],
        )
        for n, watts in ((1, 6000.0), (2, 4000.0))
    ]
    async with _setup(tmp_path / "s.json", rules) as rig:
        rig.engine.restore()
        for _ in range(2):
            _read(rig.store, "r1s01", "gpu1_temp_c", 90.0)
            _read(rig.store, "r1s01", "gpu2_temp_c", 90.0)
        winner = rig.arbiter.outputs[limit].winner()
        assert winner is not None and winner.value == 4000.0  # the lower power limit
        await _settle()
        assert rig.written("r1s01", "power_limit_w")[-1] == 4000


async def test_a_reset_needs_a_current_good_reading_that_shows_the_cause_gone(
    tmp_path: Path,
) -> None:
    async with _setup(tmp_path / "interlocks.json") as rig:
        store, arbiter, engine = rig.store, rig.arbiter, rig.engine
        engine.restore()
        _read(store, "cdu1", "leak", True)
        _read(store, "cdu1", "leak", False)
        now = asyncio.get_running_loop().time()
        store.update("cdu1", {"leak": Point(None, "", Quality.BAD)}, now, now)
        await asyncio.sleep(6.0)  # the last good (clear) reading is now too old
        with pytest.raises(ResetRefused, match="no current good reading"):
            engine.reset("cdu-leak", "uid 0")
        assert arbiter.outputs[PUMP].winner() is not None
        _read(store, "cdu1", "leak", False)
        engine.reset("cdu-leak", "uid 0")
        assert arbiter.outputs[PUMP].winner() is None


async def test_a_reading_of_the_wrong_type_trips_instead_of_being_ignored(
    tmp_path: Path,
) -> None:
    async with _setup(tmp_path / "interlocks.json") as rig:
        rig.engine.restore()
        _read(rig.store, "cdu1", "leak", 3)  # an int where the rule expects a boolean
        rule = rig.engine.snapshot()["cdu-leak"]
        assert rule["state"] == "tripped" and "is not a boolean" in rule["reason"]  # type: ignore[index]
        assert any(e.type == "interlock_tripped" for e in rig.events.recent)


async def test_a_bad_reading_between_two_hot_ones_does_not_make_them_agree(
    tmp_path: Path,
) -> None:
    async with _setup(tmp_path / "interlocks.json") as rig:
        rig.engine.restore()
        _read(rig.store, "r1s01", "gpu1_temp_c", 120.0)
        now = asyncio.get_running_loop().time()
        rig.store.update("r1s01", {"gpu1_temp_c": Point(None, "C", Quality.BAD)}, now, now)
        _read(rig.store, "r1s01", "gpu1_temp_c", 119.0)
        assert rig.engine.snapshot()["gpu-hot"]["state"] == "normal"  # type: ignore[index]


async def test_a_trip_claims_its_outputs_before_the_state_reaches_the_disk(
    tmp_path: Path,
) -> None:
    path = tmp_path / "interlocks.json"
    async with _setup(path) as rig:
        rig.engine.restore()
        await rig.engine.state_writer.flush()
        _read(rig.store, "cdu1", "leak", True)
        # Claimed at once; the save is only asked for (the writer's task does it).
        assert rig.arbiter.outputs[PUMP].winner() is not None
        assert rig.engine.state_writer.pending
        assert "cdu-leak" not in json.loads(path.read_text())["rules"]
        await rig.engine.state_writer.flush()
        assert json.loads(path.read_text())["rules"]["cdu-leak"]["state"] == "tripped"
