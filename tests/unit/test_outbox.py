"""The event outbox keeps order and drops nothing: across restarts, torn
lines and an unwritable journal."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from megapodd.mqtt.deadband import changed_beyond_deadband
from megapodd.mqtt.outbox import EventOutbox
from tests.helpers import wait_until


def _drain(outbox: EventOutbox) -> list[int]:
    outbox.write_journal()  # what the journal's task does
    out: list[int] = []
    while (head := outbox.peek()) is not None:
        seq = head["seq"]
        assert isinstance(seq, int)
        out.append(seq)
        outbox.pop()
    return out


def test_a_restart_resends_from_the_last_acknowledged_event(tmp_path: Path) -> None:
    journal = tmp_path / "outbox.jsonl"
    outbox = EventOutbox(journal, memory_max=100)
    for seq in range(250):
        outbox.put({"seq": seq})
    assert len(outbox) == 250
    assert outbox.peek() is None  # not journalled yet: nothing goes out before it is
    outbox.write_journal()
    for _ in range(120):
        assert outbox.peek() is not None
        outbox.pop()
    outbox.persist()
    outbox.close()
    reborn = EventOutbox(journal, memory_max=100)
    assert len(reborn) == 130
    assert _drain(reborn) == list(range(120, 250))
    assert not journal.exists()  # all delivered: the journal starts afresh


def test_without_persist_a_crash_resends_at_most_a_few(tmp_path: Path) -> None:
    journal = tmp_path / "outbox.jsonl"
    outbox = EventOutbox(journal)
    for seq in range(200):
        outbox.put({"seq": seq})
    outbox.write_journal()
    for _ in range(130):
        outbox.peek()
        outbox.pop()
    if (due := outbox.take_offset_due()) is not None:
        outbox.write_offset(*due)  # what the journal's task does, in a thread
    # No persist, no close: as after SIGKILL.
    reborn = EventOutbox(journal)
    resent = _drain(reborn)
    assert resent[-1] == 199 and resent == list(range(resent[0], 200))
    assert 130 - 50 <= resent[0] <= 130


def test_a_torn_line_is_skipped_and_counted(tmp_path: Path) -> None:
    journal = tmp_path / "outbox.jsonl"
    journal.write_bytes(b'{"seq":0}\n{"seq":1,"ty\n{"seq":2}\n{"seq":3')  # torn twice
    outbox = EventOutbox(journal)
    outbox.put({"seq": 4})
    assert _drain(outbox) == [0, 2, 4]
    assert outbox.corrupt_lines == 2  # the last torn write is terminated, then skipped too


def test_an_unwritable_journal_keeps_events_in_memory_in_order(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    outbox = EventOutbox(blocker / "outbox.jsonl")
    for seq in range(5):
        outbox.put({"seq": seq})
    assert len(outbox) == 5
    assert _drain(outbox) == [0, 1, 2, 3, 4]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from(["put", "journal", "take", "restart"]), max_size=300),
    st.integers(1, 30),
)
def test_order_is_kept_whatever_the_interleaving(ops: list[str], memory_max: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        journal = Path(directory) / "o.jsonl"
        outbox = EventOutbox(journal, memory_max=memory_max)
        put, taken = 0, []
        for op in ops:
            if op == "put":
                outbox.put({"seq": put})
                put += 1
            elif op == "journal":
                outbox.write_journal()
            elif op == "restart":
                outbox.persist()
                outbox.close()
                outbox = EventOutbox(journal, memory_max=memory_max)
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


def test_a_value_json_cannot_carry_never_blocks_the_journal(tmp_path: Path) -> None:
    outbox = EventOutbox(tmp_path / "o.jsonl")
    outbox.put({"seq": 0, "data": {"x": float("nan")}})
    outbox.put({"seq": 1})
    outbox.write_journal()
    assert outbox.peek() == {"seq": 0, "data": {"x": None}}
    assert _drain(outbox) == [0, 1]


async def test_the_journal_task_writes_the_offset_off_the_event_loop(tmp_path: Path) -> None:
    journal = tmp_path / "outbox.jsonl"
    outbox = EventOutbox(journal)
    task = asyncio.create_task(outbox.run_journal())
    try:
        for seq in range(80):
            outbox.put({"seq": seq})
        await wait_until(lambda: outbox.peek() is not None, timeout_s=5)
        for _ in range(60):
            outbox.pop()  # never touches the disk itself
        offset = journal.with_name(journal.name + ".offset")
        await wait_until(offset.exists, timeout_s=5)
        assert EventOutbox(journal).peek() == {"seq": 50}  # committed at the 50th ack
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()


def test_an_offset_for_a_journal_that_was_reset_is_dropped(tmp_path: Path) -> None:
    journal = tmp_path / "outbox.jsonl"
    outbox = EventOutbox(journal)
    for seq in range(60):
        outbox.put({"seq": seq})
    outbox.write_journal()
    for _ in range(50):
        outbox.peek()
        outbox.pop()
    due = outbox.take_offset_due()
    assert due is not None
    for _ in range(10):  # everything delivered: a new, empty journal
        outbox.peek()
        outbox.pop()
    outbox.put({"seq": 60})
    outbox.write_journal()
    outbox.write_offset(*due)  # a late write for the old journal, from its thread
    assert not journal.with_name(journal.name + ".offset").exists()
    assert _drain(EventOutbox(journal)) == [60]
