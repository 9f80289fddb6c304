"""Issue 10's soak, short: the small pod under random workload steps and no
fault raises no interlock (no false positives). The long one is bench/soak.py
(results in bench/results/soak.md); this is the same schedule generator over
20 s, with the rules' long delays shortened as in every scenario test, which
makes a false trip more likely, not less."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.soak import workload_steps
from tests.integration.simulated_pod import Pod

pytestmark = pytest.mark.integration

SOAK_S = 20.0


async def test_random_workload_steps_without_faults_trip_nothing(pod: Pod) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    steps = workload_steps(seed=7, duration_s=SOAK_S, min_gap_s=1.5, max_gap_s=3.0, racks=2)
    assert len(steps) >= 6
    for at_s, target, pct in steps:
        await asyncio.sleep(max(0.0, started + at_s - loop.time()))
        await pod.inject("workload", target, str(pct))
    await asyncio.sleep(max(0.0, started + SOAK_S - loop.time()))
    assert pod.events("interlock_tripped") == []
    interlocks: Any = pod.daemon.interlocks.snapshot()
    states = {rule: state["state"] for rule, state in interlocks.items()}
    assert set(states.values()) == {"normal"}, states
    loops: Any = pod.daemon.loops.snapshot()
    modes = {state["mode"] for state in loops.values()}
    assert modes == {"auto"}
