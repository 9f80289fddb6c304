"""SNMP benchmark: 16 simulated PDUs × 48 outlets, full reads by our driver and by pysnmp.

The agents run in a subprocess (`python -m sim_devices.pdu`); this process is
the client. A full PDU read is both driver groups: 15 fast points (device and
phases) + 144 outlet points (state, current, power) = 159 values. CPU is
time.process_time() in each process. Our driver is paced at 1 Hz per PDU for
--seconds; pysnmp (hlapi, the usual way to use it) reads the same OIDs, once
with one GET per table and once with GETBULK per column, for --pysnmp-rounds
rounds over all PDUs (it is too slow to pace at 1 Hz).

Usage: .venv/bin/python -m bench.bench_snmp [--seconds 10] [--pysnmp-rounds 2]
Writes the report to bench/results/snmp.md and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.snmp.ber import Oid, format_oid
from drivers.snmp.rack_pdu import SnmpPduDriver

ROOT = Path(__file__).resolve().parent.parent
PDUS = 16
OUTLETS = 48
RPDU2 = (1, 3, 6, 1, 4, 1, 318, 1, 1, 26)


@dataclass
class Result:
    name: str
    requests_per_read: list[int] = field(default_factory=list)
    client_cpu_ms: list[float] = field(default_factory=list)
    agent_cpu_ms_total: float = 0.0
    values_per_read: int = 0
    wall_s: float = 0.0

    @property
    def reads(self) -> int:
        return len(self.client_cpu_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.client_cpu_ms)

    @property
    def p90_ms(self) -> float:
        return statistics.quantiles(self.client_cpu_ms, n=10)[-1]

    @property
    def agent_ms(self) -> float:
        return self.agent_cpu_ms_total / max(self.reads, 1)


class SimProcess:
    """The simulated PDU farm in its own process, with a tiny stdin/stdout protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, ports: dict[str, int]) -> None:
        self.proc = proc
        self.ports = ports

    @classmethod
    async def start(cls) -> SimProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sim_devices.pdu",
            "--count",
            str(PDUS),
            "--outlets",
            str(OUTLETS),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        return cls(proc, json.loads(line))

    async def cpu_s(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"cpu\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(10):
            return float(json.loads(await self.proc.stdout.readline())["cpu_s"])

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def bench_ours(sim: SimProcess, seconds: int, version: str) -> Result:
    extra: dict[str, Any] = {}
    if version == "3":
        extra = {
            "user": "megapod",
            "auth_passphrase": "megapod-auth-pass",
            "priv_passphrase": "megapod-priv-pass",
        }
    drivers = [
        SnmpPduDriver(host="127.0.0.1", port=port, version=version, outlets=OUTLETS, **extra)
        for port in sim.ports.values()
    ]
    label = "ours (lean BER), GET per group" + (
        ", v3 authPriv SHA/AES" if version == "3" else ", v2c"
    )
    result = Result(label)
    loop = asyncio.get_running_loop()
    for d in drivers:
        await d.connect()
    try:
        agent0 = await sim.cpu_s()
        wall0 = loop.time()
        for tick in range(seconds):
            for d in drivers:
                r0, c0 = d.stats.requests_sent, time.process_time()
                fast = await d.read_group("fast")
                slow = await d.read_group("slow")
                result.client_cpu_ms.append((time.process_time() - c0) * 1000)
                result.requests_per_read.append(d.stats.requests_sent - r0)
                result.values_per_read = len(fast) + len(slow)
            await asyncio.sleep(max(0.0, wall0 + tick + 1 - loop.time()))  # 1 Hz per PDU
        result.wall_s = loop.time() - wall0
        result.agent_cpu_ms_total = (await sim.cpu_s() - agent0) * 1000
    finally:
        for d in drivers:
            await d.close()
    return result


def _oids() -> tuple[list[Oid], list[Oid], list[Oid]]:
    layout = SnmpPduDriver(host="127.0.0.1", outlets=OUTLETS)
    fast, slow = layout.group_oids("fast"), layout.group_oids("slow")
    columns: list[Oid] = [(*RPDU2, 9, 2, 3, 1, 5), (*RPDU2, 9, 4, 3, 1, 6), (*RPDU2, 9, 4, 3, 1, 7)]
    return fast, slow, columns


async def bench_pysnmp(sim: SimProcess, rounds: int, bulk: bool) -> Result:
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        bulk_cmd,
        get_cmd,
    )

    fast, slow, columns = _oids()
    engine = SnmpEngine()
    auth = CommunityData("public", mpModel=1)  # noqa: S508 - v2c, like our driver's run
    targets = [
        await UdpTransportTarget.create(("127.0.0.1", port), timeout=2, retries=1)
        for port in sim.ports.values()
    ]
    name = "pysnmp 7.1 hlapi, " + ("GET fast + GETBULK per column" if bulk else "GET per group")
    result = Result(name)

    def objects(oids: list[Oid]) -> list[Any]:
        return [ObjectType(ObjectIdentity(format_oid(o))) for o in oids]

    async def read(target: Any) -> tuple[int, int]:
        requests = 0
        values = 0
        err, status, _, vbs = await get_cmd(engine, auth, target, ContextData(), *objects(fast))
        requests += 1
        assert not err and not int(status), (err, status)
        values += len(vbs)
        if bulk:
            for column in columns:
                err, status, _, vbs = await bulk_cmd(
                    engine, auth, target, ContextData(), 0, OUTLETS, *objects([column])
                )
                requests += 1
                assert not err and not int(status), (err, status)
                values += len(vbs)
        else:
            err, status, _, vbs = await get_cmd(engine, auth, target, ContextData(), *objects(slow))
            requests += 1
            assert not err and not int(status), (err, status)
            values += len(vbs)
        return requests, values

    loop = asyncio.get_running_loop()
    try:
        await read(targets[0])  # warm-up: MIB loading happens once
        agent0 = await sim.cpu_s()
        wall0 = loop.time()
        for _ in range(rounds):
            for target in targets:
                c0 = time.process_time()
                requests, values = await read(target)
                result.client_cpu_ms.append((time.process_time() - c0) * 1000)
                result.requests_per_read.append(requests)
                result.values_per_read = values
        result.wall_s = loop.time() - wall0
        result.agent_cpu_ms_total = (await sim.cpu_s() - agent0) * 1000
    finally:
        engine.close_dispatcher()
    return result


