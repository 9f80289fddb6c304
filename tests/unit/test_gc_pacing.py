"""The control tick's garbage-collection duty: which generation each call collects."""

from __future__ import annotations

import gc

import pytest

from megapodd import gc_pacing
from megapodd.gc_pacing import FULL_EVERY, MIDDLE_EVERY, GcPacer


def test_young_every_tick_middle_every_tenth_full_every_six_hundredth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: collected.append(generation))
    pacer = GcPacer()
    for _ in range(2 * FULL_EVERY):
        pacer.collect()
    assert len(collected) == 2 * FULL_EVERY  # one pass per tick, never more
    assert collected.count(2) == 2
    assert [i + 1 for i, g in enumerate(collected) if g == 2] == [FULL_EVERY, 2 * FULL_EVERY]
    assert collected.count(1) == 2 * FULL_EVERY // MIDDLE_EVERY - 2
    assert collected[MIDDLE_EVERY - 1] == 1 and collected[MIDDLE_EVERY] == 0


def test_pacing_leaves_the_automatic_collector_on_for_bursts() -> None:
    before = gc.get_threshold()
    try:
        gc_pacing.pace_from_tick()
        assert gc.isenabled()
        assert gc.get_threshold() == gc_pacing.BURST_THRESHOLD
        assert gc_pacing.BURST_THRESHOLD[0] > before[0]
    finally:
        gc.set_threshold(*before)


def test_a_tick_pass_frees_a_young_cycle() -> None:
    class Node:
        other: object = None

    gc.collect(0)  # nothing young is pending
    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b  # unreachable now, but only the cyclic collector can free them
    collected_before = gc.get_stats()[0]["collected"]
    GcPacer().collect()  # the first call: a young pass
    assert gc.get_stats()[0]["collected"] - collected_before >= 2
