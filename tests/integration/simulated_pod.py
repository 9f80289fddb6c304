"""The small simulated pod for integration tests: `megapod-sim` (a child
process) with the config it writes (the default rules and loops), and a
daemon in this loop on it, every device online. The rules' long delays are
shortened so a test takes seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from megapodd.app import Daemon
from megapodd.store import DeviceState
from tests.daemon_helpers import megapodctl, running_daemon
from tests.helpers import MosquittoBroker, free_tcp_port, wait_until
from tests.integration.sim_process import RunningSim, running_sim

CONTROL_MODE, PUMP_SETPOINT, LEAD_PUMP, VALVE, ISOLATION = 101, 102, 103, 104, 108
# Real delays -> test delays (seconds).
_FASTER = {
    r"for_s = 30\b": "for_s = 2",
    r"hard_after_s = 60\b": "hard_after_s = 3",
    r"after_s = 120\b": "after_s = 5",
    r"after_s = 125\b": "after_s = 10",
}


@dataclass
class Pod:
    sim: RunningSim
    daemon: Daemon
    tmp: Path

    @property
    def cdu_port(self) -> int:
        return int(self.sim.ready["cdu_port"])

    def pdu_port(self, pdu: str) -> int:
        return int(self.sim.ready["pdu_ports"][pdu])

    @property
    def sock(self) -> str:
        return str(self.daemon.config.api.socket)

    async def inject(self, *fault: str) -> None:
        result = await self.sim.cli("inject", *fault)
        assert result.returncode == 0, result.stderr

    async def clear(self, *fault: str) -> None:
        result = await self.sim.cli("inject", "--clear", *fault)
        assert result.returncode == 0, result.stderr

    def state(self, instance: str) -> str:
        return str(self.daemon.interlocks.snapshot()[instance]["state"])  # type: ignore[index]

    async def until(self, instance: str, state: str, timeout_s: float = 15.0) -> None:
        await wait_until(lambda: self.state(instance) == state, timeout_s=timeout_s)

    async def server(self, server: str) -> dict[str, Any]:
        status = await self.sim.status()
        [entry] = [s for s in status["servers"] if s["id"] == server]
        return dict(entry)

    async def servers_on(self) -> list[str]:
        status = await self.sim.status()
        return [s["id"] for s in status["servers"] if s["chassis_on"]]

    def events(self, kind: str, rule: str | None = None) -> list[Any]:
        return [
            e
            for e in self.daemon.events.recent
            if e.type == kind and (rule is None or e.data.get("rule") == rule)
        ]

    async def reset(self, rule: str) -> tuple[int, str]:
        code, out, err = await megapodctl("--socket", self.sock, "reset", rule)
        return code, out + err



    async def log(self, since_s: float) -> dict[str, Any]:
        """What the daemon did to the devices since `since_s` (the sim's clock)."""
        reply = await _control(self.sim.state_dir / "sim.sock", {"op": "log", "since_s": since_s})
        return reply

    async def status_now(self) -> dict[str, Any]:
        """The sim's true state over its control socket (no CLI process to start)."""
        reply = await _control(self.sim.state_dir / "sim.sock", {"op": "status"})
        assert reply["ok"], reply
        status: dict[str, Any] = reply["status"]
        return status

    async def inject_at(self, *fault: str) -> float:
        """Inject over the control socket; the sim's time from which the devices show it."""
        reply = await _control(
            self.sim.state_dir / "sim.sock",
            {"op": "inject", "fault": fault[0], "args": list(fault[1:])},
        )
        assert reply["ok"], reply
        return float(reply["at_s"])


async def _control(path: Path, request: dict[str, Any]) -> dict[str, Any]:

    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(10):
            reply: dict[str, Any] = json.loads(await reader.readline())
        return reply
    finally:
        writer.close()
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def open_pod(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    edit: Callable[[str], str] | None = None,
    sim_args: tuple[str, ...] = (),
) -> AsyncIterator[Pod]:
    """The pod, every device online; `edit` may change the config text first;
    `sim_args` go to `megapod-sim run` (e.g. `--oversubscribe 1.3`)."""
    state = tmp_path / "pod"
    config = tmp_path / "pod.toml"
    metrics = f"127.0.0.1:{free_tcp_port()}"  # parallel daemons must not share 9108
    extra = ["--profile", "small", "--write-config", str(config), "--mqtt-url", mosquitto.url,
             "--pod-id", "pod-safety", "--metrics-listen", metrics, *sim_args]  # fmt: skip
    async with running_sim(state, free_tcp_port(), extra) as sim:
        text = config.read_text()
        for pattern, faster in _FASTER.items():
            text = re.sub(pattern, faster, text)
        config.write_text(edit(text) if edit else text)
        async with running_daemon(config) as daemon:
            await wait_until(
                lambda: all(r.state is DeviceState.ONLINE for r in daemon.store.devices()),
                timeout_s=30,
            )
            yield Pod(sim, daemon, tmp_path)


@pytest.fixture
async def pod(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Pod]:
    async with open_pod(tmp_path, mosquitto) as opened:
        yield opened
