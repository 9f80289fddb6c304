"""Plant study: the recommended CDU loop tuning against the simulator's physics, simulated time.

The loops and the plant are in bench/control_plant.py (what the daemon samples
and writes, at the wire's resolution). This script plays issue 9's scenario,
`workload all 30 -> 90` and back, each held 10 minutes, with the valve's
feed-forward on and off, on the small and the full pod; then the same
tuning under what the simulator lacks (sensor delay and noise, another plant
time constant, a mis-calibrated feed-forward), alternatives that were
rejected, and a facility-water excursion that saturates the valve.

Deterministic (seed 0, no wall clock in the loops); about 45 s of CPU.

Usage: .venv/bin/python -m bench.bench_control_plant [--write] [--plot]
  --write  also write bench/results/control-plant.md
  --plot   also write docs/control-step-response.png
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.control_plant import (
    NOMINAL,
    RECOMMENDED_PUMP,
    RECOMMENDED_SUPPLY,
    SEED,
    TICK_S,
    Perturbation,
    Phase,
    PumpLoop,
    Run,
    SupplyLoop,
    WindowResult,
    measure,
    run,
    workload_steps,
)
from megapodd.control.pid import FailsafeReturn
from sim_devices.profiles import PROFILES, PodLayout, Profile

ROOT = Path(__file__).resolve().parent.parent
TARGET_DEV_K, TARGET_SETTLE_S, TARGET_GPU_C = 1.5, 120.0, 80.0
SMALL = PROFILES[Profile.SMALL]

PERTURBATIONS = [
    NOMINAL,
    Perturbation("sensor 10 s late", supply_delay_s=10.0),
    Perturbation("sensor 20 s late", supply_delay_s=20.0),
    Perturbation("sensor noise 0.03 K", supply_noise_k=0.03),
    Perturbation("plant tau 30 s", supply_tau_scale=0.5),
    Perturbation("plant tau 120 s", supply_tau_scale=2.0),
    Perturbation("FF gain -30 %", ff_gain_scale=0.7),
    Perturbation("FF gain +30 %", ff_gain_scale=1.3),
]


def meets(r: WindowResult) -> bool:
    return (abs(r.max_dev_k) <= TARGET_DEV_K and r.settle_s is not None
            and r.settle_s <= TARGET_SETTLE_S and r.peak_gpu_c < TARGET_GPU_C)  # fmt: skip


def _settle(r: WindowResult) -> str:
    return "never" if r.settle_s is None else f"{r.settle_s:.0f}"


def step_run(supply: SupplyLoop, pump: PumpLoop = RECOMMENDED_PUMP, *,
             layout: PodLayout = SMALL, perturbation: Perturbation = NOMINAL,
             ) -> tuple[Run, list[WindowResult]]:  # fmt: skip
    result = run(layout, supply, pump, workload_steps(), perturbation)
    return result, [measure(result, w, supply.setpoint_c) for w in result.windows]


def main_table() -> tuple[list[str], dict[bool, Run]]:
    lines = [
        "| pod | valve FF | step | supply max dev K | settled ±0.5 K after s | hottest GPU C "
        "| valve % | pump % | targets met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    small_runs: dict[bool, Run] = {}
    for profile in (Profile.SMALL, Profile.FULL):
        for ff in (True, False):
            result, rows = step_run(replace(RECOMMENDED_SUPPLY, ff_enabled=ff),
                                    layout=PROFILES[profile])  # fmt: skip
            if profile is Profile.SMALL:
                small_runs[ff] = result
            for r in rows:
                valve = f"{r.valve_pct[0]:.1f}-{r.valve_pct[1]:.1f}"
                pump = f"{r.pump_pct[0]:.1f}-{r.pump_pct[1]:.1f}"
                lines.append(
                    f"| {profile.value} | {'on' if ff else 'off'} | {r.label} | {r.max_dev_k:+.2f} "
                    f"| {_settle(r)} | {r.peak_gpu_c:.1f} | {valve} | {pump} "
                    f"| {'yes' if meets(r) else 'no'} |"
                )
    return lines, small_runs


def _summary(rows: list[WindowResult]) -> str:
    worst = max(rows, key=lambda r: abs(r.max_dev_k))
    settles = [r.settle_s for r in rows]
    settle = "never" if None in settles else f"{max(s for s in settles if s is not None):.0f}"
    moves = max(r.valve_moves_per_min for r in rows)
    return f"{worst.max_dev_k:+.2f} | {settle} | {moves:.1f}"


def robustness_table() -> list[str]:
    lines = [
        "| small pod, recommended tuning | FF on: worst dev K / settled s / valve moves per min "
        "| FF off: same |",
        "|---|---|---|",
    ]
    for pert in PERTURBATIONS:
        cells = []
        for ff in (True, False):
            if not ff and pert.ff_gain_scale != 1.0:
                cells.append("-")
                continue
            _, rows = step_run(replace(RECOMMENDED_SUPPLY, ff_enabled=ff), perturbation=pert)
            cells.append(_summary(rows).replace(" | ", " / "))
        lines.append(f"| {pert.name} | {cells[0]} | {cells[1]} |")
    return lines


def alternatives_table() -> list[str]:
    pid = RECOMMENDED_SUPPLY.pid
    alternatives: list[tuple[str, SupplyLoop, PumpLoop]] = [
        ("recommended", RECOMMENDED_SUPPLY, RECOMMENDED_PUMP),
        ("aggressive PI kp 20 ki 1.0, FF off",
         replace(RECOMMENDED_SUPPLY, ff_enabled=False, pid=replace(pid, kp=20.0, ki=1.0)),
         RECOMMENDED_PUMP),
        ("PID kd 100 %·s/K, D filter 10 s, no PV filter",
         replace(RECOMMENDED_SUPPLY, pv_filter_tau_s=0.0, write_deadband_pct=0.0,
                 pid=replace(pid, kd=100.0, d_filter_tau_s=10.0)), RECOMMENDED_PUMP),
        ("no PV filter, no deadband",
         replace(RECOMMENDED_SUPPLY, pv_filter_tau_s=0.0, write_deadband_pct=0.0),
         RECOMMENDED_PUMP),
        ("valve slew 2 %/s", replace(RECOMMENDED_SUPPLY, pid=replace(
            pid, slew_up_per_s=2.0, slew_down_per_s=2.0)), RECOMMENDED_PUMP),
        ("valve slew 1 %/s", replace(RECOMMENDED_SUPPLY, pid=replace(
            pid, slew_up_per_s=1.0, slew_down_per_s=1.0)), RECOMMENDED_PUMP),
        ("pump slew 5 %/s", RECOMMENDED_SUPPLY,
         replace(RECOMMENDED_PUMP, slew_up_pct_per_s=5.0, slew_down_pct_per_s=5.0)),
        ("pump slew 10 %/s up, 2 %/s down", RECOMMENDED_SUPPLY,
         replace(RECOMMENDED_PUMP, slew_up_pct_per_s=10.0, slew_down_pct_per_s=2.0)),
        ("thermal trim tracks fully each update (velocity form)", RECOMMENDED_SUPPLY,
         replace(RECOMMENDED_PUMP, thermal=replace(RECOMMENDED_PUMP.thermal, tracking_tau_s=0.0))),
    ]  # fmt: skip
    lines = [
        "| small pod | nominal: worst dev K / settled s / valve moves per min / hottest GPU C "
        "/ pump max % | sensor 20 s late, noise 0.03 K: worst dev K / settled s / moves per min |",
        "|---|---|---|",
    ]
    rough = Perturbation("late and noisy", supply_delay_s=20.0, supply_noise_k=0.03)
    for name, supply, pump in alternatives:
        _, rows = step_run(supply, pump)
        gpu = max(r.peak_gpu_c for r in rows)
        pump_max = max(r.pump_pct[1] for r in rows)
        nominal = _summary(rows).replace(" | ", " / ") + f" / {gpu:.1f} / {pump_max:.1f}"
        _, rows = step_run(supply, pump, perturbation=rough)
        lines.append(f"| {name} | {nominal} | {_summary(rows).replace(' | ', ' / ')} |")
    return lines


def facility_table() -> list[str]:
    """Facility water 24 -> 40 C for 20 min at 90 % load: the valve saturates."""
    phases = [
        Phase(600.0, workload_pct=90.0, measured=False),
        Phase(1_200.0, facility_supply_c=40.0),
        Phase(900.0, facility_supply_c=24.0),
    ]
    result = run(SMALL, RECOMMENDED_SUPPLY, RECOMMENDED_PUMP, phases)
    hot, back = (measure(result, w, RECOMMENDED_SUPPLY.setpoint_c) for w in result.windows)
    tr = result.trace
    hot_end = result.windows[0].end - 1
    leave = next((i for i in range(result.windows[1].start, result.windows[1].end)
                  if tr.valve_pct[i] < 99.95), None)  # fmt: skip
    crossed = next(i for i in range(result.windows[1].start, result.windows[1].end)
                   if tr.supply_c[i] <= RECOMMENDED_SUPPLY.setpoint_c)  # fmt: skip
    left_s = "never" if leave is None else f"{(leave - crossed) * TICK_S:+.0f}"
    return [
        "| facility water 24 -> 40 C, 90 % load | value |",
        "|---|---|",
        f"| supply peak C (setpoint 30) | {hot.peak_supply_c:.2f} |",
        f"| valve max % | {hot.valve_pct[1]:.1f} |",
        "| valve integrator + FF at the end of the excursion % "
        f"| {tr.valve_i_plus_ff_pct[hot_end]:.1f} |",
        f"| pump max % (thermal trim) | {hot.pump_pct[1]:.1f} |",
        f"| hottest GPU peak C (trim holds 75) | {hot.peak_gpu_c:.1f} |",
        "| after facility 24 C: valve leaves 100 % this long after supply crosses 30 C, s "
        f"| {left_s} |",
        f"| after facility 24 C: supply undershoot K / within ±0.5 K of 30 C after s "
        f"| {back.min_dev_k:+.2f} / {_settle(back)} |",
    ]  # fmt: skip


def failsafe_table() -> list[str]:
    """The supply sensor reads out of range, then good again: failsafe and the return."""
    lines = [
        "| supply sensor bad, then good | return | valve max % | supply min C "
        "| back within ±0.5 K of 30 C after s (from the first good reading) |",
        "|---|---|---|---|---|",
    ]
    for load in (30.0, 90.0):
        for bad_s in (10.0, 120.0):
            for mode in (FailsafeReturn.RESTORE, FailsafeReturn.BUMPLESS):
                pid = replace(RECOMMENDED_SUPPLY.pid, failsafe_return=mode)
                phases = [
                    Phase(600.0, workload_pct=load, measured=False),
                    Phase(bad_s, supply_sensor_bad=True),
                    Phase(600.0, workload_pct=load),
                ]
                result = run(SMALL, replace(RECOMMENDED_SUPPLY, pid=pid), RECOMMENDED_PUMP, phases)
                bad, back = (measure(result, w, RECOMMENDED_SUPPLY.setpoint_c)
                             for w in result.windows)  # fmt: skip
                lines.append(
                    f"| {load:g} % load, bad for {bad_s:g} s | {mode.value} "
                    f"| {max(bad.valve_pct[1], back.valve_pct[1]):.1f} "
                    f"| {min(bad.min_dev_k, back.min_dev_k) + 30.0:.2f} | {_settle(back)} |"
                )
    return lines


def plot(runs: dict[bool, Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    start = runs[True].windows[0].start
    for ff, result in sorted(runs.items(), reverse=True):
        tr = result.trace
        t = [(x - tr.t_s[start]) / 60.0 for x in tr.t_s[start:]]
        label = "feed-forward on" if ff else "feed-forward off"
        axes[0].plot(t, tr.supply_c[start:], label=label)
        axes[1].plot(t, tr.valve_pct[start:], label=label)
        axes[2].plot(t, tr.pump_pct[start:], label=label)
        axes[3].plot(t, tr.gpu_c[start:], label=label)
    axes[0].axhspan(29.5, 30.5, color="0.9")
    for ax, name in zip(axes, ("CDU supply C", "facility valve %", "pump speed %",
                               "hottest GPU C"), strict=True):  # fmt: skip
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    axes[-1].set_xlabel("minutes (workload 30 -> 90 % at 0, 90 -> 30 % at 10)")
    fig.suptitle("Small pod, closed loop in simulated time (bench/bench_control_plant.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write bench/results/control-plant.md")
    parser.add_argument("--plot", action="store_true", help="write docs/control-step-response.png")
    args = parser.parse_args(argv)
    started = time.process_time()
    main_lines, small_runs = main_table()
    sections = [
        "## Step response: workload 30 -> 90 % and back, 10 min each",
        *main_lines,
        "",
        "## Robustness of the recommended tuning (what the simulator lacks)",
        *robustness_table(),
        "",
        "## Alternatives",
        *alternatives_table(),
        "",
        "## Valve saturation",
        *facility_table(),
        "",
        "## Failsafe and return",
        *failsafe_table(),
    ]
    cpu_s = time.process_time() - started
    report = "\n".join(sections) + (
        f"\n\nSimulated time, seed {SEED}, {cpu_s:.0f} s of CPU. "
        "Command: `.venv/bin/python -m bench.bench_control_plant --write --plot`\n"
    )
    print(report)
    if args.write:
        (ROOT / "bench" / "results" / "control-plant.md").write_text(
            "# Plant study: CDU loops against the simulator's physics\n\n" + report
        )
    if args.plot:
        plot(small_runs, ROOT / "docs" / "control-step-response.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
