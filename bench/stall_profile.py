"""Run megapodd with every event-loop callback timed: what holds the loop.

A control tick is late when another callback holds the event loop at its due
time. This wrapper runs the daemon unchanged, times each callback
(`asyncio.Handle._run`) in wall and thread-CPU time, times garbage-collection
passes (`gc.callbacks`), and samples the main thread's stack from a helper
thread while one callback has run for longer than --sample-after-ms. On exit
(SIGTERM stops the daemon as usual) it writes a JSON report: callbacks over
each threshold by label, the slowest ones, GC passes by generation, and the
sampled stacks of the slow callbacks, collapsed to their innermost megapodd
frames.

Usage: python -m bench.stall_profile --out REPORT.json [--warmup-s 30]
           /path/to/megapodd --config pod.toml
(with bench.pod_process.Pod.daemon: wrap=[python, "-m", "bench.stall_profile",
"--out", path]).
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import collections
import gc
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

THRESHOLDS_MS = (2.0, 5.0, 10.0)


class Profile:
    def __init__(self, warmup_s: float, sample_after_ms: float) -> None:
        self.start_s = time.monotonic()
        self.warmup_s = warmup_s
        self.sample_after_s = sample_after_ms / 1e3
        self.callbacks = 0
        self.over: dict[float, collections.Counter[str]] = {
            t: collections.Counter() for t in THRESHOLDS_MS
        }
        self.over_cpu: dict[float, collections.Counter[str]] = {
            t: collections.Counter() for t in THRESHOLDS_MS
        }
        self.slowest: list[tuple[float, float, str]] = []  # (wall ms, cpu ms, label)
        self.cpu_ms: dict[str, float] = collections.defaultdict(float)  # by label, in all
        self.count: collections.Counter[str] = collections.Counter()
        self.gc_ms: dict[int, list[float]] = collections.defaultdict(list)
        self.stacks: collections.Counter[str] = collections.Counter()
        self.running_since_s: float | None = None
        self.running_label = ""
        self._gc_started_s = 0.0
        self.main_thread_id = threading.get_ident()
        # The newest callbacks (start, end, label): what ran while a tick was due.
        self.recent: collections.deque[tuple[float, float, str]] = collections.deque(maxlen=4000)
        self.late_ticks: list[dict[str, Any]] = []

    def measuring(self) -> bool:
        return time.monotonic() - self.start_s >= self.warmup_s

    def record(self, label: str, wall_s: float, cpu_s: float) -> None:
        if not self.measuring():
            return
        self.callbacks += 1
        wall_ms, cpu_ms = wall_s * 1e3, cpu_s * 1e3
        self.cpu_ms[label] += cpu_ms
        self.count[label] += 1
        end_s = time.perf_counter()
        self.recent.append((end_s - wall_s, end_s, label))
        for t in THRESHOLDS_MS:
            if wall_ms > t:
                self.over[t][label] += 1
            if cpu_ms > t:
                self.over_cpu[t][label] += 1
        if wall_ms > THRESHOLDS_MS[0]:
            self.slowest.append((round(wall_ms, 2), round(cpu_ms, 2), label))

    def on_late_tick(self, late_s: float) -> None:
        """What ran on the loop between the tick's due time and its start."""
        if not self.measuring():
            return
        now_s = time.perf_counter()
        due_s = now_s - late_s
        ran: collections.Counter[str] = collections.Counter()
        spent: dict[str, float] = collections.defaultdict(float)
        for start_s, end_s, name in self.recent:
            if end_s >= due_s:
                ran[name] += 1
                spent[name] += (end_s - max(start_s, due_s)) * 1e3
        busy = sum(spent.values())
        heaviest = sorted(spent.items(), key=lambda kv: -kv[1])[:8]
        self.late_ticks.append(
            {
                "late_ms": round(late_s * 1e3, 2),
                "busy_ms": round(busy, 2),
                "ran": {k: [ran[k], round(v, 2)] for k, v in heaviest},
            }
        )

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started_s = time.perf_counter()
        elif self.measuring():
            self.gc_ms[info["generation"]].append((time.perf_counter() - self._gc_started_s) * 1e3)

    def report(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return round(ordered[int(q * (len(ordered) - 1))], 3) if ordered else 0.0

        return {
            "callbacks": self.callbacks,
            "measured_s": round(time.monotonic() - self.start_s - self.warmup_s, 1),
            "cpu_ms_by_label": {
                k: [self.count[k], round(v, 1)]
                for k, v in sorted(self.cpu_ms.items(), key=lambda kv: -kv[1])[:40]
            },
            "over_ms": {str(t): dict(c.most_common(20)) for t, c in self.over.items()},
            "over_cpu_ms": {str(t): dict(c.most_common(20)) for t, c in self.over_cpu.items()},
            "slowest": sorted(self.slowest, reverse=True)[:60],
            "gc": {
                str(g): {"passes": len(v), "p50_ms": pct(v, 0.5), "max_ms": pct(v, 1.0)}
                for g, v in sorted(self.gc_ms.items())
            },
            "stacks": dict(self.stacks.most_common(60)),
            "late_ticks": sorted(self.late_ticks, key=lambda t: -t["late_ms"])[:40],
        }


def label(callback: Callable[..., Any]) -> str:
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {getattr(coro, '__qualname__', repr(coro))}"
    if owner is not None:
        protocol = getattr(owner, "_protocol", None)
        name = f"{type(owner).__name__}.{getattr(callback, '__name__', '?')}"
        return f"{name} -> {type(protocol).__name__}" if protocol is not None else name
    return getattr(callback, "__qualname__", repr(callback))


def install(profile: Profile) -> None:
    original = asyncio.events.Handle._run

    def timed_run(self: asyncio.events.Handle) -> None:
        name = label(getattr(self, "_callback"))  # noqa: B009 (private, untyped)
        profile.running_label = name
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        profile.running_since_s = wall0
        try:
            original(self)
        finally:
            profile.running_since_s = None
            profile.record(name, time.perf_counter() - wall0, time.thread_time() - cpu0)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    from megapodd.control import tick

    class WatchedWindow(tick.Window):
        def add(self, seconds: float) -> None:
            super().add(seconds)
            if seconds > 0.004:
                profile.on_late_tick(seconds)

    original_init = tick.ControlTick.__init__

    def init(self: tick.ControlTick, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.lateness = WatchedWindow()

    tick.ControlTick.__init__ = init  # type: ignore[method-assign]
    gc.callbacks.append(profile.on_gc)

    def sampler() -> None:
        while True:
            time.sleep(0.001)
            since = profile.running_since_s
            if since is None or time.perf_counter() - since < profile.sample_after_s:
                continue
            if not profile.measuring():
                continue
            frame = sys._current_frames().get(profile.main_thread_id)
            if frame is None:
                continue
            frames = [
                f"{Path(f.filename).stem}:{f.name}"
                for f in traceback.extract_stack(frame)
                if "megapodd" in f.filename or "drivers" in f.filename
            ]
            profile.stacks[f"{profile.running_label} | " + ";".join(frames[-6:])] += 1

    sys.setswitchinterval(0.0005)  # let the sampler in while the main thread works
    threading.Thread(target=sampler, daemon=True, name="stall-sampler").start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--sample-after-ms", type=float, default=4.0)
    parser.add_argument("megapodd", help="the megapodd script (ignored: run in this process)")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    profile = Profile(args.warmup_s, args.sample_after_ms)
    install(profile)
    from megapodd.main import main as megapodd_main

    try:
        return megapodd_main(args.args)
    finally:
        args.out.write_text(json.dumps(profile.report(), indent=1))


if __name__ == "__main__":
    sys.exit(main())
