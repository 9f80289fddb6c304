"""Latched interlock state on disk, written by a task of its own.

A file is written atomically (temp file, fsync, rename, fsync of the
directory) so a power cut leaves the old file or the new one, never half of
one (invariant 3). The writing happens in `StateWriter`'s task, in a worker
thread: a trip claims its outputs first and only asks for a save, so a slow
disk never sits between a fault and its action. Saves coalesce: the task
always writes the latest state.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from megapodd.events import EventBus, Severity

log = structlog.get_logger("megapodd.safety")

# After a failed save, try again this soon (the rules still act meanwhile).
_RETRY_S = 1.0

State = dict[str, dict[str, object]]


class AtomicFiles(Protocol):
    """Writes a whole file atomically; blocking (runs in a worker thread)."""

    def write(self, path: Path, data: bytes) -> None: ...


class DiskFiles:
    """The real thing: temp file, fsync, rename, fsync of the directory."""

    def write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            self.fsync(out.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            self.fsync(directory)
        finally:
            os.close(directory)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


def encode_state(state: State) -> bytes:
    return json.dumps({"version": 1, "rules": state}, indent=1, sort_keys=True).encode()


def save_state(path: Path, state: State, files: AtomicFiles | None = None) -> None:
    """Write now, blocking (start-up, tests)."""
    (files or DiskFiles()).write(path, encode_state(state))


def load_state(path: Path) -> State:
    """What was saved; an unreadable file is reported and counts as nothing
    latched only if it is missing (a corrupt one raises: safety state is not
    guessed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    data = json.loads(text)  # a JSONDecodeError is a ValueError: the caller handles both
    if not isinstance(data, dict) or not isinstance(data.get("rules"), dict):
        raise ValueError(f"{path}: not an interlock state file")  # noqa: TRY004 - bad content
    rules: State = {}
    for rule_id, entry in data["rules"].items():
        if isinstance(entry, dict):
            rules[str(rule_id)] = entry
    return rules


class StateWriter:
    """Saves the latest state whenever asked, in its own task."""

    def __init__(
        self,
        path: Path,
        snapshot: Callable[[], State],
        events: EventBus,
        files: AtomicFiles | None = None,
    ) -> None:
        self._path = path
        self._snapshot = snapshot
        self._events = events
        self._files = files or DiskFiles()
        self._dirty = asyncio.Event()
        self._failing = False
        self._writing = asyncio.Lock()  # one save at a time from the loop
        # ...and one writer of the temp file at a time in the threads: a save
        # cancelled at stop goes on in its thread while flush() writes again.
        self._file_lock = threading.Lock()
        self.saves = 0

    def request(self) -> None:
        """Save soon (never blocks; the latest state is what gets written)."""
        self._dirty.set()

    @property
    def pending(self) -> bool:
        return self._dirty.is_set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            if not await self._save_once():
                await asyncio.sleep(_RETRY_S)

    async def flush(self) -> None:
        """Write now if a save is pending (at stop, and in tests)."""
        if self._dirty.is_set():
            await self._save_once()

    async def _save_once(self) -> bool:
        async with self._writing:
            self._dirty.clear()
            data = encode_state(self._snapshot())
            try:
                await asyncio.to_thread(self._write, data)
            except Exception as exc:  # noqa: BLE001 - any failure leaves the save to do
                return self._failed(exc)
        if self._failing:
            self._events.emit(
                "interlock_state_saved",
                Severity.INFO,
                "megapodd",
                f"interlock state saved to {self._path} again",
            )
        self._failing = False
        self.saves += 1
        return True

    def _write(self, data: bytes) -> None:
        with self._file_lock:
            self._files.write(self._path, data)

    def _failed(self, exc: Exception) -> bool:
        self._dirty.set()  # still to do
        if not self._failing:
            # The rules still act; only a restart would forget them. Say so loudly.
            log.error("interlock_state_not_saved", path=str(self._path), error=str(exc))
            self._events.emit(
                "interlock_state_not_saved",
                Severity.CRITICAL,
                "megapodd",
                f"cannot save interlock state to {self._path}: {exc}",
            )
        self._failing = True
        return False
