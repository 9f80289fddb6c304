"""Whole-pod benchmark: megapodd polling the full simulated pod.

The full profile (1 CDU, 16 PDUs × 48 outlets, 144 BMCs on ptys) runs in a
`megapod-sim` process, megapodd in another, a private mosquitto in a third;
the daemon polls at its configured rates (CDU 0.25 s; PDUs 1 s / 10 s; BMC
temperatures and leak 2 s, fans/power/chassis 5 s) and publishes to MQTT. CPU
of each process from /proc over --windows windows of --seconds each, medians
reported. DESIGN.md's budget: the whole full pod under ~12 % of one core.

Usage: .venv/bin/python -m bench.bench_pod [--seconds 20] [--windows 3]
Writes the report to bench/results/pod.md and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_file import write_results
from megapodd.api.client import ApiClientError, call
from tests.helpers import stop_processes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEVICES = 161


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _spawn(*argv: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out)


async def _wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_pod: timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def run(seconds: float, windows: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-pod-"))
    mqtt_port, base_port = _free_port(), _free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs.append(
            await _spawn("mosquitto", "-c", str(work / "mosquitto.conf"), log=work / "mq.log")
        )
        sim = await _spawn(
            str(BIN / "megapod-sim"), "run", "--profile", "full", "--state-dir", str(work / "sim"),
            "--base-port", str(base_port), "--write-config", str(work / "pod.toml"),
            "--mqtt-url", f"mqtt://127.0.0.1:{mqtt_port}", "--metrics-listen", "",
            log=work / "sim.log",
        )  # fmt: skip
        procs.append(sim)

        async def config_written() -> bool:
            return (work / "pod.toml").exists()

        await _wait_for(config_written, 60, "the simulator")
        started = time.monotonic()
        daemon = await _spawn(
            str(BIN / "megapodd"), "--config", str(work / "pod.toml"), log=work / "d.log"
        )
        procs.append(daemon)
        sock = work / "sim" / "megapodd.sock"

        async def all_online() -> bool:
            try:
                status: Any = await call(sock, "status")
            except ApiClientError:
                return False
            states = [d["state"] for d in status["devices"]]
            return len(states) == DEVICES and all(s == "online" for s in states)

        await _wait_for(all_online, 120, "every device online")
        online_after_s = time.monotonic() - started
        await asyncio.sleep(5.0)  # past the start-up transients
        daemon_pct: list[float] = []
        sim_pct: list[float] = []
        for _ in range(windows):
            d0, s0, t0 = _cpu_s(daemon.pid), _cpu_s(sim.pid), time.monotonic()
            await asyncio.sleep(seconds)
            d1, s1, t1 = _cpu_s(daemon.pid), _cpu_s(sim.pid), time.monotonic()
            daemon_pct.append(100 * (d1 - d0) / (t1 - t0))
            sim_pct.append(100 * (s1 - s0) / (t1 - t0))
        status: Any = await call(sock, "status")
        not_good = sum(
            p["quality"] != "good" for d in status["devices"] for p in d["points"].values()
        )
        points = sum(len(d["points"]) for d in status["devices"])
        rss = _rss_mib(daemon.pid)
    finally:
        await stop_processes(*procs, timeout_s=15)
    load = os.getloadavg()[0]
    daemon_median = statistics.median(daemon_pct)
    budget = "meets" if daemon_median <= 12.0 else "MISSES"
    return f"""# Whole-pod benchmark: megapodd on the full simulated pod

Command: `.venv/bin/python -m bench.bench_pod --seconds {seconds:g} --windows {windows}`
Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()};
1-minute load average {load:.2f} at the end (the machine is shared: quote medians).
Pod: 1 CDU (Modbus TCP), 16 PDUs × 48 outlets (SNMP v2c), 144 BMCs (IPMI
Terminal Mode on ptys); {DEVICES} devices, {points} points; MQTT to a private mosquitto.

| measure | value |
|---|---|
| all {DEVICES} devices online after daemon start | {online_after_s:.1f} s |
| megapodd CPU, median of {windows} × {seconds:g} s | **{daemon_median:.1f} %** of one core \
(budget ~12 %: {budget}) |
| megapodd CPU, each window | {", ".join(f"{p:.1f} %" for p in daemon_pct)} |
| megapodd RSS | {rss:.1f} MiB |
| simulator CPU, median | {statistics.median(sim_pct):.1f} % of one core (budget 50 %) |
| points not good at the end | {not_good} of {points} |
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    report = asyncio.run(run(args.seconds, args.windows))
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    write_results(ROOT / "bench" / "results" / "pod.md", report)
    print(report)


if __name__ == "__main__":
    main()
