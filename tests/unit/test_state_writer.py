"""The interlock state writer: a save cancelled at stop goes on in its thread,
and the final flush waits for it instead of writing the same temp file at the
same time; a failure of any kind leaves the save to do."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from megapodd.events import EventBus
from megapodd.safety.persist import DiskFiles, State, StateWriter, load_state
from tests.helpers import wait_until


class SlowDisk(DiskFiles):
    """Real files; the first fsync waits until released. Counts writers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.in_write = 0
        self.most_at_once = 0
        self._count = threading.Lock()

    def write(self, path: Path, data: bytes) -> None:
        with self._count:
            self.in_write += 1
            self.most_at_once = max(self.most_at_once, self.in_write)
        try:
            super().write(path, data)
        finally:
            with self._count:
                self.in_write -= 1

    def fsync(self, fd: int) -> None:
        self.release.wait(timeout=10)
        super().fsync(fd)


async def test_a_cancelled_save_and_the_stop_flush_never_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "interlocks.json"
    state: State = {"leak-tray-r1": {"state": "tripped"}}
    disk = SlowDisk()
    writer = StateWriter(path, lambda: state, EventBus(), disk)
    task = asyncio.create_task(writer.run())
    writer.request()
    # The first save is in its thread, held in fsync.
    await wait_until(lambda: disk.in_write == 1, timeout_s=5)
    task.cancel()  # the daemon stops...
    await asyncio.gather(task, return_exceptions=True)
    state = {"leak-tray-r1": {"state": "latched"}}
    writer.request()
    flush = asyncio.create_task(writer.flush())  # ...and flushes what is pending
    await asyncio.sleep(0.1)
    disk.release.set()
    await flush
    assert disk.most_at_once == 1
    assert load_state(path) == {"leak-tray-r1": {"state": "latched"}}


async def test_any_failure_leaves_the_save_pending(tmp_path: Path) -> None:
    class Broken(DiskFiles):
        def write(self, path: Path, data: bytes) -> None:
            raise RuntimeError("driver bug")

    events = EventBus()
    writer = StateWriter(tmp_path / "s.json", lambda: {}, events, Broken())
    writer.request()
    await writer.flush()
    assert writer.pending
    assert [e.type for e in events.recent] == ["interlock_state_not_saved"]
