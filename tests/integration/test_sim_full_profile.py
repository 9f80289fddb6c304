"""The full pod: 144 BMC ptys, 16 PDU agents and the CDU, in budget."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from megapodd.config import load_config
from tests.helpers import free_tcp_port
from tests.integration.sim_process import running_sim
from tests.integration.test_sim_faults_wire import tool

pytestmark = [pytest.mark.integration, pytest.mark.interop]

CPU_BUDGET_FRACTION = 0.5  # of one core, at --speed 1 (the brief's budget)
MEASURE_S = 10.0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (what `time` reports)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pty_links(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_symlink())


async def test_full_profile_serves_everything_within_the_cpu_budget(tmp_path: Path) -> None:
    config_path = tmp_path / "pod.toml"
    base_port = free_tcp_port()
    async with running_sim(
        tmp_path / "sim",
        base_port,
        ["--profile", "full", "--write-config", str(config_path)],
    ) as sim:
        pid = sim.process.pid
        links = pty_links(sim.state_dir / "pty")
        assert len(links) == 144
        assert all(os.readlink(link).startswith("/dev/pts/") for link in links)
        assert len(sim.ready["pdu_ports"]) == 16
        config = load_config(config_path)
        assert (len(config.cdu), len(config.pdu), len(config.bmc)) == (1, 16, 144)

        # Every kind of device answers a real client.
        last_pdu = f"127.0.0.1:{sim.ready['pdu_ports']['pdu-r8b']}"
        snmp = await tool("snmpget", "-v2c", "-c", "public", "-Oqv", last_pdu, "1.3.6.1.2.1.1.5.0")
        assert snmp.returncode == 0 and "pdu-r8b" in snmp.out, snmp
        ipmi = await tool(
            "ipmitool", "-I", "serial-terminal", "-D",
            f"{sim.state_dir / 'pty' / 'r8s18.tty'}:115200", "chassis", "power", "status",
        )  # fmt: skip
        assert "Chassis Power is on" in ipmi.out, ipmi
        modbus = await tool(
            "mbpoll", "-m", "tcp", "-p", str(base_port), "-t", "3", "-0", "-r", "4", "-c", "1",
            "-1", "127.0.0.1",
        )  # fmt: skip
        assert modbus.returncode == 0, modbus

        # CPU at --speed 1 with nobody polling: the sim's own cost.
        loop = asyncio.get_running_loop()
        cpu0, wall0 = process_cpu_s(pid), loop.time()
        await asyncio.sleep(MEASURE_S)
        cpu1, wall1 = process_cpu_s(pid), loop.time()
        fraction = (cpu1 - cpu0) / (wall1 - wall0)
        print(
            f"full profile sim CPU: {100 * fraction:.1f} % of one core over {wall1 - wall0:.1f} s"
        )
        assert fraction < CPU_BUDGET_FRACTION
        status = await sim.status()
        assert len(status["servers"]) == 144
        assert status["cooling"]["flow_lpm"] > 1_000
        assert await sim.stop() == 0
        assert pty_links(sim.state_dir / "pty") == []
