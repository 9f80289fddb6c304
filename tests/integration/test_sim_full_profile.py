"""The full pod: 144 BMC ptys, 16 PDU agents and the CDU, in budget."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from drivers.base import DeviceDriver, PollGroup
from drivers.errors import DriverError
from drivers.ipmi.bmc import BmcDriver
from drivers.modbus_cdu import CduDriver
from drivers.snmp_pdu import SnmpPduDriver
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


async def _poll(
    driver: DeviceDriver, group: PollGroup, stop: asyncio.Event, errors: list[str]
) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stop.is_set():
        try:
            await driver.read_group(group.name)
        except DriverError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        due += group.period_s
        await asyncio.sleep(max(0.0, due - loop.time()))


async def test_full_profile_polled_like_the_daemon_stays_in_budget(tmp_path: Path) -> None:
    """The project's own drivers poll every device at the configured rates
    (CDU 0.25 s, PDUs 1 s / 10 s, 144 BMCs 2 s) while the sim's CPU is measured."""
    config_path = tmp_path / "pod.toml"
    async with running_sim(
        tmp_path / "sim", free_tcp_port(), ["--profile", "full", "--write-config", str(config_path)]
    ) as sim:
        config = load_config(config_path)
        drivers: list[DeviceDriver] = [CduDriver(c.url, c.unit, c.poll_s) for c in config.cdu]
        drivers += [
            SnmpPduDriver(
                host=p.host,
                port=p.port,
                outlets=p.outlets,
                fast_poll_s=p.fast_poll_s,
                slow_poll_s=p.slow_poll_s,
            )
            for p in config.pdu
        ]
        drivers += [BmcDriver(b.port, b.baud, b.poll_s, name=b.id) for b in config.bmc]
        try:
            await asyncio.gather(*(d.connect() for d in drivers))
            stop, errors = asyncio.Event(), list[str]()
            async with asyncio.TaskGroup() as tg:
                for driver in drivers:
                    for group in driver.poll_groups():
                        tg.create_task(_poll(driver, group, stop, errors))
                await asyncio.sleep(3.0)  # every group has polled at least once
                loop = asyncio.get_running_loop()
                cpu0, wall0 = process_cpu_s(sim.process.pid), loop.time()
                await asyncio.sleep(MEASURE_S)
                cpu1, wall1 = process_cpu_s(sim.process.pid), loop.time()
                stop.set()
        finally:
            await asyncio.gather(*(d.close() for d in drivers))
        fraction = (cpu1 - cpu0) / (wall1 - wall0)
        print(f"full profile sim CPU under polling: {100 * fraction:.1f} % of one core")
        assert errors == []
        assert fraction < CPU_BUDGET_FRACTION
