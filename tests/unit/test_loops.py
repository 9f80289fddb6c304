"""The loop engine on the loop clock against recording drivers: failsafe
within two ticks of a bad reading and at stale_after_s, back after three good
readings without a step down, tracking a technician's override and resuming
without a bump, zones taking the largest demand, setpoints within limits,
actuator feedback that does not follow."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from drivers.base import DeviceKind, Point, Quality
from megapodd.config import Config
from megapodd.control.arbiter import Claim, Owner
from megapodd.control.loop_specs import LoopError, compile_loops
from megapodd.control.loops import LoopEngine, SetpointRefused
from tests.fakes import FakePod, fake_pod

pytestmark = pytest.mark.looptime

TICK_S = 0.1
POD: dict[str, Any] = {
    "pod": {"id": "pod"},
    "cdu": [{"id": "cdu1", "url": "modbus+tcp://127.0.0.1:502"}],
    "pdu": [{"id": "pdu-r1a", "host": "127.0.0.1", "rack": 1, "outlets": 4}],
    "bmc": [{"id": "r1s01", "port": "/dev/ttyS1", "rack": 1}],
}
KINDS = {"cdu1": DeviceKind.CDU, "pdu-r1a": DeviceKind.PDU, "r1s01": DeviceKind.BMC}
SUPPLY = {
    "id": "supply-temp",
    "controller": "pid",
    "input": "cdu1.supply_temp_c",
    "setpoint": 30.0,
    "setpoint_min": 28.0,
    "setpoint_max": 40.0,
    "kp": 10.0,
    "ki": 0.25,
    "output": "cdu1.facility_valve_pct",
    "period_s": 1.0,
    "stale_after_s": 0.75,
    "failsafe_return": "restore",
}


@dataclass
class Rig:
    pod: FakePod
    loops: LoopEngine

    def read(self, device: str, **points: object) -> None:
        now = asyncio.get_running_loop().time()
        readings = {n: Point(v, "") for n, v in points.items()}  # type: ignore[arg-type]
        self.pod.store.update(device, readings, now, now)

    def bad(self, device: str, point: str) -> None:
        now = asyncio.get_running_loop().time()
        self.pod.store.update(device, {point: Point(None, "", Quality.BAD)}, now, now)

    def written(self, device: str, name: str) -> list[Any]:
        return self.pod.drivers[device].values(name)

    def mode(self, loop: str) -> str:
        return str(self.loops.snapshot()[loop]["mode"])  # type: ignore[index]

    def events(self, kind: str) -> list[Any]:
        return [e for e in self.pod.events.recent if e.type == kind]


@contextlib.asynccontextmanager
async def _rig(
    *loops: dict[str, Any], zones: list[dict[str, Any]] | None = None
) -> AsyncIterator[Rig]:
    config = Config.model_validate({**POD, "loop": list(loops), "zone": zones or []})
    specs, zone_specs = compile_loops(config)
    async with fake_pod(KINDS, outlets=4, racks=config.racks()) as pod:
        clock = lambda: asyncio.get_running_loop().time()  # noqa: E731
        engine = LoopEngine(specs, zone_specs, pod.store, pod.arbiter, pod.events, clock)
        pod.store.readings.add("control loops", engine.on_readings)

        async def tick() -> None:
            while True:
                engine.tick()
                pod.arbiter.tick()
                await asyncio.sleep(TICK_S)

        ticking = asyncio.create_task(tick())
        try:
            yield Rig(pod, engine)
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)


async def _feed(rig: Rig, seconds: float, **points: float) -> None:
    """The CDU's safety block every 0.25 s, as the daemon polls it."""
    for _ in range(round(seconds / 0.25)):
        rig.read("cdu1", **points)
        await asyncio.sleep(0.25)


async def test_a_bad_reading_sends_the_valve_to_failsafe_within_two_ticks() -> None:
    async with _rig(SUPPLY) as rig:
        await _feed(rig, 10.0, supply_temp_c=30.5, facility_valve_position_pct=50.0)
        assert rig.mode("supply-temp") == "auto"
        before = rig.written("cdu1", "facility_valve_pct")
        assert before and before[-1] < 100.0
        rig.bad("cdu1", "supply_temp_c")
        await asyncio.sleep(2 * TICK_S)
        assert rig.written("cdu1", "facility_valve_pct")[-1] == 100.0
        assert rig.mode("supply-temp") == "failsafe"
        [event] = rig.events("loop_failsafe")
        assert "no good reading" in event.message and event.data["failsafe"] == 100.0


