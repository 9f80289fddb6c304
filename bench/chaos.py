"""Chaos benchmark: the small simulated pod under random faults for --minutes.

`megapod-sim` (small profile), megapodd and a mosquitto with persistence run
as separate processes. While it runs, every --fault-every-s one random fault
is injected for a while and cleared again: a device silent, garbage on a BMC
line, junk from a PDU (a meter stuck at an absurd value), or a broker restart
(SIGTERM, down for 5-15 s). Every --kill-every-s the daemon is SIGKILLed and
started again. At the start a leak in rack 2 trips its latching interlock and
is cleared (the interlock stays latched, no one resets it).

What is checked:
- truth: every point published `good` on MQTT (GPU temperatures, PDU power
  and phase currents, CDU temperatures and flow) lies within the simulator's
  true value over the 2.5 s around its reading time (sampled every 0.5 s from
  the simulator's control socket), give or take its sensor's resolution;
- events: per boot_id, every seq up to the highest received reached the
  fleet subscriber (a persistent MQTT session): no gaps;
- latches: after each restart the leak interlock is latched again;
- memory: the daemon's RSS (VmRSS) over the first and the last 5 minutes.

Usage: .venv/bin/python -m bench.chaos [--minutes 30] [--kill-every-s 180]
       [--fault-every-s 20] [--seed 1] [--out bench/results/chaos.md]
Writes the report to --out and prints it. The machine is shared: timings
are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pwd
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.results_file import write_results
from megapodd.api.client import ApiClientError, DaemonUnreachable, call
from sim_devices.control import ControlError, request

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POD = "pod-chaos"
BMCS = [f"r{r}s0{s}" for r in (1, 2) for s in range(1, 5)]
PDUS = ["pdu-r1a", "pdu-r2a"]
DEVICES = ["cdu1", *PDUS, *BMCS]
LATCHED_RULE = "leak-tray-r2"
# Absurd meter values for "PDU junk": (point, value in its unit).
PDU_JUNK = [
    ("power_w", 21474836470.0),
    ("energy_kwh", -214748364.8),
    ("phase1_voltage_v", -2.0),
    ("phase2_current_a", 900.0),
    ("phase3_power_w", 9.9e7),
]
# Sensor resolution (and the simulator's rounding) per checked point kind.
# The CDU's registers truncate (flow 35.99 reads 35.9): two counts for it.
TOLERANCE = {"gpu": 0.5, "pdu_power": 10.0, "phase_current": 0.1, "cdu_temp": 0.02, "flow": 0.2}
WINDOW_BEFORE_S, WINDOW_AFTER_S = 2.5, 1.0
# A point's ts is the end of its group's read; on a garbage line a BMC's
# sensors group takes seconds of retries, so its first readings are older.
WIDE_BEFORE_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _truth_of(status: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(device, point) -> true value, for the points the check covers."""
    truth: dict[tuple[str, str], float] = {}
    cooling = status["cooling"]
    for point in ("supply_temp_c", "return_temp_c", "flow_lpm"):
        truth[("cdu1", point)] = float(cooling[point])
    for pdu, meters in status["pdus"].items():
        truth[(pdu, "power_w")] = float(meters["power_w"])
        for p, amps in enumerate(meters["phase_current_a"], start=1):
            truth[(pdu, f"phase{p}_current_a")] = float(amps)
    for server in status["servers"]:
        for i, temp in enumerate(server["gpu_temps_c"], start=1):
            truth[(server["id"], f"gpu{i}_temp_c")] = float(temp)
    return truth


def _tolerance(point: str) -> float:
    if point.startswith("gpu"):
        return TOLERANCE["gpu"]
    if point == "power_w":
        return TOLERANCE["pdu_power"]
    if point.startswith("phase"):
        return TOLERANCE["phase_current"]
    return TOLERANCE["flow"] if point == "flow_lpm" else TOLERANCE["cdu_temp"]


