"""Interlock engine: trips on readings, latches, resets only when clear, trips
on stale input, needs agreeing BMC reads, survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from drivers.base import Point, Quality
from drivers.errors import DeviceError
from megapodd.config import InterlockAction, InterlockConfig
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.events import EventBus
from megapodd.safety.engine import InterlockEngine, ResetRefused, RuleState
from megapodd.store import PointStore

pytestmark = pytest.mark.looptime

PUMP = "cdu1.pump_speed_pct"
FANS = "r1s01.fan_duty_pct"


class Outputs:
    """Stands in for the devices' verified writes."""

    def __init__(self) -> None:
        self.written: dict[str, list[float]] = {}
        self.queue: list[Callable[[], Awaitable[None]]] = []

    def writer(self, name: str) -> Callable[[float], Awaitable[None]]:
        async def write(value: float) -> None:
            self.written.setdefault(name, []).append(value)

        return write

    def submit(self, _name: str, action: Callable[[], Awaitable[None]]) -> None:
        self.queue.append(action)

    async def run(self) -> None:
        while self.queue:
            with contextlib.suppress(DeviceError):
                await self.queue.pop(0)()


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
            actions=[InterlockAction(output=FANS, value=100.0)],
        ),
    ]


def _setup(
    state_path: Path,
) -> tuple[PointStore, OutputArbiter, InterlockEngine, Outputs, EventBus]:
    store, events, outputs = PointStore(), EventBus("boot"), Outputs()
    store.add_device("cdu1", "cdu")
    store.add_device("r1s01", "bmc")
    clock = lambda: asyncio.get_running_loop().time()  # noqa: E731
    arbiter = OutputArbiter(events, clock)
    for name in (PUMP, FANS):
        arbiter.add_output(name, name.split(".")[0], outputs.writer(name), outputs.submit, None)
    kinds = {"cdu1": "cdu", "r1s01": "bmc"}
    engine = InterlockEngine(_rules(), kinds, {}, store, arbiter, events, state_path, clock)
    return store, arbiter, engine, outputs, events


def _read(store: PointStore, device: str, name: str, value: object) -> None:
    now = asyncio.get_running_loop().time()
    store.update(device, {name: Point(value, "C" if name.endswith("_c") else "")}, now, now)  # type: ignore[arg-type]


async def test_a_leak_trips_latches_and_resets_only_when_clear(tmp_path: Path) -> None:
    store, arbiter, engine, outputs, events = _setup(tmp_path / "interlocks.json")
    engine.restore()
    _read(store, "cdu1", "leak", False)
    _read(store, "cdu1", "leak", True)
    await outputs.run()
    assert outputs.written[PUMP] == [100.0]
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
    kinds = [e.type for e in events.recent if e.type.startswith("interlock_")]
    assert kinds == ["interlock_tripped", "interlock_cleared", "interlock_reset"]


async def test_bmc_readings_must_agree_twice_and_clear_with_hysteresis(tmp_path: Path) -> None:
    store, _, engine, outputs, _ = _setup(tmp_path / "interlocks.json")
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
    await outputs.run()
    assert outputs.written[FANS] == [100.0]


async def test_no_good_reading_trips_the_rule(tmp_path: Path) -> None:
    store, _, engine, _, events = _setup(tmp_path / "interlocks.json")
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


async def test_latched_state_is_restored_and_claimed_before_any_write(tmp_path: Path) -> None:
    path = tmp_path / "interlocks.json"
    store, _, engine, _, _ = _setup(path)
    engine.restore()
    _read(store, "cdu1", "leak", True)
    _read(store, "cdu1", "leak", False)
    saved = json.loads(path.read_text())
    assert saved["rules"]["cdu-leak"]["state"] == RuleState.LATCHED
    # A new daemon: the claim is there before the arbiter writes anything.
    _, arbiter2, engine2, outputs2, _ = _setup(path)
    engine2.restore()
    assert arbiter2.outputs[PUMP].winner() == Claim(Owner.INTERLOCK, 100.0, "cdu-leak")
    arbiter2.start()
    await outputs2.run()
    assert outputs2.written[PUMP] == [100.0]
    assert engine2.snapshot()["cdu-leak"]["state"] == "latched"  # type: ignore[index]


async def test_an_unreadable_state_file_trips_every_rule(tmp_path: Path) -> None:
    path = tmp_path / "interlocks.json"
    path.write_text("{not json")
    _, arbiter, engine, _, events = _setup(path)
    engine.restore()
    # Tripped, not latched: only a clear reading can latch it, then a reset.
    assert {r["state"] for r in engine.snapshot().values()} == {"tripped"}  # type: ignore[index]
    assert arbiter.outputs[FANS].winner() is not None
    assert any(e.type == "interlock_state_unreadable" for e in events.recent)
    assert (tmp_path / "interlocks.json.bad").read_text() == "{not json"  # kept to look at


async def test_two_rules_on_one_output_hold_the_safer_value(tmp_path: Path) -> None:
    store, events, outputs = PointStore(), EventBus("boot"), Outputs()
    store.add_device("r1s01", "bmc")
    clock = lambda: asyncio.get_running_loop().time()  # noqa: E731
    arbiter = OutputArbiter(events, clock)
    limit = "r1s01.power_limit_w"
    arbiter.add_output(limit, "r1s01", outputs.writer(limit), outputs.submit, None)
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
    engine = InterlockEngine(
        rules, {"r1s01": "bmc"}, {}, store, arbiter, events, tmp_path / "s.json", clock
    )
    engine.restore()
    for _ in range(2):
        _read(store, "r1s01", "gpu1_temp_c", 90.0)
        _read(store, "r1s01", "gpu2_temp_c", 90.0)
    winner = arbiter.outputs[limit].winner()
    assert winner is not None and winner.value == 4000.0  # the lower power limit


async def test_a_reset_needs_a_current_good_reading_that_shows_the_cause_gone(
    tmp_path: Path,
) -> None:
    store, arbiter, engine, _, _ = _setup(tmp_path / "interlocks.json")
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
    store, _, engine, _, events = _setup(tmp_path / "interlocks.json")
    engine.restore()
    _read(store, "cdu1", "leak", 3)  # an int where the rule expects a boolean
    rule = engine.snapshot()["cdu-leak"]
    assert rule["state"] == "tripped" and "is not a boolean" in rule["reason"]  # type: ignore[index]
    assert any(e.type == "interlock_tripped" for e in events.recent)


async def test_a_bad_reading_between_two_hot_ones_does_not_make_them_agree(
    tmp_path: Path,
) -> None:
    store, _, engine, _, _ = _setup(tmp_path / "interlocks.json")
    engine.restore()
    _read(store, "r1s01", "gpu1_temp_c", 120.0)
    now = asyncio.get_running_loop().time()
    store.update("r1s01", {"gpu1_temp_c": Point(None, "C", Quality.BAD)}, now, now)
    _read(store, "r1s01", "gpu1_temp_c", 119.0)
    assert engine.snapshot()["gpu-hot"]["state"] == "normal"  # type: ignore[index]
