"""The recommended loops against the simulated pod: failsafe within two ticks of
a bad supply reading and at stale_after_s of a silent CDU (read back with
mbpoll and in the simulator's write log), the ramp back without a step down,
a stopped fan boosting its server's fans, an override that holds, expires and
hands back without a bump."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from tests.daemon_helpers import megapodctl
from tests.helpers import wait_until
from tests.integration.simulated_pod import PUMP_SETPOINT, VALVE, Pod
from tests.peers import mbpoll_holding

TICK_S = 0.1  # the daemon's control tick


def _loop(pod: Pod, loop: str) -> dict[str, Any]:
    state = pod.daemon.loops.snapshot()[loop]
    assert isinstance(state, dict)
    return state


async def _settled(pod: Pod) -> None:
    await wait_until(
        lambda: all(_loop(pod, n)["mode"] == "auto" for n in ("supply-temp", "pump-flow")),
        timeout_s=20,
    )


def _writes(log: dict[str, Any], register: int) -> list[tuple[float, int]]:
    return [(t, v) for t, address, v in log["cdu_writes"] if address == register]


# The valve loop's slew: 5 %/s = 50 register counts (0.1 %) per second.
VALVE_SLEW_PER_S = 50


# How much later one write may reach the CDU than the one before it, beyond
# the loop's own timing (the queue, a poll in between, a busy machine).
WRITE_JITTER_S = 0.5


def _no_step_down(writes: list[tuple[float, int]]) -> bool:
    """Every move down is within the slew rate over the time between the
    writes (the loop slews by its real elapsed time, so a late tick moves
    further), give or take the write jitter: a ramp of ~50 counts per second,
    not a step of hundreds to the loop's target."""
    return all(
        a - b <= VALVE_SLEW_PER_S * (tb - ta + WRITE_JITTER_S) + 1
        for (ta, a), (tb, b) in itertools.pairwise(writes)
    )


def _from_failsafe(writes: list[tuple[float, int]]) -> list[tuple[float, int]]:
    first = next(i for i, (_, v) in enumerate(writes) if v == 1000)
    return writes[first:]


async def test_a_bad_supply_reading_sends_valve_and_pumps_to_failsafe_within_two_ticks(
    pod: Pod,
) -> None:
    await _settled(pod)
    at_s = await pod.inject_at("sensor-range", "cdu1", "supply_temp_c")

    async def failsafe_written() -> bool:
        log = await pod.log(at_s)
        return any(v == 1000 for _, v in _writes(log, VALVE)) and any(
            v == 10000 for _, v in _writes(log, PUMP_SETPOINT)
        )

    await wait_until(failsafe_written, timeout_s=5, interval_s=0.05)
    log = await pod.log(at_s)
    valve_s = min(t for t, v in _writes(log, VALVE) if v == 1000) - at_s
    pump_s = min(t for t, v in _writes(log, PUMP_SETPOINT) if v == 10000) - at_s
    # The next CDU poll (0.25 s) sees the bad reading; two ticks later it is written.
    assert valve_s < 1.0 and pump_s < 1.0, (valve_s, pump_s)
    assert await mbpoll_holding(pod.cdu_port, VALVE) == [1000]
    assert await mbpoll_holding(pod.cdu_port, PUMP_SETPOINT) == [10000]
    failsafe = [e.data["loop"] for e in pod.events("loop_failsafe")]
    assert "supply-temp" in failsafe and "pump-supply-guard" in failsafe

    cleared_s = time.monotonic()
    await pod.clear("sensor-range")
    await wait_until(lambda: _loop(pod, "supply-temp")["mode"] == "auto", timeout_s=5)
    await asyncio.sleep(4.0)
    log = await pod.log(at_s)
    after = _from_failsafe(_writes(log, VALVE))
    # Back down from 100 % at no more than 5 %/s, in 0.1 % steps: a ramp, no step.
    assert len(after) > 2 and after[-1][1] < 1000
    assert _no_step_down(after), after
    assert pod.events("loop_recovered")
    assert pod.state("supply-high") == "normal", time.monotonic() - cleared_s


