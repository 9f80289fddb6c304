"""Control loops on the full pod: tick jitter, CPU and RSS with and without them.

One `megapod-sim run --profile full` (1 CDU, 16 PDUs x 48 outlets, 144 BMCs
on ptys) and one mosquitto serve the whole run; megapodd is started on it in
turns with the simulator's config as written (every loop: supply temperature
-> facility valve, the pump zone with its flow, guard and GPU-trim demands,
and 144 fan zones) and with the same config less its [[loop]] and [[zone]]
sections. The turns alternate (ABBA...) so drift in the machine's load falls
on both alike; with --paired two such pods run at once, one daemon with loops
and one without, measured over the same window (the loops swap pods every
round), which cancels the load's drift better on a shared machine.

In each turn, after every device is online and --settle seconds, the daemon's
CPU (/proc, user + system) is measured over --seconds; then the control tick's
own figures are read from the local API (`status`, `pod.tick`): lateness of
the tick's start behind its schedule (the jitter) and the time its duties
took, over the newest 600 ticks (60 s at 100 ms), so a --seconds of 60 covers
the window. RSS at the end of the turn.

Usage: .venv/bin/python -m bench.bench_loops [--rounds 3] [--seconds 60] [--settle 20]
       [--paired] [--nice N]
Writes bench/results/loops.md and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.pod_process import Pod, cpu_s, rss_mib, simulated_pod, without_loops
from bench.results_file import write_results

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 161
JITTER_P99_TARGET_MS = 5.0
CPU_EXTRA_TARGET_PP = 1.5


@dataclass
class Turn:
    loops: bool
    cpu_pct: float
    sim_cpu_pct: float
    rss_mib: float
    tick: dict[str, Any]
    loop_count: int
    loop_modes: dict[str, int]
    load: float
    probe: dict[str, float]  # an idle tick in its own process, same window

    def late(self, key: str) -> float:
        return float(self.tick["lateness"][key])

    def work(self, key: str) -> float:
        return float(self.tick["work"][key])

    def duty(self, name: str, key: str) -> float:
        return float(self.tick["duties"][name][key])


async def _window(
    running: list[tuple[Pod, asyncio.subprocess.Process, bool]], seconds: float
) -> list[Turn]:
    """Measure every running daemon over the same --seconds."""
    before = [(cpu_s(d.pid), cpu_s(pod.sim.pid)) for pod, d, _ in running]
    t0 = time.monotonic()
    probing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.tick_probe", f"{seconds:g}", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await probing.communicate()
    t1 = time.monotonic()
    after = [(cpu_s(d.pid), cpu_s(pod.sim.pid)) for pod, d, _ in running]
    turns = []
    for (pod, daemon, loops), (d0, s0), (d1, s1) in zip(running, before, after, strict=True):
        status = await pod.api("status", device="cdu1")
        states: dict[str, Any] = await pod.api("loops")
        modes: dict[str, int] = {}
        for state in states.values():
            modes[state["mode"]] = modes.get(state["mode"], 0) + 1
        turns.append(
            Turn(
                loops,
                100 * (d1 - d0) / (t1 - t0),
                100 * (s1 - s0) / (t1 - t0),
                rss_mib(daemon.pid),
                status["pod"]["tick"],
                len(states),
                modes,
                os.getloadavg()[0],
                json.loads(out),
            )
        )
    return turns


def _print(name: str, turn: Turn) -> None:
    print(
        f"{name}: cpu {turn.cpu_pct:.1f} %, late p50/p99/max "
        f"{turn.late('p50_ms'):.2f}/{turn.late('p99_ms'):.2f}/"
        f"{turn.late('max_ms'):.2f} ms, work p99 {turn.work('p99_ms'):.2f} ms, "
        f"idle probe p99 {turn.probe['p99_ms']:.2f} ms, "
        f"rss {turn.rss_mib:.0f} MiB, {turn.loop_count} loops {turn.loop_modes}, "
        f"load {turn.load:.2f}",
        flush=True,
    )


async def measure(
    rounds: int, seconds: float, settle_s: float, nice: int = 0, paired: bool = False
) -> list[Turn]:
    """Sequential turns on one pod (ABBA...), or with `paired` two pods at once,
    one daemon with loops and one without, measured over the same window (which
    pod has the loops swaps every round)."""
    wrap = ["nice", "-n", str(nice)] if nice else []
    turns: list[Turn] = []
    async with contextlib.AsyncExitStack() as stack:
        pods = [
            await stack.enter_async_context(
                simulated_pod("full", DEVICES, prefix=f"bench-loops-{n}-")
            )
            for n in range(2 if paired else 1)
        ]
        configs = [
            {True: full, False: without_loops(full)}
            for full in (pod.config.read_text() for pod in pods)
        ]
        for index in range(rounds):
            first = index % 2 == 1  # loops on pod 0 in odd rounds
            plan = [[(0, first), (1, not first)]] if paired else [[(0, first)], [(0, not first)]]
            for together in plan:
                async with contextlib.AsyncExitStack() as daemons:
                    running = []
                    for n, loops in together:
                        name = f"{'loops' if loops else 'noloops'}-{index}-pod{n}"
                        daemon = await daemons.enter_async_context(
                            pods[n].daemon(configs[n][loops], name, wrap=wrap)
                        )
                        running.append((pods[n], daemon, loops))
                    await asyncio.sleep(settle_s)
                    for (n, loops), turn in zip(
                        together, await _window(running, seconds), strict=True
                    ):
                        _print(f"{'loops' if loops else 'noloops'}-{index}-pod{n}", turn)
                        turns.append(turn)
    return turns


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(
    turns: list[Turn], rounds: int, seconds: float, settle_s: float, nice: int, paired: bool
) -> str:
    on = [t for t in turns if t.loops]
    off = [t for t in turns if not t.loops]

    def row(what: str, pick: Any, unit: str, digits: int = 2) -> str:
        a = [pick(t) for t in off]
        b = [pick(t) for t in on]

        def cell(values: list[float]) -> str:
            each = ", ".join(f"{v:.{digits}f}" for v in values)
            return f"**{_med(values):.{digits}f}** {unit} ({each})"

        return f"| {what} | {cell(a)} | {cell(b)} |"

    cpu_extra = _med([t.cpu_pct for t in on]) - _med([t.cpu_pct for t in off])
    p99 = _med([t.late("p99_ms") for t in on])
    worst_p99 = max(t.late("p99_ms") for t in on)
    jitter_ok = "meets" if p99 <= JITTER_P99_TARGET_MS else "MISSES"
    cpu_ok = "meets" if cpu_extra <= CPU_EXTRA_TARGET_PP else "MISSES"
    loads = [t.load for t in turns]
    loops = on[0].loop_count if on else 0
    modes = ", ".join(f"{n} {m}" for m, n in sorted(on[0].loop_modes.items())) if on else ""
    lines = [
        "# Control loops on the full pod: tick jitter, CPU and RSS",
        "",
        f"Command: `.venv/bin/python -m bench.bench_loops --rounds {rounds} "
        f"--seconds {seconds:g} --settle {settle_s:g}"
        + (f" --nice {nice}" if nice else "")
        + (" --paired`" if paired else "`"),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, shared with other work (other sessions' test "
        f"suites and benchmarks): 1-minute load average {min(loads):.2f}-{max(loads):.2f} "
        "at the ends of the turns. The simulator (all 161 devices and the physics) "
        "runs on the same 2 cores. Figures are noisy; each cell gives the median and, "
        "in brackets, every turn.",
        "",
        f"Pod: 1 CDU, 16 PDUs x 48 outlets, 144 BMCs; {DEVICES} devices polled at the "
        "configured rates, MQTT to a private mosquitto. With loops: "
        f"{loops} loops running ({modes}): supply temperature -> facility valve, three "
        "demands on the pump zone (flow from IT power, supply guard, GPU trim) and 144 "
        "fan zones. Without: the same config less its [[loop]] and [[zone]] sections. "
        + (
            f"Paired: two such pods at once (two simulators, two daemons, one mosquitto "
            f"each), one daemon with loops and one without, measured over the same "
            f"window, so the machine's load falls on both alike; {rounds} rounds, the "
            "loops on the other pod each round. "
            if paired
            else f"{rounds} rounds of one turn of each, alternating which goes first. "
        )
        + f"A turn is a fresh daemon, every device online, {settle_s:g} s to settle, "
        f"{seconds:g} s measured."
        + (
            f" The daemon ran at nice {nice} (as `Nice={nice}` in its systemd unit would "
            "run it); the simulator and everything else on the machine at 0."
            if nice
            else ""
        ),
        "",
        "Jitter is the control tick's lateness: how long after its due time each 100 ms "
        "tick started, as the daemon measures it on its event loop's clock "
        "(`pod.tick.lateness` in `megapodctl status --json`, the newest 600 ticks). "
        "Work is the time the tick's duties took in each tick (the loops, the "
        "arbiter, the safety engine's time checks, staleness, heartbeats); it is "
        "taken off the next sleep and does not make the tick late. The idle probe "
        "(bench/tick_probe.py) is the same 100 ms schedule in a process of its own with "
        "nothing else on its loop, run during the same window: what the machine's "
        "scheduling and the epoll timeout's 1 ms rounding add by themselves.",
        "",
        "| measure | without loops | with loops |",
        "|---|---|---|",
        row("tick lateness p50", lambda t: t.late("p50_ms"), "ms", 3),
        row("tick lateness p99", lambda t: t.late("p99_ms"), "ms"),
        row("tick lateness max", lambda t: t.late("max_ms"), "ms"),
        row("idle probe lateness p50", lambda t: t.probe["p50_ms"], "ms", 3),
        row("idle probe lateness p99", lambda t: t.probe["p99_ms"], "ms"),
        row("idle probe lateness max", lambda t: t.probe["max_ms"], "ms"),
        row("tick work p50", lambda t: t.work("p50_ms"), "ms", 3),
        row("tick work p99", lambda t: t.work("p99_ms"), "ms"),
        row("tick work max", lambda t: t.work("max_ms"), "ms"),
        row("`control loops` duty p99", lambda t: t.duty("control loops", "p99_ms"), "ms"),
        row("megapodd CPU", lambda t: t.cpu_pct, "% of a core"),
        row("megapodd RSS", lambda t: t.rss_mib, "MiB", 0),
        row("simulator CPU", lambda t: t.sim_cpu_pct, "% of a core", 1),
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| jitter p99 <= {JITTER_P99_TARGET_MS:g} ms at the 100 ms tick, with loops | "
        f"median {p99:.2f} ms, worst turn {worst_p99:.2f} ms | {jitter_ok} |",
        f"| CPU <= +{CPU_EXTRA_TARGET_PP:g} percentage points over the pod without loops | "
        f"{cpu_extra:+.2f} pp (medians) | {cpu_ok} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--nice", type=int, default=0, help="run the daemon at this nice value")
    parser.add_argument(
        "--paired", action="store_true", help="two pods at once, one with loops, one without"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    turns = asyncio.run(measure(args.rounds, args.seconds, args.settle, args.nice, args.paired))
    text = report(turns, args.rounds, args.seconds, args.settle, args.nice, args.paired)
    if not args.no_write:
        write_results(ROOT / "bench" / "results" / "loops.md", text)
    print(text)


if __name__ == "__main__":
    main()
