"""Issue 4's noise test through the whole daemon: with random bytes between
frames and 10 % of replies corrupted, nothing wrong is ever published as good
on MQTT, and at least 80 % of polls succeed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from megapodd.store import DeviceState
from sim_devices.bmc import BmcSpec, BmcState, serve_bmcs
from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

SENSORS = {
    "inlet_temp_c": "Inlet Temp",
    "outlet_temp_c": "Outlet Temp",
    "cpu_temp_c": "CPU Temp",
    **{f"gpu{i}_temp_c": f"GPU{i} Temp" for i in range(1, 9)},
    "coolant_in_temp_c": "Coolant In Temp",
    **{f"fan{i}_rpm": f"Fan{i}" for i in range(1, 5)},
    "psu_power_w": "PSU Power",
    "leak": "Leak",
}
RUN_S = 12.0
POLL_S = 0.5


async def test_noisy_lines_never_publish_a_wrong_good_value(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    states = [BmcState(placeholder_physics=False) for _ in range(2)]
    states[1].gpu_temps_c = [70.0 + i for i in range(8)]
    farm = await serve_bmcs(
        [BmcSpec(f"r1s0{n + 1}", state, seed=n) for n, state in enumerate(states)], tmp_path / "pty"
    )
    truth = {
        name: {point: farm[name].bmc.value_of(sensor) for point, sensor in SENSORS.items()}
        for name in ("r1s01", "r1s02")
    }
    sections = "".join(
        f'[[bmc]]\nid = "{name}"\nport = "{farm[name].path}"\nrack = 1\npoll_s = {POLL_S}\n'
        "timeout_s = 0.3\nretries = 3\n"
        for name in ("r1s01", "r1s02")
    )
    config = write_config(tmp_path, mosquitto, "pod-noise", extra=sections)
    published: list[tuple[str, dict[str, dict[str, object]]]] = []
    try:
        async with (
            aiomqtt.Client(mosquitto.host, mosquitto.port) as subscriber,
            running_daemon(config) as daemon,
        ):
            await subscriber.subscribe("megapod/v1/pod-noise/devices/+/state", qos=1)
            await wait_until(
                lambda: all(
                    daemon.store.device(n).state is DeviceState.ONLINE for n in ("r1s01", "r1s02")
                ),
                timeout_s=15,
            )
            # The SDR walk happened on a clean line; now the line gets noisy.
            for state in states:
                state.noise_rate = 0.3
                state.garbage_rate = 0.1
            believed: list[tuple[str, str, object]] = []

            def record(device: str, names: frozenset[str]) -> None:
                for name in names & SENSORS.keys():
                    point = daemon.store.get(device, name)
                    if point is not None and point.quality == "good":
                        believed.append((device, name, point.value))

            daemon.store.changes.add("test recorder", record)
            supervisors = [daemon.devices.bmcs[n][1] for n in ("r1s01", "r1s02")]
            ok_before = sum(s.polls_ok for s in supervisors)
            failed_before = sum(s.polls_failed for s in supervisors)

            async def collect() -> None:
                async for message in subscriber.messages:
                    assert isinstance(message.payload, bytes)
                    device = str(message.topic).split("/")[-2]
                    published.append((device, json.loads(message.payload)["points"]))

            with pytest.raises(TimeoutError):
                async with asyncio.timeout(RUN_S):
                    await collect()
            ok = sum(s.polls_ok for s in supervisors) - ok_before
            failed = sum(s.polls_failed for s in supervisors) - failed_before
            bmcs = daemon.devices.bmcs
            frame_errors = sum(bmcs[n][1].driver.counters.frame_errors for n in truth)
    finally:
        await farm.close()

    wrong = [
        f"{device}.{name}: published {point['value']!r} as good, true {truth[device][name]!r}"
        for device, points in published
        for name, point in points.items()
        if name in SENSORS and point["quality"] == "good" and point["value"] != truth[device][name]
    ]
    wrong += [
        f"{device}.{name}: daemon took {value!r} as good, true {truth[device][name]!r}"
        for device, name, value in believed
        if value != truth[device][name]
    ]
    assert not wrong, wrong[:10]
    assert frame_errors > 0  # the noise really reached the driver
    assert len(published) >= 2
    assert ok / (ok + failed) >= 0.8, (ok, failed)
