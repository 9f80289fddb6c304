"""Store-and-forward queue for events: never drops one, keeps their order.

Every event is appended to a journal in the state directory by the journal's
own task, within a loop iteration of being made (one write, no fsync: a daemon
crash loses nothing the kernel has; whoever emits an event never waits on the
disk), and read back from there in order. A side file holds the offset of the
last event the broker acknowledged, rewritten every few acknowledgements (by
the journal's task, its fsync in a thread: a trip's hundreds of events must not
stop the event loop for the disk) and at exit, so a restart re-sends at most a
handful (delivery is at least once: subscribers tell events apart by boot_id
and seq). When the journal cannot be written (disk full, read-only), events
wait in memory and the write is retried.
A line that does not parse (a torn write at power loss) is skipped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import structlog

from megapodd.events import json_safe

log = structlog.get_logger("megapodd.outbox")

# Rewrite the committed offset after this many acknowledgements.
_COMMIT_EVERY = 50
# An unwritable journal is tried again this often (events wait in memory).
_RETRY_WRITE_S = 1.0


def _line(payload: dict[str, object]) -> bytes:
    """One journal line; a value JSON cannot carry never blocks the journal."""
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        text = json.dumps(json_safe(payload), separators=(",", ":"))
    return text.encode() + b"\n"


def _parse(line: bytes) -> dict[str, object] | None:
    try:
        payload = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    return payload if isinstance(payload, dict) else None


class EventOutbox:
    def __init__(
        self,
        journal_path: Path,
        memory_max: int = 10_000,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self._path = journal_path
        self._on_ready = on_ready  # told when journalled events are there to send
        self._to_write = asyncio.Event()
        # peek() handed out the head of the memory queue (journal unwritable):
        # the journal must not take it until it is popped or given back.
        self._sending_from_memory = False
        self._offset_path = journal_path.with_name(journal_path.name + ".offset")
        self._memory_max = memory_max
        self._cache: deque[tuple[dict[str, object], int]] = deque()  # event, its end offset
        self._unwritten: deque[dict[str, object]] = deque()
        self._writer: BinaryIO | None = None
        self._write_failing = False
        self._acks_since_commit = 0
        # The offset to write next (the journal's task takes it), and the
        # journal's generation: a reset starts a new journal, and an offset
        # written for the old one must not land beside the new one.
        self._offset_due: int | None = None
        self._generation = 0
        self._offset_lock = threading.Lock()
        self.corrupt_lines = 0
        self._committed = self._load_offset()
        self._read_offset = self._committed
        self._pending = self._count_lines_from(self._committed)

    def __len__(self) -> int:
        return self._pending + len(self._unwritten)

    def put(self, payload: dict[str, object]) -> None:
        """Take an event (never blocks; the journal task writes it)."""
        self._unwritten.append(payload)
        self._to_write.set()

    async def run_journal(self) -> None:
        """The journal's task: write what was put, retry while the disk refuses."""
        while True:
            await self._to_write.wait()
            self.write_journal()
            if (due := self.take_offset_due()) is not None:
                await asyncio.to_thread(self.write_offset, *due)
            if self._write_failing:
                await asyncio.sleep(_RETRY_WRITE_S)

    def write_journal(self) -> None:
        """Append what waits in memory to the journal (the task's one step)."""
        self._to_write.clear()
        if self._sending_from_memory or not self._unwritten:
            if self._unwritten:
                self._to_write.set()  # after the pop
            return
        self._flush()
        if self._write_failing:
            self._to_write.set()
        self._on_ready()

    def peek(self) -> dict[str, object] | None:
        """The oldest event not yet acknowledged, or None."""
        if not self._cache:
            self._fill()
        if self._cache:
            return self._cache[0][0]
        if self._write_failing and self._unwritten:
            self._sending_from_memory = True
            return self._unwritten[0]
        return None

    def give_back(self) -> None:
        """The head from peek() was not acknowledged (the broker went away)."""
        self._sending_from_memory = False

    def pop(self) -> None:
        """The broker acknowledged the head: drop it for good."""
        if not self._cache:
            self._unwritten.popleft()  # the journal is unwritable: memory only
            self._sending_from_memory = False
            return
        _, end = self._cache.popleft()
        self._committed = end
        self._pending -= 1
        self._acks_since_commit += 1
        if self._pending == 0:
            self._reset_journal()
        elif self._acks_since_commit >= _COMMIT_EVERY:
            self._acks_since_commit = 0
            self._offset_due = self._committed
            self._to_write.set()  # the journal's task writes it

    def take_offset_due(self) -> tuple[int, int] | None:
        """The acknowledged offset to write, with the journal's generation."""
        offset, self._offset_due = self._offset_due, None
        return None if offset is None else (offset, self._generation)

    def write_offset(self, offset: int, generation: int) -> None:
        """Write the acknowledged offset durably (from any thread). An older
        offset than the newest is harmless (a few events sent again); one for a
        journal that was reset since is dropped."""
        tmp = self._offset_path.with_name(
            f"{self._offset_path.name}.tmp-{threading.get_ident()}"
        )
        try:
            with tmp.open("w", encoding="ascii") as out:
                out.write(f"{offset}\n")
                out.flush()
                os.fsync(out.fileno())
            with self._offset_lock:
                if generation == self._generation:
                    os.replace(tmp, self._offset_path)
                    return
            tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("event_journal_offset_failed", path=str(self._offset_path), error=str(exc))

    def persist(self) -> None:
        """At exit: everything written and the offset on disk."""
        self._flush()
        if self._writer is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._writer.fileno())
        if self._pending:
            self.write_offset(self._committed, self._generation)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- journal -------------------------------------------------------------

    def _flush(self) -> None:
        if not self._unwritten:
            return
        data = b"".join(_line(p) for p in self._unwritten)
        try:
            if self._writer is None:
                self._writer = self._open_writer()
            self._writer.write(data)
            self._writer.flush()
        except (OSError, ValueError) as exc:
            if not self._write_failing:
                log.warning("event_journal_write_failed", path=str(self._path), error=str(exc))
            self._write_failing = True
            self.close()
            return
        if self._write_failing:
            log.info("event_journal_writable_again", path=str(self._path))
        self._write_failing = False
        self._pending += len(self._unwritten)
        self._unwritten.clear()

    def _open_writer(self) -> BinaryIO:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._path.open("ab")
        # A torn last line (power loss mid-write) must not swallow the next one.
        if writer.tell() > 0:
            with self._path.open("rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    writer.write(b"\n")
                    self._pending += 1  # now a whole (corrupt) line, skipped when read
        return writer

    def _fill(self) -> None:
        if self._pending == 0:
            return
        try:
            with self._path.open("rb") as reader:
                reader.seek(self._read_offset)
                while len(self._cache) < self._memory_max:
                    line = reader.readline()
                    if not line.endswith(b"\n"):
                        break  # end of the journal
                    end = reader.tell()
                    self._read_offset = end
                    payload = _parse(line)
                    if payload is None:
                        self._skip_corrupt(end)
                        continue
                    self._cache.append((payload, end))
        except OSError as exc:
            log.warning("event_journal_read_failed", path=str(self._path), error=str(exc))
        if not self._cache and self._pending:
            # Fewer lines than counted (the file was cut short): nothing more to send.
            self._pending = 0
            self._reset_journal()

    def _skip_corrupt(self, end: int) -> None:
        self.corrupt_lines += 1
        self._pending -= 1
        log.warning("event_journal_line_corrupt", path=str(self._path), end_offset=end)
        if not self._cache:
            self._committed = end

    def _reset_journal(self) -> None:
        """Everything was delivered: start an empty journal."""
        self.close()
        with self._offset_lock:
            self._generation += 1
            for path in (self._path, self._offset_path):
                with contextlib.suppress(OSError):
                    path.unlink()
        self._committed = self._read_offset = 0
        self._acks_since_commit = 0
        self._offset_due = None

    def _load_offset(self) -> int:
        try:
            offset = int(self._offset_path.read_text(encoding="ascii").strip())
            size = self._path.stat().st_size
        except (OSError, ValueError):
            return 0
        return offset if 0 <= offset <= size else 0

    def _count_lines_from(self, offset: int) -> int:
        try:
            with self._path.open("rb") as reader:
                reader.seek(offset)
                return sum(1 for line in reader if line.endswith(b"\n"))
        except OSError:
            return 0