async def test_a_silent_cdu_is_failsafe_at_stale_after_s_and_written_when_it_answers(
    pod: Pod,
) -> None:
    await _settled(pod)
    silent_wall = time.time()
    at_s = await pod.inject_at("silent", "cdu1")
    await wait_until(lambda: _loop(pod, "supply-temp")["mode"] == "failsafe", timeout_s=5)
    [event] = [e for e in pod.events("loop_failsafe") if e.data["loop"] == "supply-temp"]
    # Last good reading at most one poll (0.25 s) before the silence, stale after
    # 0.75 s, then within two ticks.
    assert 0.5 <= event.ts - silent_wall <= 0.75 + 0.25 + 2 * TICK_S + 0.2, event.ts - silent_wall
    await pod.clear("silent", "cdu1")

    async def failsafe_landed() -> bool:
        return any(v == 1000 for _, v in _writes(await pod.log(at_s), VALVE))

    await wait_until(failsafe_landed, timeout_s=15, interval_s=0.1)
    await wait_until(lambda: _loop(pod, "supply-temp")["mode"] == "auto", timeout_s=10)
    await asyncio.sleep(3.0)
    valve = _from_failsafe(_writes(await pod.log(at_s), VALVE))
    assert _no_step_down(valve), valve
    code, text = await pod.reset("supply-high")  # 5 s without a reading tripped it too
    assert code in (0, 1), text


async def test_a_stopped_fan_boosts_its_server_within_one_poll(pod: Pod) -> None:
    await wait_until(lambda: _loop(pod, "fan-zone@r1s02")["mode"] == "auto", timeout_s=30)
    await pod.inject("fan-fail", "r1s02", "3")

    def seen() -> bool:
        point = pod.daemon.store.get("r1s02", "fan3_rpm")
        return point is not None and point.value == 0

    await wait_until(seen, timeout_s=15, interval_s=0.05)
    seen_s = time.monotonic()

    async def boosted() -> bool:
        return bool((await pod.server("r1s02"))["fan_duty_pct"] == 100)

    await wait_until(boosted, timeout_s=5, interval_s=0.1)
    assert time.monotonic() - seen_s <= 2.0  # one BMC poll
    assert (await pod.server("r1s03"))["fan_duty_pct"] < 100  # only that server
    await pod.clear("fan-fail")
    await wait_until(lambda: _loop(pod, "fan-zone@r1s02")["mode"] == "auto", timeout_s=30)


async def test_an_override_holds_expires_and_the_loop_resumes_without_a_bump(pod: Pod) -> None:
    await _settled(pod)
    code, _, err = await megapodctl(
        "--socket", pod.sock, "override", "cdu1", "facility_valve_pct", "70", "--for", "6s"
    )
    assert code == 0, err
    assert await mbpoll_holding(pod.cdu_port, VALVE) == [700]
    await wait_until(lambda: _loop(pod, "supply-temp")["mode"] == "overridden", timeout_s=3)
    started = time.monotonic()
    await asyncio.sleep(3.0)
    assert await mbpoll_holding(pod.cdu_port, VALVE) == [700]  # held
    await wait_until(lambda: _loop(pod, "supply-temp")["mode"] == "auto", timeout_s=8)
    assert time.monotonic() - started + 0.5 >= 5.0  # expired on time, not early
    expired = [e for e in pod.daemon.events.recent if e.type == "output_owner_changed"
               and e.data.get("reason") == "override expired"]  # fmt: skip
    assert expired
    await asyncio.sleep(2.5)
    [resumed] = await mbpoll_holding(pod.cdu_port, VALVE)
    assert abs(resumed - 700) < 50, resumed  # < 5 % of the range away from the held value
