"""`megapodctl watch` on a real terminal (a tmux pane, 80 columns) against the
simulated pod: a workload step changes the pod's power in later frames, a
leak in rack 1 shows its tripped interlock (first, in the alarms), the leak
zone and the outlets it switched off; `q` ends it with exit 0, the terminal
settings as they were and the shell's screen back."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.integration.ctl_helpers import MEGAPODCTL
from tests.integration.simulated_pod import Pod

pytestmark = pytest.mark.integration

POD_POWER = re.compile(r"pod power (\d+\.\d) kW at the PDUs")


class Pane:
    """A tmux server of the test's own (its own socket) with one pane."""

    def __init__(self, tmux: str, socket: Path) -> None:
        self._tmux = tmux
        self._socket = socket

    async def run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            self._tmux, "-S", str(self._socket), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(10):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async def capture(self) -> str:
        return await self.run("capture-pane", "-p", "-t", "watch")

    async def until(self, what: str, found: re.Pattern[str] | str, timeout_s: float = 20.0) -> str:
        """The first capture in which `found` shows."""
        screen = ""
        try:
            async with asyncio.timeout(timeout_s):
                while not re.search(found, screen):
                    await asyncio.sleep(0.2)
                    screen = await self.capture()
        except TimeoutError:
            raise AssertionError(f"{what}: not on screen in {timeout_s} s:\n{screen}") from None
        return screen


@asynccontextmanager
async def tmux_pane(tmp_path: Path, command: str) -> AsyncIterator[Pane]:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail("tmux is not installed: run scripts/bootstrap")
    pane = Pane(tmux, tmp_path / "tmux.sock")
    await pane.run("new-session", "-d", "-x", "80", "-y", "48", "-s", "watch", command)
    try:
        yield pane
    finally:
        # The server detached itself (it is no child of ours): end it by its socket.
        proc = await asyncio.create_subprocess_exec(
            tmux, "-S", str(tmp_path / "tmux.sock"), "kill-server",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()


def _power_kw(screen: str) -> float:
    match = POD_POWER.search(screen)
    assert match is not None, screen
    return float(match[1])


async def test_watch_refreshes_in_place_shows_a_leak_and_q_restores_the_terminal(
    pod: Pod, tmp_path: Path
) -> None:
    before, after, code = tmp_path / "stty.before", tmp_path / "stty.after", tmp_path / "code"
    watch = shlex.join([MEGAPODCTL, "--socket", pod.sock, "watch", "--interval", "0.5s"])
    script = (
        f"stty -g > {before}; echo before-watch; {watch}; echo $? > {code}; "
        f"stty -g > {after}; echo after-watch; read -r _"
    )
    async with tmux_pane(tmp_path, f"bash --norc -c {shlex.quote(script)}") as pane:
        first = await pane.until("the first frame", "no alarms · no tripped or latched")
        assert "pod pod-safety" in first and "11/11 devices online" in first
        assert "before-watch" not in first  # the live view has the screen to itself
        for line in ("cdu1 supply", "loops supply-temp auto", "newest events"):
            assert line in first, first
        assert all(len(line) <= 80 for line in first.splitlines())
        idle_kw = _power_kw(first)

        # A workload step: later frames show the pod drawing more.
        await pod.inject("workload", "all", "90")
        busy = await pane.until(
            "more power after the workload step",
            rf"pod power (?!{re.escape(f'{idle_kw:.1f}')} )\d+\.\d kW",
        )
        assert _power_kw(busy) > idle_kw

        # A leak in rack 1's drip tray: the tripped interlock comes first.
        await pod.inject("leak", "r1")
        leak = await pane.until("the tripped interlock", r"● leak-tray-r1 tripped since")
        alarms = [line for line in leak.splitlines() if line.startswith("●")]
        assert alarms[0].startswith("● leak-tray-r1 tripped since"), alarms
        outlets = await pane.until("rack 1's outlets off", r"pdu-r1a outlets 1,")
        assert "LEAK in zone 1" in outlets

        await pane.run("send-keys", "-t", "watch", "q")
        done = await pane.until("the shell after the watch", "after-watch")
    assert code.read_text() == "0\n"
    assert after.read_text() == before.read_text()  # echo, canonical mode: as they were
    # The alternate screen is gone: the shell's own lines are back, no frame left.
    assert "before-watch" in done and "pod power" not in done
