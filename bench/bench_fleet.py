"""Fleet interface benchmark: what the full pod sends over MQTT, and what a
/metrics scrape costs.

The full profile (1 CDU, 16 PDUs × 48 outlets, 144 BMCs) runs in a
`megapod-sim` process, megapodd in another, a private mosquitto in a third. A
subscriber on `megapod/v1/<pod>/#` counts messages and bytes (topic and
payload, as the broker receives them) per topic kind over --seconds, which
should hold at least one snapshot (`snapshot_s`, 30 s); /metrics is scraped
--scrapes times, plain and gzipped. Run with the default device budget, a
tight one (1024 B/s) and none (`device_budget_bytes_per_s = 0`), to show what
the budget coalesces.

Usage: .venv/bin/python -m bench.bench_fleet [--seconds 60] [--scrapes 10]
Writes the report to bench/results/fleet.md and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from bench.pod_process import cpu_s, free_port, simulated_pod
from bench.results_file import write_results

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 161
POD = "pod-bench"


def _kind(topic: str) -> str:
    suffix = topic.split("/", 3)[3]
    return "devices/<id>/state" if suffix.startswith("devices/") else suffix


@dataclass
class Traffic:
    messages: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, topic: str, payload: bytes) -> None:
        kind = _kind(topic)
        self.messages[kind] = self.messages.get(kind, 0) + 1
        self.sizes[kind] = self.sizes.get(kind, 0) + len(topic.encode()) + len(payload)


@dataclass
class Run:
    budget: str
    seconds: float
    traffic: Traffic
    daemon_cpu_pct: float
    scrape_s: list[float]
    scrape_gzip_s: list[float]
    size_bytes: int
    gzip_bytes: int
    series: int
    coalesced: float


async def _get(port: int, gzipped: bool) -> tuple[float, bytes]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accept = b"Accept-Encoding: gzip\r\n" if gzipped else b""
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: pod\r\n" + accept + b"\r\n")
    raw = await reader.read()
    elapsed = time.perf_counter() - started
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"bench_fleet: /metrics answered {head[:60]!r}")
    return elapsed, body


async def _measure(budget: int | None, seconds: float, scrapes: int) -> Run:
    metrics_port = free_port()
    extra = ("--pod-id", POD, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    async with simulated_pod("full", DEVICES, extra, prefix="bench-fleet-") as pod:
        text = pod.config.read_text()
        if budget is not None:
            text = text.replace(
                'topic_prefix = "megapod/v1"',
                f'topic_prefix = "megapod/v1"\ndevice_budget_bytes_per_s = {budget}',
            )
        async with pod.daemon(text) as daemon:
            await asyncio.sleep(5.0)  # past the start-up transients
            traffic = Traffic()
            async with aiomqtt.Client("127.0.0.1", pod.mqtt_port) as client:
                await client.subscribe(f"megapod/v1/{POD}/#", qos=1)

                async def count() -> None:
                    async for message in client.messages:
                        if not message.retain and isinstance(message.payload, bytes):
                            traffic.add(str(message.topic), message.payload)

                counting = asyncio.create_task(count())
                cpu0, t0 = cpu_s(daemon.pid), time.monotonic()
                await asyncio.sleep(seconds)
                cpu1, t1 = cpu_s(daemon.pid), time.monotonic()
                counting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await counting
            plain: list[float] = []
            zipped: list[float] = []
            body = zbody = b""
            for _ in range(scrapes):
                elapsed, body = await _get(metrics_port, gzipped=False)
                plain.append(elapsed)
                elapsed, zbody = await _get(metrics_port, gzipped=True)
                zipped.append(elapsed)
                await asyncio.sleep(0.5)
    text = body.decode()
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    coalesced = sum(
        float(m.group(1))
        for m in re.finditer(r"^megapod_mqtt_device_updates_coalesced_total\{.*\} (\S+)$",
                             text, re.MULTILINE)
    )  # fmt: skip
    assert gzip.decompress(zbody).count(b"\n") > 0
    label = "default (4096 B/s per device)" if budget is None else f"{budget} B/s per device"
    if budget == 0:
        label = "off (0)"
    return Run(
        label, t1 - t0, traffic, 100 * (cpu1 - cpu0) / (t1 - t0), plain, zipped,
        len(body), len(zbody), series, coalesced,
    )  # fmt: skip


def _traffic_table(run: Run) -> str:
    rows = []
    total_messages = sum(run.traffic.messages.values())
    total_bytes = sum(run.traffic.sizes.values())
    for kind in sorted(run.traffic.messages, key=lambda k: -run.traffic.sizes[k]):
        rows.append(
            f"| `{kind}` | {run.traffic.messages[kind] / run.seconds:.1f} | "
            f"{run.traffic.sizes[kind] / run.seconds / 1000:.1f} |"
        )
    rows.append(
        f"| **all** | **{total_messages / run.seconds:.1f}** | "
        f"**{total_bytes / run.seconds / 1000:.1f}** |"
    )
    return "| topic | messages/s | kB/s |\n|---|---|---|\n" + "\n".join(rows)


def report(runs: list[Run], seconds: float, scrapes: int) -> str:
    load = os.getloadavg()[0]
    parts = [
        "# Fleet interface benchmark: MQTT and /metrics of the full pod",
        "",
        f"Command: `.venv/bin/python -m bench.bench_fleet --seconds {seconds:g} "
        f"--scrapes {scrapes}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; 1-minute load average {load:.2f} at the end "
        "(the machine is shared).",
        "Pod: the full simulated profile, 161 devices (1 CDU, 16 PDUs × 48 outlets, "
        "144 BMCs), 6035 points, the simulator's rules and loops; `snapshot_s` 30 s. "
        "Bytes are topic and payload as the broker receives them.",
    ]
    for run in runs:
        med, worst = statistics.median(run.scrape_s), max(run.scrape_s)
        zmed = statistics.median(run.scrape_gzip_s)
        parts += [
            "",
            f"## Device budget {run.budget}",
            "",
            f"MQTT over {run.seconds:.0f} s (live messages, retained ones at subscribe "
            "not counted):",
            "",
            _traffic_table(run),
            "",
            "Device updates coalesced by the budget "
            "(`megapod_mqtt_device_updates_coalesced_total`, all devices, since start): "
            f"{run.coalesced:.0f}. megapodd CPU during the window: "
            f"{run.daemon_cpu_pct:.1f} % of one core.",
            "",
            "| /metrics | value |",
            "|---|---|",
            f"| scrape time, plain, median / max of {scrapes} | {med * 1000:.0f} ms / "
            f"{worst * 1000:.0f} ms |",
            f"| scrape time, gzip, median | {zmed * 1000:.0f} ms |",
            f"| size, plain / gzip | {run.size_bytes / 1000:.0f} kB / "
            f"{run.gzip_bytes / 1000:.0f} kB |",
            f"| samples | {run.series} |",
        ]
    return "\n".join(parts) + "\n"


async def run(seconds: float, scrapes: int) -> str:
    runs = [await _measure(budget, seconds, scrapes) for budget in (None, 1024, 0)]
    return report(runs, seconds, scrapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scrapes", type=int, default=10)
    args = parser.parse_args()
    text = asyncio.run(run(args.seconds, args.scrapes))
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    write_results(ROOT / "bench" / "results" / "fleet.md", text)
    print(text)


if __name__ == "__main__":
    main()