def report(results: list[Result], args: argparse.Namespace) -> str:
    ours = results[0]
    lines = [
        "# SNMP benchmark: rack PDU reads",
        "",
        f"Command: `.venv/bin/python -m bench.bench_snmp --seconds {args.seconds} "
        f"--pysnmp-rounds {args.pysnmp_rounds}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python "
        f"{platform.python_version()}, {platform.machine()}, machine shared with other work "
        "(expect ±30 % between runs; the ratios are what matter).",
        "",
        f"{PDUS} simulated PDUs × {OUTLETS} outlets in one agent process (lean engine, "
        "`sim_devices/pdu.py`); the client in this process. A full PDU read = `fast` "
        f"(15 values) + `slow` ({3 * OUTLETS} values) = {ours.values_per_read} values. "
        "Our driver reads every PDU once a second; pysnmp reads the same OIDs back to back. "
        "Client CPU = `time.process_time()` around each read (median and p90 over all reads); "
        "agent CPU = the agent process's `process_time()` over the run / reads "
        "(includes its idle loop).",
        "",
        "| client | reads | requests / read | client CPU ms / read (median) | p90 "
        "| agent CPU ms / read |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.reads} | {statistics.median(r.requests_per_read):g} | "
            f"{r.median_ms:.2f} | {r.p90_ms:.2f} | {r.agent_ms:.2f} |"
        )
    lines.append("")
    for r in results[1:]:
        if "pysnmp" in r.name:
            lines.append(
                f"- {r.name}: {r.median_ms / ours.median_ms:.0f}× the client CPU of ours (v2c)."
            )
    busy = sum(ours.client_cpu_ms) / 1000 / ours.wall_s * 100
    agent_busy = ours.agent_cpu_ms_total / 1000 / ours.wall_s * 100
    lines += [
        f"- Ours polling {PDUS} PDUs in full at 1 Hz: client {busy:.1f} % of a core, "
        f"agents {agent_busy:.1f} % of a core.",
        "",
        "Targets: ≤ 4 round trips per full read, ≤ 3 ms CPU per read for the driver, "
        "≥ 30× less CPU than pysnmp.",
        "",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    sim = await SimProcess.start()
    try:
        runs: list[Callable[[], Awaitable[Result]]] = [
            lambda: bench_ours(sim, args.seconds, "2c"),
            lambda: bench_ours(sim, max(args.seconds // 2, 2), "3"),
            lambda: bench_pysnmp(sim, args.pysnmp_rounds, bulk=False),
            lambda: bench_pysnmp(sim, args.pysnmp_rounds, bulk=True),
        ]
        results = []
        for run in runs:
            results.append(await run())
            print(f"done: {results[-1].name}", file=sys.stderr)
    finally:
        await sim.stop()
    return report(results, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="1 Hz rounds for our driver")
    parser.add_argument(
        "--pysnmp-rounds", type=int, default=2, help="rounds over all PDUs for pysnmp"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "snmp.md")
    args = parser.parse_args()
    text = asyncio.run(main_async(args))
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
