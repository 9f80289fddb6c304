"""Run the real `megapod-sim` command as a child process, for the sim's tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import stop_processes

_SCRIPT = Path(sys.executable).parent / "megapod-sim"
SIM_COMMAND: list[str] = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sim_devices.cli"]
)


@dataclass(frozen=True, slots=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(slots=True)
class RunningSim:
    process: asyncio.subprocess.Process
    state_dir: Path
    ready: dict[str, Any]

    async def cli(self, *args: str) -> CliResult:
        return await run_cli(*args, "--state-dir", str(self.state_dir))

    async def status(self) -> dict[str, Any]:
        result = await self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        status: dict[str, Any] = json.loads(result.stdout)
        return status

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            return await self.process.wait()


async def run_cli(*args: str) -> CliResult:
    proc = await asyncio.create_subprocess_exec(
        *SIM_COMMAND,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


@asynccontextmanager
async def running_sim(
    state_dir: Path, base_port: int, extra: Sequence[str] = (), start_timeout_s: float = 60.0
) -> AsyncIterator[RunningSim]:
    """Start `megapod-sim run`, wait for its ready line, SIGTERM it on the way out."""
    stderr_path = state_dir.parent / f"{state_dir.name}.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *SIM_COMMAND,
            "run",
            "--state-dir",
            str(state_dir),
            "--base-port",
            str(base_port),
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(start_timeout_s):
            line = await proc.stdout.readline()
        if not line:
            await proc.wait()
            raise AssertionError(
                f"megapod-sim exited {proc.returncode}: {stderr_path.read_text()[-2000:]}"
            )
        yield RunningSim(proc, state_dir, json.loads(line))
    finally:
        await stop_processes(proc, timeout_s=20)