async def test_no_reading_for_stale_after_s_is_failsafe_too_and_the_way_back_is_a_ramp() -> None:
    async with _rig(SUPPLY) as rig:
        await _feed(rig, 20.0, supply_temp_c=30.0, facility_valve_position_pct=40.0)
        valve = rig.written("cdu1", "facility_valve_pct")[-1]
        await asyncio.sleep(0.75 + 2 * TICK_S)  # silence: 0.75 s, then two ticks at most
        assert rig.written("cdu1", "facility_valve_pct")[-1] == 100.0
        await _feed(rig, 0.5, supply_temp_c=30.0)  # two good readings: not yet
        assert rig.mode("supply-temp") == "failsafe"
        await _feed(rig, 10.0, supply_temp_c=30.0)
        assert rig.mode("supply-temp") == "auto"
        writes = rig.written("cdu1", "facility_valve_pct")
        after = writes[writes.index(100.0) :]
        # Down from 100 % by at most 5 %/s (the slew limit) per 1 s period: no step.
        steps = [a - b for a, b in itertools.pairwise(after)]
        assert steps and max(steps) <= 5.0 + 1e-6
        assert after[-1] < 100.0 and valve < 100.0


async def test_the_way_back_from_a_long_failsafe_is_a_ramp_from_the_first_step() -> None:
    # The slew limit allows 5 %/s over the time since the controller's last
    # update: had it not been updated through the failsafe, the first step back
    # would be 5 %/s times the whole failsafe (here 25 %).
    async with _rig(SUPPLY) as rig:
        await _feed(rig, 20.0, supply_temp_c=30.0, facility_valve_position_pct=40.0)
        await asyncio.sleep(5.0)
        assert rig.written("cdu1", "facility_valve_pct")[-1] == 100.0
        await _feed(rig, 10.0, supply_temp_c=29.0)
        assert rig.mode("supply-temp") == "auto"
        writes = rig.written("cdu1", "facility_valve_pct")
        after = writes[writes.index(100.0) :]
        steps = [a - b for a, b in itertools.pairwise(after)]
        assert steps and max(steps) <= 5.0 + 1e-6, after


async def test_an_override_is_tracked_and_the_loop_resumes_without_a_bump() -> None:
    async with _rig(SUPPLY) as rig:
        await _feed(rig, 10.0, supply_temp_c=30.2, facility_valve_position_pct=50.0)
        now = asyncio.get_running_loop().time()
        claim = Claim(Owner.OVERRIDE, 60.0, "uid 0", now + 10.0)
        await rig.pod.arbiter.claim("cdu1.facility_valve_pct", claim)
        await _feed(rig, 5.0, supply_temp_c=31.0)  # the loop would move it; it is held
        assert rig.mode("supply-temp") == "overridden"
        assert rig.written("cdu1", "facility_valve_pct")[-1] == 60.0
        await _feed(rig, 10.0, supply_temp_c=30.2)  # the override expires meanwhile
        assert rig.mode("supply-temp") == "auto"
        writes = rig.written("cdu1", "facility_valve_pct")
        resumed = writes[writes.index(60.0) + 1]
        assert abs(resumed - 60.0) < 5.0  # < 5 % of the 0–100 % range


async def test_a_zone_takes_the_largest_demand_and_a_member_in_failsafe_takes_it_over() -> None:
    flow = {
        "id": "pump-flow",
        "controller": "demand",
        "input": {"device": "pdu-r1a", "point": "power_w"},
        "gain": 0.01,
        "output": "cdu1.pump_speed_pct",
        "zone": "pumps",
        "slew_up_per_s": 100.0,
        "slew_down_per_s": 100.0,
    }
    guard = {
        "id": "pump-guard",
        "controller": "demand",
        "input": "cdu1.supply_temp_c",
        "gain": 0.0,
        "bias": 20.0,
        "output": "cdu1.pump_speed_pct",
        "zone": "pumps",
        "stale_after_s": 0.75,
    }
    zones = [{"id": "pumps", "output": "cdu1.pump_speed_pct", "floor": 20.0}]
    async with _rig(flow, guard, zones=zones) as rig:
        for _ in range(20):
            rig.read("pdu-r1a", power_w=4500.0)
            rig.read("cdu1", supply_temp_c=30.0, **{"pump1_speed_pct": 45.0})
            await asyncio.sleep(0.25)
        assert rig.written("cdu1", "pump_speed_pct")[-1] == pytest.approx(45.0)
        rig.bad("cdu1", "supply_temp_c")
        await asyncio.sleep(2 * TICK_S)
        assert rig.written("cdu1", "pump_speed_pct")[-1] == 100.0  # the guard's failsafe


