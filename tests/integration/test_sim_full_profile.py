"""The full pod: 144 BMC ptys, 16 PDU agents and the CDU, in budget."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from megapodd.config import load_config
from tests.helpers import MosquittoBroker, free_tcp_port, wait_until
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


async def _online_count(socket: Path) -> tuple[int, int]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "megapodctl"), "--socket", str(socket),
        "status", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        return 0, 0
    devices = json.loads(out)["devices"]
    return sum(d["state"] == "online" for d in devices), len(devices)


async def test_megapodd_brings_every_device_of_the_full_pod_online(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """`megapodd --config pod.toml` against the full profile: all 161 devices
    online, both processes' CPU measured while it polls at the configured rates."""
    config_path = tmp_path / "pod.toml"
    args = ["--profile", "full", "--write-config", str(config_path), "--mqtt-url", mosquitto.url,
            "--metrics-listen", ""]  # fmt: skip
    async with running_sim(tmp_path / "sim", free_tcp_port(), args) as sim:
        daemon = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "megapodd"), "--config", str(config_path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            socket = load_config(config_path).api.socket
            await wait_until(socket.exists, timeout_s=20)

            async def all_online() -> bool:
                online, total = await _online_count(socket)
                return total == 161 and online == total

            await wait_until(all_online, timeout_s=60, interval_s=0.5)
            loop = asyncio.get_running_loop()
            sim0, daemon0, wall0 = (
                process_cpu_s(sim.process.pid),
                process_cpu_s(daemon.pid),
                loop.time(),
            )
            await asyncio.sleep(MEASURE_S)
            sim1, daemon1, wall1 = (
                process_cpu_s(sim.process.pid),
                process_cpu_s(daemon.pid),
                loop.time(),
            )
            assert await _online_count(socket) == (161, 161)
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                assert await daemon.wait() == 0
    sim_fraction = (sim1 - sim0) / (wall1 - wall0)
    daemon_fraction = (daemon1 - daemon0) / (wall1 - wall0)
    print(
        f"full pod at --speed 1: sim {100 * sim_fraction:.1f} %, "
        f"megapodd {100 * daemon_fraction:.1f} % of one core"
    )
    assert sim_fraction < CPU_BUDGET_FRACTION
    # Not a speed test (bench/bench_pod.py is): only catches a daemon spinning.
    assert daemon_fraction < 0.5
