"""Open-loop step test of the physical model, plotted: ``python -m sim_devices.plot_step``.

No daemon, pump speed fixed: the small pod settles at 30 % workload, then the
workload steps to 90 % at t = 0. Run once with the pump at 60 % and once at
100 %; plot CDU supply and return temperature and the hottest GPU. The same
traces are asserted in tests/unit/test_physics_model.py.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from sim_devices.physics import PodModel

SETTLE_S = 3_600.0
STEP_FROM_PCT = 30.0
STEP_TO_PCT = 90.0
DURATION_S = 1_800.0
SAMPLE_S = 5.0


@dataclass(frozen=True, slots=True)
class StepTrace:
    pump_pct: float
    time_s: tuple[float, ...]
    supply_c: tuple[float, ...]
    return_c: tuple[float, ...]
    gpu_max_c: tuple[float, ...]


def step_response(
    pump_pct: float, duration_s: float = DURATION_S, sample_s: float = SAMPLE_S, seed: int = 0
) -> StepTrace:
    """Workload 30 % -> 90 % at t = 0 with the pump held at ``pump_pct``."""
    model = PodModel(racks=2, servers_per_rack=4, seed=seed)
    model.cooling.pump_speed_pct = [pump_pct, 0.0]
    model.set_workload(STEP_FROM_PCT)
    model.step(SETTLE_S, max_substep_s=10.0)
    start = model.time_s
    model.set_workload(STEP_TO_PCT)
    times, supply, ret, gpu = [], [], [], []
    for i in range(round(duration_s / sample_s) + 1):
        if i:
            model.step(sample_s)
        snap = model.snapshot()
        times.append(model.time_s - start)
        supply.append(snap.cooling.supply_temp_c)
        ret.append(snap.cooling.return_temp_c)
        gpu.append(max(max(s.gpu_temps_c) for s in snap.servers))
    return StepTrace(pump_pct, tuple(times), tuple(supply), tuple(ret), tuple(gpu))


def plot(traces: list[StepTrace], out: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for trace, colour in zip(traces, ("tab:blue", "tab:red"), strict=False):
        minutes = [t / 60.0 for t in trace.time_s]
        label = f"pump {trace.pump_pct:g} %"
        top.plot(minutes, trace.supply_c, color=colour, label=f"supply, {label}")
        top.plot(minutes, trace.return_c, color=colour, linestyle="--", label=f"return, {label}")
        bottom.plot(minutes, trace.gpu_max_c, color=colour, label=f"hottest GPU, {label}")
    top.set_title(
        f"Open-loop step: workload {STEP_FROM_PCT:g} % -> {STEP_TO_PCT:g} % at t = 0 "
        "(small pod, valve 50 %, facility 24 C)"
    )
    top.set_ylabel("coolant temperature (C)")
    bottom.set_ylabel("GPU temperature (C)")
    bottom.set_xlabel("time after step (min)")
    for axis in (top, bottom):
        axis.grid(visible=True, alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/sim-step-response.png"))
    args = parser.parse_args(argv)
    traces = [step_response(60.0), step_response(100.0)]
    plot(traces, args.out)
    for trace in traces:
        print(
            f"pump {trace.pump_pct:g} %: supply {trace.supply_c[0]:.2f} -> "
            f"{trace.supply_c[-1]:.2f} C, return {trace.return_c[0]:.2f} -> "
            f"{trace.return_c[-1]:.2f} C, hottest GPU {trace.gpu_max_c[0]:.1f} -> "
            f"{trace.gpu_max_c[-1]:.1f} C"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