@dataclass
class Chaos:
    work: Path
    minutes: float
    kill_every_s: float
    fault_every_s: float
    rng: random.Random
    mqtt_port: int = field(default_factory=_free_port)
    truth_t: list[float] = field(default_factory=list)
    truth: list[dict[tuple[str, str], float]] = field(default_factory=list)
    published: list[tuple[str, str, float, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    kills: int = 0
    latched_after_restart: list[bool] = field(default_factory=list)
    broker_restarts: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    broker: asyncio.subprocess.Process | None = None
    daemon: asyncio.subprocess.Process | None = None
    started: float = 0.0

    # -- processes ---------------------------------------------------------------------

    def _broker_conf(self) -> Path:
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.work}/\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "max_queued_messages 0\nlog_dest stderr\nlog_type error\n"
        )
        return conf

    async def start_broker(self) -> None:
        self.broker = await asyncio.create_subprocess_exec(
            "mosquitto", "-c", str(self._broker_conf()),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=0.5).close()
                return
            await asyncio.sleep(0.1)
        raise SystemExit("chaos: the broker did not start")

    async def stop_broker(self) -> None:
        if self.broker is not None and self.broker.returncode is None:
            self.broker.terminate()  # saves sessions and queued messages
            await self.broker.wait()

    async def start_daemon(self, config: Path) -> None:
        out = (self.work / "megapodd.log").open("ab")
        self.daemon = await asyncio.create_subprocess_exec(
            str(BIN / "megapodd"), "--config", str(config), stdout=out, stderr=out
        )
        out.close()

    # -- observers ---------------------------------------------------------------------

    async def sample_truth(self, control: Path, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(ControlError, KeyError, OSError):
                reply = await asyncio.to_thread(request, control, {"op": "status"})
                self.truth_t.append(time.time())
                self.truth.append(_truth_of(reply["status"]))
            await asyncio.sleep(0.5)

    async def sample_rss(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.daemon is not None and self.daemon.returncode is None:
                rss = _rss_mib(self.daemon.pid)
                if rss is not None:
                    self.rss.append((time.monotonic() - self.started, rss))
            await asyncio.sleep(5.0)

    async def subscribe(self, stop: asyncio.Event) -> None:
        """The fleet's subscriber: a persistent session, through every broker restart."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.mqtt_port, identifier=f"fleet-{POD}",
                    protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                    properties=properties,
                ) as client:  # fmt: skip
                    await client.subscribe(f"megapod/v1/{POD}/#", qos=1)
                    async for message in client.messages:
                        if isinstance(message.payload, bytes):
                            self._take(str(message.topic), json.loads(message.payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)

    def _take(self, topic: str, payload: Any) -> None:
        suffix = topic.split("/", 3)[3]
        if suffix == "events":
            self.events.append(payload)
        elif suffix.startswith("devices/") and suffix.endswith("/state"):
            device = suffix.split("/")[1]
            for name, point in payload["points"].items():
                value = point["value"]
                if point["quality"] == "good" and isinstance(value, int | float):
                    self.published.append((device, name, float(value), float(point["ts"])))

    # -- faults ------------------------------------------------------------------------

    async def _inject(self, control: Path, op: str, fault: str | None, args: list[str]) -> None:
        message = {"op": op, "fault": fault, "args": args}
        with contextlib.suppress(ControlError):
            reply = await asyncio.to_thread(request, control, message)
            if not reply.get("ok"):
                self.log.append(f"{op} {fault} {args}: {reply.get('error')}")

    async def one_fault(self, control: Path) -> None:
        kind = self.rng.choice(["silent", "garbage", "pdu-junk", "broker"])
        self.faults[kind] = self.faults.get(kind, 0) + 1
        hold_s = self.rng.uniform(8.0, 20.0)
        if kind == "broker":
            self.broker_restarts += 1
            await self.stop_broker()
            await asyncio.sleep(self.rng.uniform(5.0, 15.0))
            await self.start_broker()
            return
        if kind == "silent":
            args = [self.rng.choice(DEVICES)]
            name = "silent"
        elif kind == "garbage":
            args = [self.rng.choice(BMCS), f"{self.rng.uniform(0.1, 0.5):.2f}"]
            name = "garbage"
        else:
            point, value = self.rng.choice(PDU_JUNK)
            args = [self.rng.choice(PDUS), point, f"{value:g}"]
            name = "sensor-stuck"
        await self._inject(control, "inject", name, args)
        await asyncio.sleep(hold_s)
        await self._inject(control, "clear", name, args[:-1] if name == "garbage" else args[:2])

    async def check_latched(self, sock: Path) -> None:
        """Wait (30 s at most) for the API to show the leak interlock latched."""
        deadline = time.monotonic() + 30
        seen = "no answer"
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiClientError, DaemonUnreachable, OSError):
                snapshot = await call(sock, "interlocks", {}, timeout_s=5.0)
                states = {i.get("id"): i.get("state") for i in _instances(snapshot)}
                seen = str(states.get(LATCHED_RULE))
                if seen == "latched":
                    self.latched_after_restart.append(True)
                    return
            await asyncio.sleep(0.5)
        self.log.append(f"{LATCHED_RULE} not latched after a start: {seen}")
        self.latched_after_restart.append(False)

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> None:
        config = self.work / "pod.toml"
        await self.start_broker()
        sim_log = (self.work / "sim.log").open("wb")
        sim = await asyncio.create_subprocess_exec(
            str(BIN / "megapod-sim"), "run", "--profile", "small",
            "--state-dir", str(self.work / "sim"), "--base-port", str(_free_port()),
            "--write-config", str(config), "--pod-id", POD,
            "--mqtt-url", f"mqtt://127.0.0.1:{self.mqtt_port}", "--metrics-listen", "",
            stdout=sim_log, stderr=sim_log,
        )  # fmt: skip
        control = self.work / "sim" / "sim.sock"
        sock = self.work / "sim" / "megapodd.sock"
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            deadline = time.monotonic() + 60
            while not (config.exists() and control.is_socket()):
                if time.monotonic() > deadline:
                    raise SystemExit("chaos: the simulator did not start")
                await asyncio.sleep(0.25)
            self.started = time.monotonic()
            tasks += [
                asyncio.create_task(self.subscribe(stop), name="subscriber"),
                asyncio.create_task(self.sample_truth(control, stop), name="truth"),
                asyncio.create_task(self.sample_rss(stop), name="rss"),
            ]
            await self.start_daemon(config)
            await asyncio.sleep(15.0)  # online, past the start-up transients
            await self._inject(control, "inject", "leak", ["r2"])
            await asyncio.sleep(5.0)
            await self._inject(control, "clear", "leak", ["r2"])
            await asyncio.sleep(3.0)
            await self.check_latched(sock)
            end = self.started + 60 * self.minutes
            next_kill = time.monotonic() + self.kill_every_s
            while time.monotonic() < end:
                if time.monotonic() >= next_kill:
                    assert self.daemon is not None
                    self.daemon.kill()
                    await self.daemon.wait()
                    self.kills += 1
                    await self.start_daemon(config)
                    await self.check_latched(sock)
                    next_kill = time.monotonic() + self.kill_every_s
                    continue
                await self.one_fault(control)
                await asyncio.sleep(max(0.0, self.fault_every_s - 10.0))
            await self._inject(control, "clear", None, [])
            await asyncio.sleep(10.0)  # the last events reach the subscriber
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for proc in (self.daemon, sim):
                if proc is not None and proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        async with asyncio.timeout(15):
                            await proc.wait()
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
            await self.stop_broker()
            sim_log.close()

    # -- the verdicts ------------------------------------------------------------------

    def wrong_values(self, before_s: float) -> tuple[int, int, list[str]]:
        """Good values outside the truth over [ts - before_s, ts + WINDOW_AFTER_S]."""
        checked = 0
        wrong: list[str] = []
        for device, name, value, ts in self.published:
            lo_i = bisect_left(self.truth_t, ts - before_s)
            hi_i = bisect_right(self.truth_t, ts + WINDOW_AFTER_S)
            window = [t[(device, name)] for t in self.truth[lo_i:hi_i] if (device, name) in t]
            if len(window) < 2:
                continue
            checked += 1
            tol = _tolerance(name)
            if not min(window) - tol <= value <= max(window) + tol:
                wrong.append(
                    f"{device}.{name} = {value:g} at {ts:.1f}, true "
                    f"{min(window):g}..{max(window):g}"
                )
        return checked, len(wrong), wrong[:10]

    def lost_events(self) -> tuple[int, int, int, dict[str, list[int]]]:
        """Per boot_id, the seqs missing between 1 and the highest received
        (what a daemon had not journalled when it was SIGKILLed never existed)."""
        seen: dict[str, set[int]] = {}
        for event in self.events:
            seen.setdefault(event["boot_id"], set()).add(event["seq"])
        lost = {
            boot: sorted(set(range(1, max(seqs) + 1)) - seqs)[:10]
            for boot, seqs in seen.items()
            if set(range(1, max(seqs) + 1)) - seqs
        }
        unique = sum(len(s) for s in seen.values())
        return len(self.events), unique, len(seen), lost


def _instances(snapshot: Any) -> list[dict[str, Any]]:
    """The `interlocks` answer: instance id -> its state."""
    return list(snapshot.values()) if isinstance(snapshot, dict) else []




def report(chaos: Chaos, argv: list[str], wall_s: float) -> str:
    checked, wrong_count, wrong = chaos.wrong_values(WINDOW_BEFORE_S)
    _, wide_count, wide = chaos.wrong_values(WIDE_BEFORE_S)
    received, unique, boots, lost = chaos.lost_events()
    first = [r for t, r in chaos.rss if t <= 300]
    last = [r for t, r in chaos.rss if t >= chaos.rss[-1][0] - 300] if chaos.rss else []

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.1f}" if values else "n/a"

    lines = [
        "# Chaos benchmark: the small pod under random faults",
        "",
        f"Command: `.venv/bin/python -m bench.chaos {' '.join(argv)}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; shared with other work, so timings are noisy.",
        f"Ran {wall_s / 60:.1f} min: {chaos.kills} daemon SIGKILLs (every "
        f"{chaos.kill_every_s:g} s), {chaos.broker_restarts} broker restarts, faults "
        + ", ".join(f"{k} x{v}" for k, v in sorted(chaos.faults.items())) + ".",
        "",
        "| check | result |",
        "|---|---|",
        f"| good values checked against the simulator's truth | {checked} |",
        f"| of them off by more than the sensor's resolution, truth from {WINDOW_BEFORE_S:g} s "
        f"before to {WINDOW_AFTER_S:g} s after ts | {wrong_count} |",
        f"| the same with truth from {WIDE_BEFORE_S:g} s before ts | **{wide_count}** |",
        f"| events received (with duplicates) / unique (boot_id, seq) | {received} / {unique} |",
        f"| daemon boots seen / boots with a seq missing at the subscriber | "
        f"{boots} / **{len(lost)}** |",
        f"| `{LATCHED_RULE}` latched after start and each restart | "
        f"**{sum(chaos.latched_after_restart)} of {len(chaos.latched_after_restart)}** |",
        f"| daemon RSS, median of the first 5 min / last 5 min | "
        f"{med(first)} MiB / {med(last)} MiB |",
        "",
    ]
    if wrong:
        lines += [f"Off within {WINDOW_BEFORE_S:g} s (first 10):", "", *[f"- {w}" for w in wrong]]
        lines += [""]
    if wide:
        lines += [f"Off within {WIDE_BEFORE_S:g} s (first 10):", "", *[f"- {w}" for w in wide], ""]
    if lost:
        lines += ["Missing seqs (first 10 per boot):", ""]
        lines += [*[f"- {b}: {s}" for b, s in lost.items()], ""]
    if chaos.log:
        lines += ["Notes:", "", *[f"- {m}" for m in chaos.log[:10]], ""]
    lines += [
        "How: truth is the simulator's own state (control socket `status`) every 0.5 s; a "
        f"published good value passes if it lies within the truth over [ts − {WINDOW_BEFORE_S:g} "
        f"s, ts + {WINDOW_AFTER_S:g} s] ± its resolution (GPU 0.5 K, PDU power 10 W, "
        "phase current 0.1 A, CDU 0.02 K and 0.2 L/min: its registers truncate). Events: "
        "per boot_id, every seq from 1 to the highest one received must reach the persistent "
        "subscriber (the store-and-forward journal sends a killed boot's unsent events after "
        "the restart; what it had not journalled when SIGKILLed never existed). The daemon "
        "restarts every few minutes, so its RSS is of young processes at both ends.",
    ]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace, argv: list[str]) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    chaos = Chaos(work, args.minutes, args.kill_every_s, args.fault_every_s,
                  random.Random(args.seed))  # fmt: skip
    t0 = time.monotonic()
    await chaos.run()
    return report(chaos, argv, time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--kill-every-s", type=float, default=180.0)
    parser.add_argument("--fault-every-s", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.md")
    args = parser.parse_args()
    text = asyncio.run(main_async(args, sys.argv[1:]))
    write_results(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
