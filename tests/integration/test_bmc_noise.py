"""Line noise: the driver never returns a wrong value as GOOD and most polls still succeed.

The simulated BMC puts random bytes in front of 30 % of its replies and corrupts
10 % of them (cut short, with or without the line end, or a non-hex character).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from drivers.base import Quality
from drivers.errors import TransportError
from drivers.ipmi.bmc import BmcDriver
from sim_devices.bmc import BmcSpec, BmcState, serve_bmcs
from tests.integration.test_bmc_driver import POINTS, SENSOR_IDS

pytestmark = pytest.mark.integration

POLLS = 150


@pytest.mark.looptime(noop_cycles=5000)  # see REAL_IO_LOOPTIME in test_bmc_driver
async def test_noisy_line_never_yields_a_wrong_good_value(tmp_path: Path) -> None:
    state = BmcState(placeholder_physics=False)
    farm = await serve_bmcs([BmcSpec("noisy", state, seed=7)], tmp_path)
    sim = farm["noisy"]
    driver = BmcDriver(sim.path, timeout_s=0.3, retries=3)
    rng = random.Random(11)
    good_polls = 0
    wrong: list[str] = []
    try:
        await driver.connect()  # clean line for the SDR walk, as after a maintenance window
        state.noise_rate = 0.3
        state.garbage_rate = 0.1
        for _ in range(POLLS):
            state.inlet_temp_c = rng.randint(-20, 60)
            state.outlet_temp_c = rng.randint(20, 80)
            state.cpu_temp_c = rng.randint(30, 100)
            state.gpu_temps_c = [rng.randint(60, 230) / 2 for _ in range(8)]
            state.coolant_in_temp_c = rng.randint(20, 120) / 2
            state.fan_rpm = [rng.randint(20, 200) * 100.0 for _ in range(4)]
            state.psu_power_w = rng.randint(10, 140) * 100.0
            state.leak = rng.random() < 0.2
            state.chassis_on = rng.random() < 0.8
            state.fan_duty_pct[0] = rng.randint(20, 100)
            want = {p: sim.bmc.value_of(s) for p, s in zip(POINTS, SENSOR_IDS, strict=True)}
            want_slow: dict[str, object] = {
                "chassis_power": "on" if state.chassis_on else "off",
                "power_w": round(state.psu_power_w),
                "fan_duty_pct": state.fan_duty_pct[0],
            }
            try:
                points = dict(await driver.read_group("sensors"))
                points.update(await driver.read_group("slow"))
            except TransportError:
                continue
            all_good = True
            for name, point in points.items():
                if point.quality is not Quality.GOOD:
                    all_good = False
                    continue
                expect = want.get(name, want_slow.get(name, point.value))
                if point.value != expect:
                    wrong.append(f"{name}: {point.value!r} reported GOOD, true {expect!r}")
            good_polls += all_good
            await asyncio.sleep(2.0)
    finally:
        await driver.close()
        await farm.close()
    print(f"noise: {good_polls}/{POLLS} polls all GOOD; {driver.counters}")
    assert not wrong, wrong[:10]
    counters = driver.counters
    assert counters.frame_errors > 0.05 * counters.requests  # the noise really was there
    assert good_polls >= 0.8 * POLLS, (good_polls, counters)
