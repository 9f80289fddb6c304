"""Store-and-forward queue for events: never drops, keeps order.

The oldest events wait in memory; once memory holds `memory_max`, newer ones
are appended to a spill file in the state directory and read back in order as
the memory queue drains. A daemon restart loses nothing that reached the file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from pathlib import Path


class EventOutbox:
    def __init__(self, spill_path: Path, memory_max: int = 10_000) -> None:
        self._memory: deque[dict[str, object]] = deque()
        self._memory_max = memory_max
        self._spill_path = spill_path
        self._spilled = self._count_spilled()

    def __len__(self) -> int:
        return len(self._memory) + self._spilled

    def put(self, payload: dict[str, object]) -> None:
        if self._spilled == 0 and len(self._memory) < self._memory_max:
            self._memory.append(payload)
            return
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        with self._spill_path.open("a", encoding="utf-8") as spill:
            spill.write(json.dumps(payload, separators=(",", ":")) + "\n")
        self._spilled += 1

    def peek(self) -> dict[str, object] | None:
        if not self._memory and self._spilled:
            self._refill()
        return self._memory[0] if self._memory else None

    def pop(self) -> None:
        """Remove the head once it has been delivered."""
        self._memory.popleft()

    def persist(self) -> None:
        """Move what waits in memory to the front of the spill file (at exit)."""
        if not self._memory:
            return
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(p, separators=(",", ":")) + "\n" for p in self._memory]
        with contextlib.suppress(FileNotFoundError):
            lines += self._spill_path.read_text(encoding="utf-8").splitlines(keepends=True)
        tmp = self._spill_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._spill_path)
        self._spilled += len(self._memory)
        self._memory.clear()

    def _refill(self) -> None:
        lines = self._spill_path.read_text(encoding="utf-8").splitlines()
        take, keep = lines[: self._memory_max], lines[self._memory_max :]
        for line in take:
            self._memory.append(json.loads(line))
        tmp = self._spill_path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep), encoding="utf-8")
        os.replace(tmp, self._spill_path)
        self._spilled = len(keep)
        if not keep:
            self._spill_path.unlink(missing_ok=True)

    def _count_spilled(self) -> int:
        try:
            with self._spill_path.open(encoding="utf-8") as spill:
                return sum(1 for _ in spill)
        except FileNotFoundError:
            return 0