async def test_setpoints_change_only_within_the_configured_limits() -> None:
    async with _rig(SUPPLY) as rig:
        assert rig.loops.set_setpoint("supply-temp", 32.0) == ["supply-temp"]
        assert rig.loops.snapshot()["supply-temp"]["setpoint"] == 32.0  # type: ignore[index]
        with pytest.raises(SetpointRefused, match="outside 28–40"):
            rig.loops.set_setpoint("supply-temp", 45.0)
        with pytest.raises(SetpointRefused, match="no loop 'nope'"):
            rig.loops.set_setpoint("nope", 30.0)


async def test_a_valve_whose_position_does_not_follow_is_an_alarm() -> None:
    async with _rig(SUPPLY) as rig:
        # The loop opens the valve well past 12 % (10 % of the range beyond what it reads).
        await _feed(rig, 50.0, supply_temp_c=34.0, facility_valve_position_pct=2.0)
        [alarm] = rig.events("actuator_mismatch")
        assert alarm.severity == "alarm" and alarm.data["output"] == "cdu1.facility_valve_pct"


def test_loops_the_pod_cannot_run_are_config_errors() -> None:
    def problems(*loops: dict[str, Any]) -> list[str]:
        config = Config.model_validate({**POD, "loop": list(loops)})
        with pytest.raises(LoopError) as caught:
            compile_loops(config)
        return caught.value.problems

    assert any(
        "no output 'cdu1.valve'" in p for p in problems({**SUPPLY, "output": "cdu1.valve"})
    )
    assert any(
        "has no point matching 'supply_tmp_c'" in p
        for p in problems({**SUPPLY, "input": "cdu1.supply_tmp_c"})
    )
    assert any(
        "selects no device" in p or "matches no device" in p
        for p in problems({**SUPPLY, "input": {"devices": "bmc:rack=9", "point": "x_c",
                                                "aggregate": "max"}})
    )  # fmt: skip
    assert any("is not a continuous output" in p
               for p in problems({**SUPPLY, "output": "cdu1.lead_pump"}))  # fmt: skip
    assert any("put them in one [[zone]]" in p for p in problems(SUPPLY, {**SUPPLY, "id": "b"}))
    assert any("outside" in p for p in problems({**SUPPLY, "failsafe": 150.0}))


async def test_a_per_server_family_computes_spread_over_its_period() -> None:
    """40 fan zones of 2 s: two per 100 ms tick, not 40 in one (and 40 BMC
    writes in one burst); each still once a period."""
    servers = [f"r1s{n:02d}" for n in range(1, 41)]
    config = Config.model_validate({
        "pod": {"id": "pod"},
        "bmc": [{"id": s, "port": f"/dev/ttyS{n}", "rack": 1} for n, s in enumerate(servers)],
        "loop": [{
            "id": "fan-zone", "controller": "curve", "scope": "each", "devices": "bmc",
            "input": {"point": "outlet_temp_c"}, "curve": [[35, 30], [45, 50], [55, 100]],
            "hysteresis": 2, "output": "fan_duty_pct", "period_s": 2, "deadband": 1.0,
        }],
    })  # fmt: skip
    specs, zone_specs = compile_loops(config)
    loop = asyncio.get_running_loop()
    async with fake_pod(dict.fromkeys(servers, DeviceKind.BMC), racks=(1,)) as pod:
        engine = LoopEngine(specs, zone_specs, pod.store, pod.arbiter, pod.events, loop.time)
        pod.store.readings.add("control loops", engine.on_readings)
        written_s: dict[str, list[float]] = {s: [] for s in servers}

        def recorder(server: str) -> Callable[[int, int], Coroutine[Any, Any, None]]:
            async def set_fan_duty_pct(zone: int, pct: int) -> None:
                written_s[server].append(loop.time())

            return set_fan_duty_pct

        for server, driver in pod.drivers.items():
            driver.set_fan_duty_pct = recorder(server)  # type: ignore[method-assign,assignment]
        start = loop.time()
        for tick in range(45):  # 4.5 s of ticks; the temperature changes at 2 s
            now = loop.time()
            temp = 50.0 if tick < 20 else 40.0
            for server in servers:
                pod.store.update(server, {"outlet_temp_c": Point(temp, "degC")}, now, now)
            engine.tick()
            pod.arbiter.tick()
            await asyncio.sleep(TICK_S)
        first = sorted(round((w[0] - start) / TICK_S) for w in written_s.values())
    assert len(first) == 40
    per_tick = [first.count(t) for t in set(first)]
    assert max(per_tick) <= 2, first
    assert max(first) - min(first) >= 18  # over the whole 2 s period
    for server, writes in written_s.items():  # the step to 40 degC is followed ...
        assert len(writes) >= 2, (server, writes)
        gaps = [b - a for a, b in itertools.pairwise(writes)]
        assert min(gaps) >= 2.0 - 1e-6, (server, writes)  # ... once a period at most
