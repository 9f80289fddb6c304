"""The real `megapod-sim` command: run, inject, clear, status, clean exit."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from megapodd.config import load_config
from tests.helpers import free_tcp_port
from tests.integration.sim_process import RunningSim, run_cli, running_sim

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSim]:
    async with running_sim(
        tmp_path / "sim",
        free_tcp_port(),
        ["--write-config", str(tmp_path / "pod.toml"), "--pod-id", "pod-test", "--speed", "10"],
    ) as running:
        yield running


async def mbpoll_input(port: int, address: int, count: int = 1) -> list[int]:
    """Input registers read by mbpoll (a real Modbus client), 0-based addresses."""
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-t", "3", "-0",
        "-r", str(address), "-c", str(count), "-1", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(10):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return [int(v) for v in re.findall(r"^\[\d+\]:\s+(-?\d+)", out.decode(), re.MULTILINE)]


def _is_symlink(path: str) -> bool:
    return Path(path).is_symlink()


BAD_INJECTIONS = [
    (["inject", "flood", "r1"], "unknown fault 'flood'"),
    (["inject", "leak", "r7"], "unknown rack 'r7'"),
    (["inject", "silent", "pdu-r9z"], "unknown device 'pdu-r9z'"),
    (["inject", "sensor-stuck", "cdu1", "bogus_point", "3"], "has no sensor point 'bogus_point'"),
    (["inject", "sensor-stuck", "cdu1", "supply_temp_c", "900"], "does not fit input register 0"),
    (["inject", "sensor-stuck", "r1s01", "gpu1_temp_c", "400"], "cannot be read from this sensor"),
    (["inject", "pump-seize", "3"], "pump must be 1-2, got 3"),
    (["inject", "garbage", "r1s01", "2"], "0 < rate <= 1"),
    (["inject", "breaker-trip", "pdu-r1a", "0"], "phase must be 1-3, got 0"),
    (["inject", "facility-hot", "-40"], "must be 1-70 C"),
    (["inject", "workload", "all", "250"], "workload must be 0-100 %"),
    (["inject", "fan-fail", "r1s01", "5"], "fan must be 1-4, got 5"),
    (["inject", "fan-fail", "pdu-r1a", "1"], "fan-fail needs a server's BMC"),
    (["inject", "leak"], "leak takes 1 argument"),
    (["inject"], "inject needs a fault"),
    (["inject", "--clear", "leak", "r1s01"], "no active fault matches 'leak r1s01'"),
    (["inject", "--clear", "nothing-like-it"], "unknown fault 'nothing-like-it'"),
]


async def test_bad_injections_exit_2_and_the_sim_keeps_running(sim: RunningSim) -> None:
    for args, message in BAD_INJECTIONS:
        result = await sim.cli(*args)
        assert result.returncode == 2, (args, result)
        assert message in result.stderr, (args, result.stderr)
    assert sim.process.returncode is None
    status = await sim.status()
    assert status["faults"] == []
    # ... and the devices still answer on the wire.
    assert len(await mbpoll_input(sim.ready["cdu_port"], 0, 18)) == 18


async def test_inject_shows_on_the_wire_and_in_status_and_clear_undoes_it(
    sim: RunningSim,
) -> None:
    port = sim.ready["cdu_port"]
    assert await mbpoll_input(port, 16) == [0]
    result = await sim.cli("inject", "leak", "r2s03")
    assert result.returncode == 0, result.stderr
    assert "injected: leak r2s03" in result.stdout
    assert await mbpoll_input(port, 16) == [0b10]  # rack 2's drip tray
    status = await sim.status()
    assert status["faults"] == ["leak r2s03"]
    assert status["cooling"]["leak_racks"] == [2]
    assert [s["id"] for s in status["servers"] if s["leak"]] == ["r2s03"]

    result = await sim.cli("inject", "sensor-stuck", "cdu1", "supply_temp_c", "55.5")
    assert result.returncode == 0, result.stderr
    assert await mbpoll_input(port, 0) == [5550]

    result = await sim.cli("inject", "--clear", "leak")
    assert result.returncode == 0, result.stderr
    assert "cleared: leak r2s03" in result.stdout
    assert await mbpoll_input(port, 16) == [0]
    result = await sim.cli("inject", "--clear")
    assert "cleared: sensor-stuck cdu1 supply_temp_c 55.5" in result.stdout
    assert "active faults: none" in result.stdout
    assert (await mbpoll_input(port, 0))[0] != 5550


async def test_fan_fail_shows_in_status_json_with_every_fan(sim: RunningSim) -> None:
    before = await sim.status()
    server = next(s for s in before["servers"] if s["id"] == "r1s02")
    duty = server["fan_duty_pct"]
    assert server["fan_rpm"] == [16_000 * duty / 100] * 4 and server["failed_fans"] == []
    assert server["fan_mode"] in ("standard", "full") and len(server["fan_zone_duty_pct"]) == 2
    result = await sim.cli("inject", "fan-fail", "r1s02", "3")
    assert result.returncode == 0, result.stderr
    assert "injected: fan-fail r1s02 3" in result.stdout
    after = await sim.status()
    server = next(s for s in after["servers"] if s["id"] == "r1s02")
    assert server["fan_rpm"] == [16_000 * duty / 100, 16_000 * duty / 100, 0.0, 16_000 * duty / 100]
    assert server["failed_fans"] == [3]
    assert after["faults"] == ["fan-fail r1s02 3"]
    text = await sim.cli("status")
    assert "FAN3 FAILED" in text.stdout
    result = await sim.cli("inject", "--clear", "fan-fail", "r1s02")
    assert "cleared: fan-fail r1s02 3" in result.stdout
    cleared = await sim.status()
    assert next(s for s in cleared["servers"] if s["id"] == "r1s02")["failed_fans"] == []


async def test_workload_fault_raises_power_and_status_tells_the_truth(sim: RunningSim) -> None:
    before = await sim.status()
    result = await sim.cli("inject", "workload", "r1", "100")
    assert result.returncode == 0, result.stderr
    after = await sim.status()
    rack1 = [s for s in after["servers"] if s["id"].startswith("r1s")]
    assert all(s["workload_pct"] == 100.0 for s in rack1)
    assert all(s["workload_pct"] == 50.0 for s in after["servers"] if s["id"].startswith("r2s"))
    await asyncio.sleep(1.0)  # 10 simulated seconds: power settles within 2
    settled = await sim.status()
    assert settled["total_power_w"] > before["total_power_w"] + 4 * 4_000
    text = await sim.cli("status")
    assert "IT power" in text.stdout and "r1s01" in text.stdout


async def test_written_config_is_valid_for_the_daemon(sim: RunningSim, tmp_path: Path) -> None:
    config = load_config(tmp_path / "pod.toml")
    assert config.pod.id == "pod-test"
    assert config.cdu[0].url == f"modbus+tcp://127.0.0.1:{sim.ready['cdu_port']}"
    assert [p.port for p in config.pdu] == list(sim.ready["pdu_ports"].values())
    assert all(_is_symlink(b.port) for b in config.bmc)
    assert config.api.socket.parent == sim.state_dir


async def test_sigterm_stops_cleanly_and_leaves_no_sockets_or_ptys(sim: RunningSim) -> None:
    links = list((sim.state_dir / "pty").iterdir())
    assert len(links) == 8
    assert (sim.state_dir / "sim.sock").is_socket()
    assert await sim.stop() == 0
    assert not (sim.state_dir / "sim.sock").exists()
    assert not any(p.exists() or p.is_symlink() for p in links)


async def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    async with running_sim(tmp_path / "sim", free_tcp_port()) as running:
        running.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await running.process.wait() == 0


async def test_status_and_inject_without_a_sim_say_so(tmp_path: Path) -> None:
    for args in (["status"], ["inject", "leak", "r1"]):
        result = await run_cli(*args, "--state-dir", str(tmp_path))
        assert result.returncode == 1
        assert "no simulator is running with control socket" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--racks", "17"], "racks must be 1-16, got 17"),
        (["--servers-per-rack", "30", "--outlets", "24"], "do not fit"),
        (["--speed", "0"], "speed must be > 0"),
        (["--pod-id", "Pod One"], "pod id 'Pod One'"),
        (["--mqtt-url", "http://x"], "MQTT URL must start"),
        (["--base-port", "65534"], "choose another --base-port"),
        (["--profile", "huge"], "invalid choice: 'huge'"),
    ],
)
async def test_bad_run_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = await run_cli("run", "--state-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr


async def test_port_in_use_is_a_clear_failure(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await run_cli("run", "--state-dir", str(tmp_path), "--base-port", str(port))
    assert result.returncode == 1
    assert "cannot start" in result.stderr


async def test_bmcs_on_tcp_answer_terminal_mode(tmp_path: Path) -> None:
    base = free_tcp_port()
    config_path = tmp_path / "pod.toml"
    async with running_sim(
        tmp_path / "sim", base, ["--bmc-tcp", "--write-config", str(config_path)]
    ) as running:
        config = load_config(config_path)
        assert config.bmc[0].port == f"socket://127.0.0.1:{base + 3}"  # after CDU + 2 PDUs
        reader, writer = await asyncio.open_connection("127.0.0.1", base + 3)
        try:
            writer.write(b"[18 00 01]\r")  # App NetFn, seq 0, Get Device ID
            async with asyncio.timeout(5):
                reply = await reader.readuntil(b"\n")
        finally:
            writer.close()
            await writer.wait_closed()
        assert reply.replace(b" ", b"").upper().startswith(b"[1C000100")
        assert await running.stop() == 0
