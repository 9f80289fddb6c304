"""The leak-check fixtures themselves must catch leaks."""

from __future__ import annotations

import asyncio

from tests.helpers import child_pids


async def test_tasks_finishing_in_time_are_not_leaks() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    assert task.done()


def test_child_pids_sees_a_child() -> None:
    import subprocess

    proc = subprocess.Popen(["sleep", "5"])
    try:
        assert proc.pid in child_pids()
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in child_pids()
