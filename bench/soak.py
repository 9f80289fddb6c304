"""Soak: the small pod for a long while under random workload steps, no faults.

`megapod-sim run --profile small` and megapodd on it with the config the
simulator writes (the default rule set and the recommended loops, real delays),
mosquitto between. Every --min-gap..--max-gap seconds (seeded random) the
workload of the whole pod or of one rack steps to a random 10-100 %. No fault
is injected, so every interlock trip is a false positive: the soak passes only
if none trips. Events are counted by type and severity as the fleet sees them
(the `events` topic over MQTT, QoS 1); the simulator's true state is sampled
every 5 s for the supply temperature and the hottest GPU.

Usage: .venv/bin/python -m bench.soak [--minutes 12] [--seed 1]
Writes bench/results/soak.md and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from bench.pod_process import Pod, simulated_pod
from bench.results_file import write_results

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 11
POD_ID = "pod-soak"
RACKS = 2


def workload_steps(
    seed: int, duration_s: float, min_gap_s: float, max_gap_s: float, racks: int
) -> list[tuple[float, str, int]]:
    """(time after start, "all" or "rN", pct): the soak's random schedule."""
    rng = random.Random(seed)
    steps: list[tuple[float, str, int]] = []
    at_s = rng.uniform(min_gap_s, max_gap_s)
    while at_s < duration_s:
        target = rng.choice(["all"] + [f"r{n}" for n in range(1, racks + 1)])
        steps.append((at_s, target, 5 * rng.randint(2, 20)))
        at_s += rng.uniform(min_gap_s, max_gap_s)
    return steps


@dataclass
class Soak:
    steps: list[tuple[float, str, int]]
    events: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    trips: list[dict[str, Any]] = field(default_factory=list)
    supply: list[float] = field(default_factory=list)
    gpu: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    interlocks: dict[str, str] = field(default_factory=dict)
    loop_modes: collections.Counter[str] = field(default_factory=collections.Counter)
    tick: dict[str, Any] = field(default_factory=dict)
    ran_s: float = 0.0


async def _count_events(port: int, soak: Soak, ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="soak-counter") as client:
        await client.subscribe(f"megapod/v1/{POD_ID}/events", qos=1)
        ready.set()
        async for message in client.messages:
            if not isinstance(message.payload, bytes):
                continue
            event = json.loads(message.payload)
            soak.events[(event["type"], event["severity"])] += 1
            if event["type"] == "interlock_tripped":
                soak.trips.append(event)


async def _sample(pod: Pod, soak: Soak, stop: asyncio.Event) -> None:
    while not stop.is_set():
        state = await pod.true_state()
        soak.supply.append(float(state["cooling"]["supply_temp_c"]))
        soak.gpu.append(max(max(s["gpu_temps_c"]) for s in state["servers"]))
        soak.loads.append(os.getloadavg()[0])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await stop.wait()


async def run(minutes: float, seed: int, min_gap_s: float, max_gap_s: float) -> Soak:
    duration_s = minutes * 60.0
    soak = Soak(workload_steps(seed, duration_s, min_gap_s, max_gap_s, RACKS))
    extra = ["--pod-id", POD_ID, "--workload", "50"]
    async with simulated_pod("small", DEVICES, extra, prefix="bench-soak-") as pod:
        listening = asyncio.Event()
        counter = asyncio.create_task(_count_events(pod.mqtt_port, soak, listening))
        await listening.wait()
        async with pod.daemon(None, "megapodd"):
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample(pod, soak, stop))
            started = time.monotonic()
            for at_s, target, pct in soak.steps:
                await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
                await pod.inject_at("workload", target, str(pct))
                print(f"{at_s:6.0f} s: workload {target} {pct} %", flush=True)
            await asyncio.sleep(max(0.0, started + duration_s - time.monotonic()))
            soak.ran_s = time.monotonic() - started
            interlocks: Any = await pod.api("interlocks")
            soak.interlocks = {rule: str(s["state"]) for rule, s in interlocks.items()}
            loops: Any = await pod.api("loops")
            soak.loop_modes.update(str(s["mode"]) for s in loops.values())
            status: Any = await pod.api("status", device="cdu1")
            soak.tick = status["pod"]["tick"]
            stop.set()
            await sampler
        await asyncio.sleep(2.0)  # the daemon's last events reach the counter
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    return soak


def report(soak: Soak, minutes: float, seed: int, min_gap_s: float, max_gap_s: float) -> str:
    states = collections.Counter(soak.interlocks.values())
    passed = not soak.trips and set(states) <= {"normal"}
    rows = [
        f"| {kind} | {severity} | {count} |"
        for (kind, severity), count in sorted(soak.events.items(), key=lambda kv: -kv[1])
    ]
    late = soak.tick.get("lateness", {})
    lines = [
        "# Soak: the small pod under random workload steps, no faults",
        "",
        f"Command: `.venv/bin/python -m bench.soak --minutes {minutes:g} --seed {seed} "
        f"--min-gap {min_gap_s:g} --max-gap {max_gap_s:g}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, shared with other work (other sessions' tests and "
        f"benchmarks): 1-minute load average {min(soak.loads):.2f}-{max(soak.loads):.2f} "
        "during the soak.",
        "",
        f"Pod: small (2 racks x 4 servers, 2 PDUs, 1 CDU); megapodd with the config "
        "`megapod-sim run --write-config` writes: the default rule set with its real "
        "delays and the recommended loops. "
        f"{soak.ran_s / 60:.1f} minutes in real time, {len(soak.steps)} workload steps "
        f"(whole pod or one rack to a random 10-100 %, every {min_gap_s:g}-{max_gap_s:g} s, "
        f"seed {seed}); no fault injected.",
        "",
        "| result | value |",
        "|---|---|",
        f"| interlock trips (false positives) | **{len(soak.trips)}** |",
        "| interlock states at the end | "
        + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        + " |",
        "| loop modes at the end | "
        + ", ".join(f"{n} {m}" for m, n in sorted(soak.loop_modes.items()))
        + " |",
        f"| CDU supply, true state every 5 s | {min(soak.supply):.2f}-{max(soak.supply):.2f} C |",
        f"| hottest GPU | {max(soak.gpu):.1f} C |",
        f"| events seen over MQTT | {sum(soak.events.values())} |",
        f"| control tick lateness at the end (newest 600 ticks) | p50 {late.get('p50_ms', 0):g} "
        f"ms, p99 {late.get('p99_ms', 0):g} ms, max {late.get('max_ms', 0):g} ms |",
        f"| verdict | {'PASS: no trip' if passed else 'FAIL'} |",
        "",
        "Events by type (the `events` topic, from before the daemon's start to its stop):",
        "",
        "| type | severity | count |",
        "|---|---|---|",
        *rows,
        "",
    ]
    if soak.trips:
        lines += ["Trips:", ""] + [f"- {t['message']}" for t in soak.trips] + [""]
    lines += ["Steps: " + ", ".join(f"{t:.0f} s {w} {p} %" for t, w, p in soak.steps), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-gap", type=float, default=20.0)
    parser.add_argument("--max-gap", type=float, default=90.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    soak = asyncio.run(run(args.minutes, args.seed, args.min_gap, args.max_gap))
    text = report(soak, args.minutes, args.seed, args.min_gap, args.max_gap)
    if not args.no_write:
        write_results(ROOT / "bench" / "results" / "soak.md", text)
    print(text)


if __name__ == "__main__":
    main()
