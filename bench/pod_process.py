"""A simulated pod in child processes, for the real-time benchmarks.

mosquitto, `megapod-sim run` and megapodd each run in their own process, as in
production: the daemon's CPU and RSS are its own, and the simulator talks the
wire protocols to it. The benchmark drives the pod through the simulator's
control socket (faults, its true state and its log of what the daemon did to
the devices, timestamped with the host's monotonic clock) and the daemon's
local API (status, commands), both from the benchmark's own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megapodd.api.client import ApiClientError, call
from tests.helpers import stop_processes

BIN = Path(sys.executable).parent
LOOPS_HEADER = "# -- Control loops (docs/control.md) --"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def without_loops(config: str) -> str:
    """The config the simulator wrote, less its [[loop]] and [[zone]] sections
    (they come last)."""
    head, found, _ = config.partition(LOOPS_HEADER)
    if not found:
        raise SystemExit("bench: the simulator's config has no control loops section")
    return head


def without_feed_forward(config: str) -> str:
    """The same config with every loop's `feed_forward` key taken out."""
    return "\n".join(line for line in config.splitlines() if not line.startswith("feed_forward = "))


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        await asyncio.sleep(every_s)


async def _spawn(*argv: str, log: Path, out: Path | None = None) -> asyncio.subprocess.Process:
    """Start a process, stderr (and stdout unless `out`) appended to `log`."""
    with log.open("ab") as err, (out or log).open("ab") as stdout:
        return await asyncio.create_subprocess_exec(*argv, stdout=stdout, stderr=err)


@dataclass
class Pod:
    work: Path
    state_dir: Path
    config: Path  # as the simulator wrote it
    ready: dict[str, Any]
    sim: asyncio.subprocess.Process
    devices: int
    mqtt_port: int

    @property
    def sock(self) -> Path:
        return self.state_dir / "megapodd.sock"

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request on the simulator's control socket."""
        reader, writer = await asyncio.open_unix_connection(self.ready["control_socket"])
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            async with asyncio.timeout(10):
                reply: dict[str, Any] = json.loads(await reader.readline())
        finally:
            writer.close()
            await writer.wait_closed()
        if not reply.get("ok"):
            raise SystemExit(f"bench: the simulator refused {request}: {reply}")
        return reply

    async def inject_at(self, *fault: str) -> float:
        """Inject a fault; the monotonic time from which the devices show it."""
        reply = await self.control({"op": "inject", "fault": fault[0], "args": list(fault[1:])})
        return float(reply["at_s"])

    async def clear(self, *fault: str) -> None:
        name = fault[0] if fault else None
        await self.control({"op": "clear", "fault": name, "args": list(fault[1:])})

    async def log(self, since_s: float) -> dict[str, Any]:
        """CDU register writes and outlet switches since `since_s` (monotonic)."""
        return await self.control({"op": "log", "since_s": since_s})

    async def true_state(self) -> dict[str, Any]:
        status: dict[str, Any] = (await self.control({"op": "status"}))["status"]
        return status

    async def api(self, cmd: str, timeout_s: float = 30.0, **args: object) -> Any:
        return await call(self.sock, cmd, args, timeout_s=timeout_s)

    async def all_online(self) -> bool:
        try:
            status: Any = await call(self.sock, "status")
        except ApiClientError:
            return False
        states = [d["state"] for d in status["devices"]]
        return len(states) == self.devices and all(s == "online" for s in states)

    @contextlib.asynccontextmanager
    async def daemon(
        self, config_text: str | None = None, name: str = "megapodd", wrap: Sequence[str] = ()
    ) -> AsyncIterator[asyncio.subprocess.Process]:
        """megapodd on this pod with `config_text` (the simulator's config by
        default), every device online; SIGTERM on the way out. `wrap` is a
        command line to run it under (a profiler)."""
        config = self.work / f"{name}.toml"
        config.write_text(config_text if config_text is not None else self.config.read_text())
        proc = await _spawn(
            *wrap, str(BIN / "megapodd"), "--config", str(config), log=self.work / f"{name}.log"
        )
        try:
            await wait_for(self.all_online, 180, f"every device online ({name})", every_s=1.0)
            yield proc
        finally:
            await stop_processes(proc, timeout_s=15)


@contextlib.asynccontextmanager
async def simulated_pod(
    profile: str, devices: int, extra: Sequence[str] = (), prefix: str = "bench-"
) -> AsyncIterator[Pod]:
    """mosquitto and `megapod-sim run --profile PROFILE --write-config ...`,
    until the simulator says it is ready."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    mqtt_port, base_port = free_port(), free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs.append(
            await _spawn("mosquitto", "-c", str(work / "mosquitto.conf"), log=work / "mq.log")
        )
        config = work / "pod.toml"
        sim_out = work / "sim.out"
        sim = await _spawn(
            str(BIN / "megapod-sim"), "run", "--profile", profile, "--state-dir",
            str(work / "sim"), "--base-port", str(base_port), "--write-config", str(config),
            "--mqtt-url", f"mqtt://127.0.0.1:{mqtt_port}", "--metrics-listen", "", *extra,
            log=work / "sim.log", out=sim_out,
        )  # fmt: skip
        procs.append(sim)
        ready: dict[str, Any] = {}

        async def announced() -> bool:
            if sim.returncode is not None:
                log = (work / "sim.log").read_text()[-2000:]
                raise SystemExit(f"bench: megapod-sim exited: {log}")
            for line in sim_out.read_text().splitlines():
                if line.startswith('{"event": "ready"'):
                    ready.update(json.loads(line))
                    return True
            return False

        await wait_for(announced, 120, "the simulator")
        yield Pod(work, work / "sim", config, ready, sim, devices, mqtt_port)
    finally:
        await stop_processes(*procs, timeout_s=15)
