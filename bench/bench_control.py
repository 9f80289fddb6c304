"""Closed-loop step response in real time: megapodd's loops on the simulated pod.

`megapod-sim run --profile small --workload 30` and megapodd on it with the
config the simulator writes (its recommended loops), all in real time over the
wire (Modbus to the CDU, SNMP to the PDUs, IPMI to the BMCs). Once the supply
temperature has held within ±0.3 K of its 30 C setpoint for a minute (the
loops have taken over from the CDU's own control), `workload all 90`, --hold
seconds later `workload all 30`, --hold seconds more. Twice, at the same
time on two pods of their own: with the valve loop's feed-forward and without
it (the config switch: the loop's `feed_forward` key taken out).

The trace is the simulator's true state read once a second over its control
socket: the CDU's supply temperature, the hottest GPU, valve and pump. The
figures are those of the simulated-time bench (bench/daemon_plant.py
`measure`): the supply's largest deviation from the setpoint after the step,
the time until it stays within ±0.5 K, the hottest GPU.

Usage: .venv/bin/python -m bench.bench_control [--hold 300] [--plot]
Writes bench/results/control.md (and docs/control-step-realtime.png with --plot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.daemon_plant import StepResult, measure
from bench.pod_process import Pod, simulated_pod, without_feed_forward
from bench.results_file import write_results

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 11  # small pod: 1 CDU, 2 PDUs, 8 BMCs
SETPOINT_C = 30.0
CALM_K, CALM_S, WARMUP_MAX_S = 0.3, 60.0, 900.0
SAMPLE_S = 1.0
PLOT = ROOT / "docs" / "control-step-realtime.png"


@dataclass
class Run:
    feed_forward: bool
    # (monotonic s, supply C, hottest GPU C, valve %, pump %)
    trace: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    warmup_s: float = 0.0
    up_s: float = 0.0
    down_s: float = 0.0
    end_s: float = 0.0
    modes: list[str] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "on" if self.feed_forward else "off"

    def steps(self) -> list[StepResult]:
        rows = [(t, supply, gpu) for t, supply, gpu, _, _ in self.trace]
        return [
            measure(rows, self.up_s, self.down_s, SETPOINT_C, "30 % -> 90 %"),
            measure(rows, self.down_s, self.end_s, SETPOINT_C, "90 % -> 30 %"),
        ]


async def _sample(pod: Pod, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        state = await pod.true_state()
        cooling = state["cooling"]
        gpu = max(max(s["gpu_temps_c"]) for s in state["servers"])
        run.trace.append(
            (time.monotonic(), cooling["supply_temp_c"], gpu, cooling["facility_valve_pct"],
             max(cooling["pump_speed_pct"]))
        )  # fmt: skip
        if len(run.trace) % 60 == 0:
            run.loads.append(os.getloadavg()[0])
        try:
            async with asyncio.timeout(SAMPLE_S):
                await stop.wait()
        except TimeoutError:
            pass


def _calm_for(run: Run) -> float:
    """How long the supply has been within ±CALM_K of the setpoint, up to now."""
    if not run.trace or abs(run.trace[-1][1] - SETPOINT_C) > CALM_K:
        return 0.0
    since = run.trace[-1][0]
    for t, supply, *_ in reversed(run.trace):
        if abs(supply - SETPOINT_C) > CALM_K:
            break
        since = t
    return run.trace[-1][0] - since


async def _run(feed_forward: bool, hold_s: float) -> Run:
    run = Run(feed_forward)
    prefix = f"bench-control-ff{run.label}-"
    async with simulated_pod("small", DEVICES, ["--workload", "30"], prefix=prefix) as pod:
        config = pod.config.read_text()
        if not feed_forward:
            config = without_feed_forward(config)
        stop = asyncio.Event()
        async with pod.daemon(config, f"megapodd-ff{run.label}"):
            sampler = asyncio.create_task(_sample(pod, run, stop))
            started = time.monotonic()
            for _ in range(int(WARMUP_MAX_S / 5.0)):
                if _calm_for(run) >= CALM_S:
                    break
                await asyncio.sleep(5.0)
            run.warmup_s = time.monotonic() - started
            run.up_s = await pod.inject_at("workload", "all", "90")
            await asyncio.sleep(hold_s)
            run.down_s = await pod.inject_at("workload", "all", "30")
            await asyncio.sleep(hold_s)
            run.end_s = time.monotonic()
            loops: Any = await pod.api("loops")
            run.modes = sorted({state["mode"] for state in loops.values()})
            stop.set()
            await sampler
        (pod.work / "trace.json").write_text(json.dumps(run.trace))
        print(f"ff {run.label}: trace in {pod.work / 'trace.json'}", flush=True)
    return run


def plot(runs: list[Run], out: Path) -> None:
    import matplotlib  # only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for run, colour in zip(runs, ("tab:blue", "tab:red"), strict=False):
        rows = [r for r in run.trace if r[0] >= run.up_s - 60.0]
        minutes = [(r[0] - run.up_s) / 60.0 for r in rows]
        label = f"feed-forward {run.label}"
        top.plot(minutes, [r[1] for r in rows], color=colour, label=f"supply, {label}")
        middle.plot(minutes, [r[3] for r in rows], color=colour, label=f"valve, {label}")
        middle.plot(minutes, [r[4] for r in rows], color=colour, linestyle="--",
                    label=f"pump, {label}")  # fmt: skip
        bottom.plot(minutes, [r[2] for r in rows], color=colour, label=f"hottest GPU, {label}")
    for axis in (top, middle, bottom):
        for run in runs[:1]:
            axis.axvline((run.down_s - run.up_s) / 60.0, color="grey", linewidth=0.8)
        axis.axvline(0.0, color="grey", linewidth=0.8)
        axis.grid(visible=True, alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
    top.axhspan(SETPOINT_C - 0.5, SETPOINT_C + 0.5, color="green", alpha=0.1)
    top.set_title(
        "Closed loop, real time: workload 30 % -> 90 % at t = 0 and back "
        "(small pod, megapodd on megapod-sim)"
    )
    top.set_ylabel("CDU supply (C)")
    middle.set_ylabel("valve, pump (%)")
    bottom.set_ylabel("GPU (C)")
    bottom.set_xlabel("time after the step up (min)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def report(runs: list[Run], hold_s: float, plotted: bool) -> str:
    rows = []
    for run in runs:
        for step in run.steps():
            ok = (
                abs(step.max_deviation_k) <= 1.5
                and step.settled_after_s <= 120.0
                and step.hottest_gpu_c < 80.0
            )
            rows.append(
                f"| {run.label} | {step.label} | {step.max_deviation_k:+.2f} | "
                f"{step.settled_after_s:.0f} | {step.hottest_gpu_c:.1f} | "
                f"{'yes' if ok else 'no'} |"
            )
    loads = [load for run in runs for load in run.loads]
    on = next((r for r in runs if r.feed_forward), None)
    off = next((r for r in runs if not r.feed_forward), None)
    verdict = ""
    if on is not None and off is not None:
        worse = all(
            abs(b.max_deviation_k) > abs(a.max_deviation_k)
            and b.settled_after_s > a.settled_after_s
            for a, b in zip(on.steps(), off.steps(), strict=True)
        )
        verdict = (
            "Without feed-forward: "
            + ("measurably worse on both steps (larger deviation, later settling)."
               if worse else "NOT worse on every step (see the table).")
        )  # fmt: skip
    lines = [
        "# Closed-loop step response in real time: megapodd on the simulated pod",
        "",
        f"Command: `.venv/bin/python -m bench.bench_control --hold {hold_s:g}"
        + (" --plot`" if plotted else "`"),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, shared with other work (other sessions' test "
        "suites and benchmarks); the two pods (feed-forward on and off) ran at the "
        "same time, each a megapod-sim, a megapodd and a mosquitto of its own. "
        + (
            f"1-minute load average {min(loads):.2f}-{max(loads):.2f} during the run. "
            if loads
            else ""
        )
        + "The loops' timing is real time, so a loaded machine shows in the figures; "
        "they are noisy, one run each.",
        "",
        "Pod: small (2 racks x 4 servers, 2 PDUs, 1 CDU), facility water 24 C, the "
        "recommended loops of `megapod-sim run --write-config` (docs/control.md). "
        "Each run: workload 30 % until the supply has held within ±0.3 K of 30 C for "
        f"60 s (warm-up: {', '.join(f'ff {r.label} {r.warmup_s:.0f} s' for r in runs)}), "
        f"then `workload all 90`, {hold_s:g} s later `workload all 30`, {hold_s:g} s "
        "more. Trace: the simulator's true state once a second (CDU supply, hottest "
        "GPU, valve, pump). Loop modes at the end: "
        + "; ".join(f"ff {r.label}: {', '.join(r.modes)}" for r in runs)
        + ".",
        "",
        "| feed-forward | step | supply max dev K | settled ±0.5 K after s | "
        "hottest GPU C | targets met |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Targets: deviation <= 1.5 K, settled <= 120 s, hottest GPU < 80 C (with "
        "feed-forward); without it measurably worse. " + verdict,
        "",
        "The same scenario in simulated time (the daemon's loop engine on the "
        "physics, no wire): bench/results/control-plant.md and "
        "docs/control-step-response.png.",
        "",
    ]
    if plotted:
        lines += [f"Plot: {PLOT.relative_to(ROOT)}", ""]
    return "\n".join(lines)


async def measure_both(hold_s: float) -> list[Run]:
    return list(await asyncio.gather(_run(True, hold_s), _run(False, hold_s)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", type=float, default=300.0, help="seconds at each workload")
    parser.add_argument("--plot", action="store_true", help=f"also write {PLOT.name}")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    runs = asyncio.run(measure_both(args.hold))
    if args.plot:
        plot(runs, PLOT)
    text = report(runs, args.hold, args.plot)
    if not args.no_write:
        write_results(ROOT / "bench" / "results" / "control.md", text)
    print(text)


if __name__ == "__main__":
    main()
