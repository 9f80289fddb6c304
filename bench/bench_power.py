"""The power budget on the full pod: a 10-minute random workload walk with the
budget at 75 % of peak, through the daemon's own PowerController, arbiter and
supervisors against the simulator's physics, in simulated time
(bench/power_plant.py).

    .venv/bin/python -m bench.bench_power [--write] [--plot] [--seed N]

Every 5 s each rack's workload level takes a random step (normal, sigma 8
points) and each server's own workload walks around its rack's level (sigma 8
points, pulled back by a fifth each step), held within 20-100 %.

Reported: time above the budget (s and %), the largest excursion (W, and the
longest stretch above), breaker trips, the IT energy the pod delivered against
a static per-server cap that gives the same guarantee (every server at
budget / servers, and at its phase's share), and what one controller tick
costs on the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import looptime
import structlog

from bench.power_plant import STEP_S, PowerPlant, power_plant
from megapodd.power.budget import NOMINAL_V
from sim_devices.physics import constants as k
from sim_devices.profiles import PROFILES, Profile

ROOT = Path(__file__).resolve().parents[1]
NOTES = "## Reading it"
FULL = PROFILES[Profile.FULL]
BUDGET_SHARE = 0.75
WARMUP_S = 30.0
WALK_S = 600.0
WALK_EVERY_S = 5.0
WALK_SIGMA_PCT = 8.0  # each rack's level
SERVER_SIGMA_PCT = 8.0  # each server around its rack's level
WALK_RANGE_PCT = (20.0, 100.0)
START_PCT = 75.0  # demand wanders around the budget (75 % of peak)
RELEASE_S = 60.0


@dataclass(frozen=True, slots=True)
class Result:
    oversubscribe: float
    cap_delay_s: float
    release_s: float
    budget_w: float
    above_s: float
    above_pct: float
    above_2pct_s: float
    worst_w: float
    longest_above_s: float
    trips: int
    energy_kwh: float
    static_kwh: float
    demand_kwh: float
    max_caps: int
    phase_peak_pct: float  # of the breaker rating
    tick_ms: tuple[float, float]  # median, p99 of one controller tick (CPU on the loop)
    trace: tuple[tuple[float, float, float, int], ...]


def static_cap_w(pod: PowerPlant, budget_w: float) -> float:
    """The one per-server cap that guarantees the budget and every phase limit."""
    layout = pod.plant.layout
    per_phase: dict[tuple[str, int], int] = {}
    for server in layout.server_ids():
        key = pod.plant.phase_of(server)
        per_phase[key] = per_phase.get(key, 0) + 1
    limit_w = min(
        pod.controller.budget.phase_limits_a[key] * NOMINAL_V / n for key, n in per_phase.items()
    )
    return min(budget_w / layout.server_count, limit_w)


async def walk(oversubscribe: float, seed: int, cap_delay_s: float, release_s: float) -> Result:
    peak_w = FULL.server_count * k.SERVER_PEAK_W
    budget_w = BUDGET_SHARE * peak_w
    rng = random.Random(seed)
    async with power_plant(
        FULL, START_PCT, budget_w, oversubscribe, release_s, seed, cap_delay_s
    ) as pod:
        cap_w = static_cap_w(pod, budget_w)
        ticks: list[float] = []
        tick = pod.controller.tick

        def timed_tick() -> None:
            started = time.perf_counter()
            tick()
            ticks.append(time.perf_counter() - started)

        pod.controller.tick = timed_tick  # type: ignore[method-assign]
        await asyncio.sleep(WARMUP_S)
        loop = asyncio.get_running_loop()
        start = loop.time()
        levels = dict.fromkeys(range(1, FULL.racks + 1), START_PCT)
        model = pod.plant.model
        offsets = dict.fromkeys(model.server_ids, 0.0)
        static_j = demand_j = 0.0
        low, high = WALK_RANGE_PCT
        while loop.time() - start < WALK_S:
            for rack in levels:
                levels[rack] = min(high, max(low, levels[rack] + rng.gauss(0, WALK_SIGMA_PCT)))
            for sid in offsets:
                # Each server's own job: a walk around its rack's level, pulled back to it.
                offsets[sid] = 0.8 * offsets[sid] + rng.gauss(0, SERVER_SIGMA_PCT)
                pct = min(high, max(low, levels[sid.rack] + offsets[sid]))
                model.servers[sid].workload_pct = pct
            for _ in range(round(WALK_EVERY_S / STEP_S)):
                await asyncio.sleep(STEP_S)
                demands = [model.demand_power_w(s) for s in model.server_ids]
                static_j += sum(min(d, cap_w) for d in demands) * STEP_S
                demand_j += sum(demands) * STEP_S
        end = loop.time()
        trace = [row for row in pod.plant.trace if start <= row[0] < end]
        breakers = pod.plant.breaker_a
        peak_pct = max(
            100.0 * amps / breakers[pdu] for (pdu, _p), amps in pod.plant.phase_peak_a.items()
        )
        trips = len(pod.plant.trips)
    above = [row for row in trace if row[1] > budget_w]
    longest = run = 0.0
    for _t, watts, _d, _c in trace:
        run = run + STEP_S if watts > budget_w else 0.0
        longest = max(longest, run)
    ms = sorted(t * 1000.0 for t in ticks)
    return Result(
        oversubscribe,
        cap_delay_s,
        release_s,
        budget_w,
        len(above) * STEP_S,
        100.0 * len(above) / len(trace),
        sum(STEP_S for row in trace if row[1] > 1.02 * budget_w),
        max(0.0, max(row[1] for row in trace) - budget_w),
        longest,
        trips,
        sum(row[1] for row in trace) * STEP_S / 3.6e6,
        static_j / 3.6e6,
        demand_j / 3.6e6,
        max(row[3] for row in trace),
        peak_pct,
        (statistics.median(ms), ms[int(0.99 * (len(ms) - 1))]),
        tuple(trace),
    )


def table(results: list[Result]) -> list[str]:
    lines = [
        "| breakers, feed | BMC cap response | release_s | budget | time above budget | above +2 % "
        "| largest excursion | breaker trips | phase peak (of rating) | IT energy, dynamic "
        "| static cap, same guarantee | uncapped demand | most servers capped "
        "| controller tick median / p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        gain = 100.0 * (r.energy_kwh / r.static_kwh - 1.0)
        lines.append(
            f"| peak / {r.oversubscribe:g} | {_response(r.cap_delay_s)} | {r.release_s:g} s "
            f"| {r.budget_w / 1000:.1f} kW (75 % of peak) "
            f"| {r.above_s:.1f} s ({r.above_pct:.2f} %) | {r.above_2pct_s:.1f} s "
            f"| {r.worst_w / 1000:.2f} kW ({100 * r.worst_w / r.budget_w:.1f} %), "
            f"longest {r.longest_above_s:.2f} s | {r.trips} | {r.phase_peak_pct:.0f} % "
            f"| {r.energy_kwh:.2f} kWh | {r.static_kwh:.2f} kWh ({gain:+.1f} % for dynamic) "
            f"| {r.demand_kwh:.2f} kWh | {r.max_caps} of {FULL.server_count} "
            f"| {r.tick_ms[0]:.2f} / {r.tick_ms[1]:.2f} ms |"
        )
    return lines


def _response(delay_s: float) -> str:
    if delay_s == 0:
        return "the simulator's: 0.4 s lag, 99 % in 2 s"
    return f"{delay_s:g} s before it acts, then the lag"


def plot(results: list[Result], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results) + 1, 1, figsize=(10, 3.0 * len(results) + 2),
                             sharex=True,
                             gridspec_kw={"height_ratios": [3] * len(results) + [1.4]})  # fmt: skip
    for ax, result in zip(axes, results, strict=False):
        t0 = result.trace[0][0]
        times = [(row[0] - t0) / 60.0 for row in result.trace]
        ax.plot(times, [row[2] / 1000 for row in result.trace], color="0.6", lw=0.8,
                label="demand (uncapped)")  # fmt: skip
        ax.plot(times, [row[1] / 1000 for row in result.trace], color="C0", lw=1.0,
                label="pod power (with the budget)")  # fmt: skip
        ax.axhline(result.budget_w / 1000, color="C3", ls="--", lw=1.0,
                   label="budget (75 % of peak)")  # fmt: skip
        ax.set_ylabel("kW")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_title(
            f"breakers and feed for peak / {result.oversubscribe:g}: above budget "
            f"{result.above_pct:.2f} % of the time, largest excursion "
            f"{result.worst_w / 1000:.1f} kW, {result.trips} breaker trips, phase peak "
            f"{result.phase_peak_pct:.0f} % of its rating",
            fontsize=9,
        )
    caps = axes[-1]
    for n, result in enumerate(results):
        t0 = result.trace[0][0]
        caps.plot([(row[0] - t0) / 60.0 for row in result.trace],
                  [row[3] for row in result.trace], color=f"C{n + 1}", lw=1.0,
                  label=f"peak / {result.oversubscribe:g}")  # fmt: skip
    caps.set_ylabel("servers capped")
    caps.set_xlabel("minutes")
    caps.legend(loc="upper right", fontsize=8)
    fig.suptitle("Full pod (144 servers), 10-minute random workload walk", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def run(
    oversubscribe: float, seed: int, cap_delay_s: float = 0.0, release_s: float = RELEASE_S
) -> Result:
    loop = looptime.new_event_loop()
    try:
        return loop.run_until_complete(walk(oversubscribe, seed, cap_delay_s, release_s))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write bench/results/power.md")
    parser.add_argument("--plot", action="store_true", help="write docs/power-budget-walk.png")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    # The daemon's info logs (every cap it sets) would drown the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.process_time()
    wall = time.monotonic()
    results = [
        run(1.0, args.seed),
        run(1.3, args.seed),
        run(1.3, args.seed, cap_delay_s=1.0),
        run(1.0, args.seed, release_s=15.0),
        run(1.3, args.seed, release_s=15.0),
    ]
    cpu_s = time.process_time() - started
    report = "\n".join(table(results)) + (
        f"\n\nSimulated time (looptime), seed {args.seed}: {WALK_S / 60:.0f} min per row after "
        f"{WARMUP_S:.0f} s; {cpu_s:.0f} s of CPU, {time.monotonic() - wall:.0f} s wall "
        "for the five. "
        "Command: `.venv/bin/python -m bench.bench_power --write --plot`\n"
    )
    print(report)
    if args.write:
        path = ROOT / "bench" / "results" / "power.md"
        # The notes written by hand after the table are kept.
        old = path.read_text() if path.exists() else ""
        notes = old[old.index(NOTES) :] if NOTES in old else ""
        path.write_text(
            "# Power budget: full pod, random workload walk, budget 75 % of peak\n\n"
            + report
            + ("\n" + notes if notes else "")
        )
    if args.plot:
        plot(results[:2], ROOT / "docs" / "power-budget-walk.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
