"""mbpoll (a real Modbus master) against the simulated CDU: the map as DEVICES.md states it."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator

import pytest

from sim_devices.cdu import CduState, SimulatedCdu
from tests.peers import run_tool

pytestmark = pytest.mark.interop

MBPOLL = shutil.which("mbpoll")
# "[0]: \t65011 (-525)": mbpoll prints a 16-bit register unsigned, then signed if negative.
LINE = re.compile(r"^\[(\d+)\]:\s+(\d+)(?:\s+\((-?\d+)\))?\s*$", re.MULTILINE)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedCdu]:
    if MBPOLL is None:
        pytest.fail("mbpoll is not installed: run scripts/bootstrap")
    state = CduState(
        supply_temp_c=-5.25,
        return_temp_c=41.37,
        facility_supply_temp_c=18.5,
        facility_return_temp_c=-12.34,
        flow_lpm=612.3,
        supply_pressure_kpa=251.4,
        return_pressure_kpa=100.2,
        pump1_speed_pct=63.21,
        pump2_speed_pct=0.0,
        reservoir_level_pct=80.5,
        facility_valve_position_pct=42.0,
        heat_load_w=412_345,
        leak_zones=0b1001,
        local_mode=True,
        alarm_code=10,
    )
    # autostep off: the image stays exactly the state set above.
    cdu = SimulatedCdu(state, physics=False, autostep=False)
    await cdu.start("127.0.0.1", 0)
    try:
        yield cdu
    finally:
        await cdu.close()


async def mbpoll(*args: str) -> tuple[int, str]:
    code, out, err = await run_tool("mbpoll", *args, timeout_s=10.0)
    return code, out + err


def signed_values(output: str) -> dict[int, int]:
    return {int(a): int(s) if s else int(u) for a, u, s in LINE.findall(output)}


async def test_input_registers_match_the_documented_scaling(sim: SimulatedCdu) -> None:
    rc, out = await mbpoll(
        "-m", "tcp", "-p", str(sim.port), "-a", "1", "-t", "3", "-0", "-r", "0", "-c", "18",
        "-1", "127.0.0.1",
    )  # fmt: skip
    assert rc == 0, out
    regs = signed_values(out)
    assert sorted(regs) == list(range(18))
    s = sim.state
    # DEVICES.md §1: scale each register back to engineering units.
    assert regs[0] * 0.01 == pytest.approx(s.supply_temp_c)
    assert regs[0] == -525
    assert regs[1] * 0.01 == pytest.approx(s.return_temp_c)
    assert regs[2] * 0.01 == pytest.approx(s.facility_supply_temp_c)
    assert regs[3] == -1234
    assert regs[4] * 0.1 == pytest.approx(s.flow_lpm)
    assert regs[5] * 0.1 == pytest.approx(s.supply_pressure_kpa)
    assert regs[6] * 0.1 == pytest.approx(s.return_pressure_kpa)
    assert regs[7] * 0.1 == pytest.approx(s.supply_pressure_kpa - s.return_pressure_kpa)
    assert regs[8] * 0.01 == pytest.approx(s.pump1_speed_pct)
    assert regs[9] == 0
    assert regs[10] * 0.1 == pytest.approx(s.reservoir_level_pct)
    assert regs[11] * 0.1 == pytest.approx(s.facility_valve_position_pct)
    assert (regs[12] << 16) | regs[13] == s.heat_load_w
    # b0 pump1 running, b4 leak, b7 local mode.
    assert regs[14] == (1 << 0) | (1 << 4) | (1 << 7)
    assert regs[15] == 10
    assert regs[16] == 0b1001
    assert regs[17] == (2 << 8) | 7


async def test_heat_load_as_32_bit_big_endian_words(sim: SimulatedCdu) -> None:
    rc, out = await mbpoll(
        "-m", "tcp", "-p", str(sim.port), "-a", "1", "-t", "3:int", "-B", "-0", "-r", "12",
        "-c", "1", "-1", "127.0.0.1",
    )  # fmt: skip
    assert rc == 0, out
    assert signed_values(out) == {12: 412_345}


async def test_holding_registers_and_a_write(sim: SimulatedCdu) -> None:
    port = str(sim.port)
    rc, out = await mbpoll(
        "-m", "tcp", "-p", port, "-a", "1", "-t", "4", "-0", "-r", "100", "-c", "10", "-1",
        "127.0.0.1",
    )  # fmt: skip
    assert rc == 0, out
    assert signed_values(out) == {
        100: 0b011, 101: 1, 102: 6000, 103: 0, 104: 500,
        105: 10, 106: 0, 107: 10000, 108: 0, 109: 1500,
    }  # fmt: skip

    # Local mode: 102 is refused with exception 04 (mbpoll: "Slave device or server failure").
    rc, out = await mbpoll("-m", "tcp", "-p", port, "-a", "1", "-t", "4", "-0", "-r", "102",
                           "-1", "127.0.0.1", "7500")  # fmt: skip
    assert rc != 0
    assert "failure" in out.lower(), out
    assert sim.state.pump_speed_setpoint_pct == 60.0

    sim.state.local_mode = False
    rc, out = await mbpoll("-m", "tcp", "-p", port, "-a", "1", "-t", "4", "-0", "-r", "102",
                           "-1", "127.0.0.1", "7500")  # fmt: skip
    assert rc == 0, out
    assert sim.state.pump_speed_setpoint_pct == 75.0

    # Out of range: exception 03, value unchanged.
    rc, out = await mbpoll("-m", "tcp", "-p", port, "-a", "1", "-t", "4", "-0", "-r", "102",
                           "-1", "127.0.0.1", "1500")  # fmt: skip
    assert rc != 0
    assert "illegal data value" in out.lower(), out
    assert sim.state.pump_speed_setpoint_pct == 75.0


async def test_unmapped_address_is_exception_02(sim: SimulatedCdu) -> None:
    rc, out = await mbpoll("-m", "tcp", "-p", str(sim.port), "-a", "1", "-t", "3", "-0",
                           "-r", "18", "-1", "127.0.0.1")  # fmt: skip
    assert rc != 0
    assert "illegal data address" in out.lower(), out
