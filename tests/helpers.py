"""Small helpers for tests and benchmarks: free ports, waiting on sockets and
conditions, running and stopping child processes without leaving them behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class MosquittoBroker:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_tcp_port(host: str, port: int, timeout_s: float) -> None:
    """Block until something accepts on host:port (for subprocess start-up only)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float, interval_s: float = 0.05
) -> None:
    """Poll a condition until it holds; raise TimeoutError naming nothing else."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(interval_s)


def child_pids() -> set[int]:
    """Live (non-zombie) child processes of this process."""
    me = os.getpid()
    children: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may itself contain spaces.
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z":
            children.add(int(entry.name))
    return children


async def communicate(
    proc: asyncio.subprocess.Process, timeout_s: float
) -> tuple[int, bytes, bytes]:
    """Wait for a child to finish: (exit code, stdout, stderr; b"" where not piped).

    On a timeout or a cancellation the child is killed and reaped before the
    error goes on, so no test leaves it running."""
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out or b"", err or b""


async def stop_processes(
    *procs: asyncio.subprocess.Process, timeout_s: float, sig: int = signal.SIGTERM
) -> None:
    """Ask children to stop (`sig`, last started first), wait up to `timeout_s`
    for each, then kill and reap whichever is still running."""
    for proc in reversed(procs):
        if proc.returncode is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            async with asyncio.timeout(timeout_s):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
