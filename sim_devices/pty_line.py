"""A pseudo-terminal that a simulated serial device answers on.

The slave side is what a client opens (`/dev/pts/N`, reached through a stable
symlink). Pitfalls this avoids (PERF-NOTES): the slave fd stays open in this
process, or the master reads EIO in a busy loop once the client closes; the
slave is in raw mode, or the line discipline echoes and turns CR into LF.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tty
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

MAX_BACKLOG_BYTES = 65536


class PtyLine:
    """One pty; `on_data` gets what the client writes; `write` answers it."""

    def __init__(self, link_path: Path | None = None,
                 on_data: Callable[[bytes], None] | None = None) -> None:
        self.on_data = on_data
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.slave_name = os.ttyname(self._slave)
        self.link_path = link_path
        if link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                link_path.unlink()
            link_path.symlink_to(self.slave_name)
        self._pending = bytearray()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._read_ready)
        self._writer_added = False
        self._closed = False
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def path(self) -> str:
        """What a client opens: the symlink if there is one, else the slave name."""
        return str(self.link_path) if self.link_path is not None else self.slave_name

    def _read_ready(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # cannot happen while we hold the slave; be safe
                return
            raise
        if data:
            self.bytes_in += len(data)
            if self.on_data is not None:
                self.on_data(data)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self.bytes_out += len(data)
        if self._pending:
            # Nobody is reading: keep a bounded backlog, as a UART FIFO would.
            if len(self._pending) < MAX_BACKLOG_BYTES:
                self._pending += data
            return
        try:
            sent = os.write(self._master, data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self._pending += data[sent:]
            if not self._writer_added:
                self._loop.add_writer(self._master, self._write_ready)
                self._writer_added = True

    def _write_ready(self) -> None:
        try:
            sent = os.write(self._master, self._pending)
        except BlockingIOError:
            return
        del self._pending[:sent]
        if not self._pending:
            self._loop.remove_writer(self._master)
            self._writer_added = False

    def discard_output(self) -> None:
        """Drop what the client has not read yet (a console server losing its buffer)."""
        self._pending.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._master)
        if self._writer_added:
            self._loop.remove_writer(self._master)
        os.close(self._master)
        os.close(self._slave)
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()
