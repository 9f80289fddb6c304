"""A console server in the path (socat): the driver over socket://, ipmitool over a socat pty."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.base import Quality
from drivers.errors import TransportError
from drivers.ipmi.bmc import BmcDriver
from sim_devices.bmc import BmcSpec, BmcState, serve_bmcs
from tests.helpers import communicate, free_tcp_port, stop_processes, wait_until

pytestmark = pytest.mark.interop

SOCAT = shutil.which("socat")
IPMITOOL = shutil.which("ipmitool")


@asynccontextmanager
async def socat(*addresses: str) -> AsyncIterator[None]:
    if SOCAT is None:
        pytest.fail("socat is not installed: run scripts/bootstrap")
    proc = await asyncio.create_subprocess_exec(
        SOCAT, *addresses, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield
    finally:
        await stop_processes(proc, timeout_s=5)


async def test_driver_through_a_tcp_console_server(tmp_path: Path) -> None:
    state = BmcState(placeholder_physics=False)
    state.gpu_temps_c[2] = 71.5
    farm = await serve_bmcs([BmcSpec("srv", state)], tmp_path)
    port = free_tcp_port()
    try:
        # socat plays ser2net: TCP port <-> the BMC's serial line (raw, no echo). It serves
        # one connection, so the driver's first successful connect is the one that counts.
        async with socat(
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", f"FILE:{farm['srv'].path},raw,echo=0"
        ):
            driver = BmcDriver(f"socket://127.0.0.1:{port}", timeout_s=1.0)
            try:
                await wait_until(lambda: _try_connect(driver), timeout_s=10)
                points = await driver.read_group("sensors")
                assert points["gpu3_temp_c"].value == 71.5
                assert all(p.quality is Quality.GOOD for p in points.values())
                await driver.chassis_control("off")
                assert state.chassis_on is False
            finally:
                await driver.close()
    finally:
        await farm.close()


async def _try_connect(driver: BmcDriver) -> bool:
    try:
        await driver.connect()
    except TransportError:  # socat may not be listening yet: try again
        await driver.close()
        return False
    return True


async def test_ipmitool_through_a_socat_pty_to_the_tcp_port(tmp_path: Path) -> None:
    if IPMITOOL is None:
        pytest.fail("ipmitool is not installed: run scripts/bootstrap")
    state = BmcState(placeholder_physics=False, psu_power_w=6400.0)
    port = free_tcp_port()
    farm = await serve_bmcs([BmcSpec("srv", state, tcp_port=port)], tmp_path)
    link = tmp_path / "console.tty"
    try:
        async with socat(f"PTY,link={link},raw,echo=0", f"TCP:127.0.0.1:{port}"):
            await wait_until(link.exists, timeout_s=10)
            proc = await asyncio.create_subprocess_exec(
                IPMITOOL,
                "-I",
                "serial-terminal",
                "-D",
                f"{link}:115200",
                "dcmi",
                "power",
                "reading",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            code, out, err = await communicate(proc, timeout_s=30)
            assert code == 0, err.decode()
            assert re.search(r"Instantaneous power reading:\s+6400 Watts", out.decode())
    finally:
        await farm.close()
