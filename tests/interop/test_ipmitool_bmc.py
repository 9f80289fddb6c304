"""ipmitool (`-I serial-terminal`) against the simulated BMC on a pty, in the same event loop."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sim_devices.bmc import BmcFarm, BmcSpec, BmcState, ServedBmc, serve_bmcs
from tests.helpers import communicate

pytestmark = pytest.mark.interop

IPMITOOL = shutil.which("ipmitool")
IPMITOOL_TIMEOUT_S = 30.0


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[ServedBmc]:
    if IPMITOOL is None:
        pytest.fail("ipmitool is not installed: run scripts/bootstrap")
    state = BmcState(placeholder_physics=False, demand_power_w=7345.0, psu_power_w=7300.0)
    state.gpu_temps_c = [61.5, 62.0, 63.5, 64.0, 65.0, 66.5, 67.0, 86.0]
    state.fan_duty_pct[0] = 42
    farm: BmcFarm = await serve_bmcs([BmcSpec("srv", state)], tmp_path)
    try:
        yield farm["srv"]
    finally:
        await farm.close()


async def ipmitool(sim: ServedBmc, *args: str) -> str:
    assert IPMITOOL is not None
    proc = await asyncio.create_subprocess_exec(
        IPMITOOL,
        "-I",
        "serial-terminal",
        "-D",
        f"{sim.path}:115200",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    code, out, err = await communicate(proc, IPMITOOL_TIMEOUT_S)
    assert code == 0, f"ipmitool {' '.join(args)} failed: {err.decode()}"
    return out.decode()


def table(text: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


async def test_mc_info(sim: ServedBmc) -> None:
    out = await ipmitool(sim, "mc", "info")
    assert re.search(r"Firmware Revision\s+:\s+1\.23", out)
    assert re.search(r"IPMI Version\s+:\s+2\.0", out)
    assert re.search(r"Manufacturer ID\s+:\s+10876", out)


async def test_sdr_list_agrees_with_simulator(sim: ServedBmc) -> None:
    rows = table(await ipmitool(sim, "sdr", "list"))
    assert len(rows) == 18
    assert rows["GPU8 Temp"][0] == "86 degrees C"
    assert rows["Inlet Temp"][0] == f"{sim.bmc.value_of('Inlet Temp'):.0f} degrees C"
    assert rows["Fan1"][0] == f"{sim.bmc.value_of('Fan1'):.0f} RPM"
    assert rows["PSU Power"][0] == "7300 Watts"
    assert rows["Leak"][0] == "0x01"  # state 0: dry
    assert rows["GPU8 Temp"][1] == "nc"
    assert all(r[1] == "ok" for name, r in rows.items() if name != "GPU8 Temp")


async def test_sensor_list_values_and_thresholds(sim: ServedBmc) -> None:
    sim.state.coolant_in_temp_c = 31.5
    sim.state.inlet_temp_c = -7.0
    rows = table(await ipmitool(sim, "sensor", "list"))
    assert float(rows["GPU3 Temp"][0]) == 63.5
    assert float(rows["Coolant In Temp"][0]) == 31.5
    assert float(rows["Inlet Temp"][0]) == -7.0
    # columns: value, unit, status, lnr, lcr, lnc, unc, ucr, unr
    assert [float(v) for v in rows["GPU1 Temp"][6:9]] == [85.0, 87.0, 92.0]
    assert rows["GPU8 Temp"][2] == "nc"  # 86 °C: past the 85 °C non-critical, below 87 critical
    assert [float(v) for v in rows["Fan1"][3:5]] == [500.0, 1000.0]


async def test_chassis_status_and_power_off(sim: ServedBmc) -> None:
    assert re.search(r"System Power\s+:\s+on", await ipmitool(sim, "chassis", "status"))
    out = await ipmitool(sim, "chassis", "power", "off")
    assert "Down/Off" in out
    assert sim.state.chassis_on is False
    assert re.search(r"System Power\s+:\s+off", await ipmitool(sim, "chassis", "status"))


async def test_dcmi_power_reading(sim: ServedBmc) -> None:
    out = await ipmitool(sim, "dcmi", "power", "reading")
    assert re.search(r"Instantaneous power reading:\s+7300 Watts", out)
    assert re.search(r"Power reading state is:\s+activated", out)


async def test_raw_fan_duty(sim: ServedBmc) -> None:
    out = await ipmitool(sim, "raw", "0x30", "0x70", "0x66", "0x00", "0x00")
    assert int(out.split()[0], 16) == 42
    await ipmitool(sim, "raw", "0x30", "0x70", "0x66", "0x01", "0x00", "0x50")
    assert sim.state.fan_duty_pct[0] == 0x50


async def test_dcmi_power_limit_round_trip(sim: ServedBmc) -> None:
    out = await ipmitool(sim, "dcmi", "power", "get_limit")
    assert "No Active Power Limit" in out
    await ipmitool(sim, "dcmi", "power", "set_limit", "limit", "9000")
    await ipmitool(sim, "dcmi", "power", "activate")
    assert sim.state.power_limit_w == 9000 and sim.state.power_limit_active
    assert re.search(
        r"Power Limit:\s+9000 Watts", await ipmitool(sim, "dcmi", "power", "get_limit")
    )
