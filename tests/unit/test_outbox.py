"""The event outbox keeps order and drops nothing, even past its memory."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from megapodd.mqtt.deadband import changed_beyond_deadband
from megapodd.mqtt.outbox import EventOutbox


def _drain(outbox: EventOutbox) -> list[object]:
    out: list[object] = []
    while (head := outbox.peek()) is not None:
        out.append(head["seq"])
        outbox.pop()
    return out


def test_spills_to_disk_beyond_memory_and_survives_a_restart(tmp_path: Path) -> None:
    spill = tmp_path / "outbox.jsonl"
    outbox = EventOutbox(spill, memory_max=100)
    for seq in range(250):
        outbox.put({"seq": seq})
    assert len(outbox) == 250 and spill.exists()
    # A restart keeps what was spilled (memory is gone with the process).
    reborn = EventOutbox(spill, memory_max=100)
    assert len(reborn) == 150
    assert _drain(outbox)[:100] == list(range(100))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["put", "take"]), max_size=400), st.integers(100, 130))
def test_order_is_kept_whatever_the_interleaving(ops: list[str], memory_max: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        outbox = EventOutbox(Path(directory) / "o.jsonl", memory_max=memory_max)
        put, taken = 0, []
        for op in ops:
            if op == "put":
                outbox.put({"seq": put})
                put += 1
            elif (head := outbox.peek()) is not None:
                taken.append(head["seq"])
                outbox.pop()
        taken += _drain(outbox)
        assert taken == list(range(put))


def test_deadband_by_unit() -> None:
    assert not changed_beyond_deadband(30.0, 30.05, "degC")
    assert changed_beyond_deadband(30.0, 30.2, "degC")
    assert not changed_beyond_deadband(1000, 1005, "W")
    assert changed_beyond_deadband(True, False, "")
    assert changed_beyond_deadband("on", "off", "")
    assert changed_beyond_deadband(1, 2, "")
