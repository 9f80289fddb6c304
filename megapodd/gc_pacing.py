"""Garbage collection paced by the control tick.

CPython's cyclic collector runs inside whichever callback happens to allocate
the object that crosses its threshold: on the full pod a young pass of 0.5-2 ms
twice a second, a middle one of ~6 ms every few seconds and a full one of
~30 ms about once a minute, each holding the event loop at a random moment; a
control tick due then starts late by that much (bench/results/loops.md).
Run from the tick, right after its duties, the same passes land where the next
tick is a whole period away. The automatic collector stays on with a high
threshold, for allocation bursts between two ticks.
"""

from __future__ import annotations

import gc

# The automatic collector only sees a burst this large between two ticks ...
BURST_THRESHOLD = (20_000, 10, 10)
# ... while the tick collects the young generation every tick, the middle one
# every MIDDLE_EVERY ticks and all of them every FULL_EVERY (60 s at 100 ms).
MIDDLE_EVERY = 10
FULL_EVERY = 600


def pace_from_tick() -> None:
    """Leave routine collections to GcPacer (call once, in the daemon's process)."""
    gc.set_threshold(*BURST_THRESHOLD)


class GcPacer:
    """A tick duty: one collection per call, of the generation that is due."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> None:
        self.calls += 1
        if self.calls % FULL_EVERY == 0:
            gc.collect(2)
        elif self.calls % MIDDLE_EVERY == 0:
            gc.collect(1)
        else:
            gc.collect(0)
