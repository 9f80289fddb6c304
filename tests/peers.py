"""The real peer tools as tests use them: mbpoll for the CDU's registers and
snmpget for a PDU's outlet state, read from outside the daemon."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import communicate

RPDU2_OUTLET_STATE = "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5"
# "[102]: \t7000": mbpoll prints each register unsigned.
_MBPOLL_LINE = re.compile(r"^\[(\d+)\]:\s+(\d+)", re.MULTILINE)


async def run_tool(
    *argv: str, env: dict[str, str] | None = None, timeout_s: float = 15.0
) -> tuple[int, str, str]:
    """Run a peer tool to completion: (exit code, stdout, stderr). Never leaves it running."""
    tool = shutil.which(argv[0])
    assert tool is not None, f"{argv[0]} is not installed: run scripts/bootstrap"
    proc = await asyncio.create_subprocess_exec(
        tool, *argv[1:], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    code, out, err = await communicate(proc, timeout_s)
    return code, out.decode(), err.decode()


async def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    code, out, err = await run_tool(*argv, env=env)
    assert code == 0, f"{argv[0]} failed: {out} {err}"
    return out


async def mbpoll_holding(port: int, address: int, count: int = 1) -> list[int]:
    """Holding registers read with mbpoll (protocol addresses, as DEVICES.md gives them)."""
    return await _mbpoll_read(port, "4", address, count)


async def mbpoll_input(port: int, address: int, count: int = 1) -> list[int]:
    """Input registers read with mbpoll (protocol addresses, as DEVICES.md gives them)."""
    return await _mbpoll_read(port, "3", address, count)


async def _mbpoll_read(port: int, table: str, address: int, count: int) -> list[int]:
    out = await _run(
        "mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-t", table, "-0", "-1",
        "-r", str(address), "-c", str(count), "127.0.0.1",
    )
    return [int(value) for _, value in _MBPOLL_LINE.findall(out)]


async def mbpoll_write_holding(port: int, address: int, value: int) -> None:
    """One holding register written with mbpoll, as a BMS or a technician's laptop would."""
    await _run(
        "mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-t", "4", "-0", "-1",
        "-r", str(address), "127.0.0.1", str(value),
    )


async def snmpget_outlet(port: int, outlet: int, scratch: Path) -> str:
    """An outlet's state as net-snmp's snmpget reads it: "on" or "off"."""
    [state] = await snmpget_outlets(port, [outlet], scratch)
    return state


async def snmpget_outlets(port: int, outlets: Sequence[int], scratch: Path) -> list[str]:
    """Outlets' states in one snmpget request: "on" or "off" each, in order."""
    values = await snmpget_values(port, [f"{RPDU2_OUTLET_STATE}.{o}" for o in outlets], scratch)
    return [{"1": "off", "2": "on"}[value] for value in values]


async def snmpget_values(port: int, oids: Sequence[str], scratch: Path) -> list[str]:
    """The values of `oids` as net-snmp's snmpget prints them (-Oqv), in order."""
    scratch = scratch / "snmp-tools"  # kept away from ~/.snmp and /var/lib/snmp
    scratch.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "SNMPCONFPATH": str(scratch),
        "SNMP_PERSISTENT_DIR": str(scratch / "persist"),
        "MIBS": "",
        "MIBDIRS": str(scratch),
    }
    out = await _run("snmpget", "-v2c", "-c", "public", "-Oqv", f"127.0.0.1:{port}", *oids, env=env)
    return [line.strip() for line in out.splitlines()]
