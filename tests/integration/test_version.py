"""`megapodd --version` and `megapodctl version` name the installed version;
megapodctl adds the running daemon's version and pod, or says it is unreachable."""

from __future__ import annotations

import asyncio
import sys
import tomllib
from pathlib import Path

import pytest

from tests.daemon_helpers import megapodctl, running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def _project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


async def test_megapodd_version_is_the_project_version() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "megapodd"),
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode() == f"megapodd {_project_version()}\n"


async def test_megapodctl_version_with_and_without_a_daemon(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    sock = tmp_path / "d.sock"
    code, out, err = await megapodctl("--socket", str(sock), "version")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"megapodctl {_project_version()}"
    assert lines[1].startswith("megapodd: unknown (megapodd is not running at")

    async with running_daemon(write_config(tmp_path, mosquitto, "pod-version")):
        await wait_until(sock.exists, timeout_s=5)
        code, out, err = await megapodctl("--socket", str(sock), "version")
    assert code == 0, err
    assert out.splitlines() == [
        f"megapodctl {_project_version()}",
        f"megapodd {_project_version()} (pod pod-version)",
    ]
