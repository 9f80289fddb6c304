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
import statistics
import time
from pathlib import Path
from typing import Any

from bench.pod_process import cpu_s, rss_mib, simulated_pod
from bench.results_file import write_results

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 161


async def run(seconds: float, windows: int) -> str:
    async with simulated_pod("full", DEVICES, prefix="bench-pod-") as pod:
        started = time.monotonic()
        async with pod.daemon() as daemon:
            online_after_s = time.monotonic() - started
            await asyncio.sleep(5.0)  # past the start-up transients
            daemon_pct: list[float] = []
            sim_pct: list[float] = []
            for _ in range(windows):
                d0, s0, t0 = cpu_s(daemon.pid), cpu_s(pod.sim.pid), time.monotonic()
                await asyncio.sleep(seconds)
                d1, s1, t1 = cpu_s(daemon.pid), cpu_s(pod.sim.pid), time.monotonic()
                daemon_pct.append(100 * (d1 - d0) / (t1 - t0))
                sim_pct.append(100 * (s1 - s0) / (t1 - t0))
            status: Any = await pod.api("status")
            not_good = sum(
                p["quality"] != "good" for d in status["devices"] for p in d["points"].values()
            )
            points = sum(len(d["points"]) for d in status["devices"])
            rss = rss_mib(daemon.pid)
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
