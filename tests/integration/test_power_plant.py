"""The power budget through the daemon's controller, arbiter and supervisors
against the simulator's physics, in simulated time (bench/power_plant.py, the
harness of bench/bench_power.py): the long parts of the acceptance that real
time makes slow, with the default release_s of 60 s."""

from __future__ import annotations

import asyncio

import pytest

from bench.power_plant import power_plant
from sim_devices.profiles import PROFILES, Profile

pytestmark = pytest.mark.looptime

SMALL = PROFILES[Profile.SMALL]
PEAK_W = 10_200.0 * SMALL.server_count


async def test_a_step_to_full_load_is_held_and_released_after_release_s() -> None:
    budget_w = 0.8 * PEAK_W
    async with power_plant(SMALL, 30.0, budget_w, release_s=60.0) as pod:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(20.0)
        stepped = loop.time()
        pod.set_workload(100.0)
        await asyncio.sleep(120.0)
        held = [w for t, w, _d, _c in pod.plant.trace if t >= stepped + 10.0]
        assert max(held) <= budget_w * 1.02
        assert min(held) >= budget_w * 0.9  # held at the budget, not far under it
        dropped = loop.time()
        pod.set_workload(30.0)
        await asyncio.sleep(95.0)
        after = [(t - dropped, caps) for t, _w, _d, caps in pod.plant.trace if t >= dropped]
        gone = next(t for t, caps in after if caps == 0)
        assert 60.0 <= gone <= 60.0 + 30.0
        assert not pod.plant.trips


async def test_an_oversubscribed_rack_at_full_load_trips_nothing() -> None:
    async with power_plant(SMALL, 30.0, PEAK_W / 1.3, oversubscribe=1.3) as pod:
        await asyncio.sleep(20.0)
        for pct in (50.0, 70.0, 85.0, 100.0):  # a job ramping up on rack 1
            pod.set_workload(pct, rack=1)
            await asyncio.sleep(3.0)
        await asyncio.sleep(60.0)
        assert not pod.plant.trips
        breaker = pod.plant.breaker_a["pdu-r1a"]
        assert pod.plant.phase_peak_a[("pdu-r1a", 1)] < breaker
        caps = {sid.name for sid, limit in pod.plant.limits.items() if limit.watts is not None}
        assert caps == {"r1s01", "r1s04"}  # pdu-r1a phase 1 only
