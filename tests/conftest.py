"""Fixtures shared by every test: leak checks, free ports, a private mosquitto."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers import MosquittoBroker, child_pids, free_tcp_port, wait_tcp_port
from tests.other_uid import OtherUidCli, readable_megapodctl

# Property tests: a bounded, repeatable run in the suite; HYPOTHESIS_PROFILE=long
# for a long random search (`HYPOTHESIS_PROFILE=long pytest -m fuzz`).
settings.register_profile("suite", max_examples=300, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=50_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith("asyncio_")
    ]
    # Threads from the loop's default executor end with the loop; give them a moment.
    for thread in leaked:
        thread.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test left threads running: {still}"


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks behind on its loop."""
    yield
    current = asyncio.current_task()
    # Let tasks that were cancelled at teardown finish unwinding.
    for _ in range(3):
        await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftover, f"test left tasks running: {[t.get_name() for t in leftover]}"


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves child processes running."""
    before = child_pids()
    yield
    leaked = child_pids() - before
    assert not leaked, f"test left child processes: {sorted(leaked)}"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A mosquitto of the tests' own on a free port (1883 may belong to someone else)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(binary):
        pytest.fail("mosquitto is not installed: run scripts/bootstrap")
    workdir: Path = tmp_path_factory.mktemp("mosquitto")
    port = free_tcp_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_tcp_port("127.0.0.1", port, timeout_s=10.0)
        yield MosquittoBroker(host="127.0.0.1", port=port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="session")
def other_uid_cli() -> Iterator[OtherUidCli]:
    """megapodctl runnable by any uid, also from a checkout in a private directory."""
    with readable_megapodctl() as cli:
        yield cli
