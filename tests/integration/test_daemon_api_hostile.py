"""The local API cannot be locked (issue 14, finding 3): 64 hostile local clients
(idle ones, ones that send requests and never read, ones that flood) leave root's
and another reader's `megapodctl status` answering within 2 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from megapodd.api import server
from tests.daemon_helpers import megapodctl, running_daemon, write_config
from tests.helpers import MosquittoBroker, stop_processes, wait_until
from tests.other_uid import OtherUidCli, run_as

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients as other users"),
]

# Standard library only: it runs as another uid with the system interpreter.
# Each kind reconnects at once whenever the daemon refuses or drops it; the
# first refusal and the first drop of a never-reading client are announced.
HOSTILE = r"""
import asyncio, signal, sys

path, per_kind = sys.argv[1], int(sys.argv[2])
seen = set()
counts = {"refused": 0, "dropped": 0, "connections": 0}

def note(what):
    counts[what] += 1
    if what not in seen:
        seen.add(what)
        print(what, flush=True)

async def connect():
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
    counts["connections"] += 1
    return reader, writer

async def first_line(reader):
    line = await reader.readline()
    if b"too many" in line:
        note("refused")
        return None
    return line

async def idle():
    reader, writer = await connect()
    await first_line(reader)  # a refusal, or the end at the idle timeout
    writer.close()

async def never_reads():
    reader, writer = await connect()
    try:
        while True:  # pipelined requests; the replies are never read
            writer.write(b'{"cmd":"status"}\n' * 32)
            await writer.drain()
    except ConnectionError:
        note("dropped")

async def ping_pong():
    reader, writer = await connect()
    while True:
        writer.write(b'{"cmd":"status"}\n')
        await writer.drain()
        if await first_line(reader) is None:
            return

async def garbage():
    reader, writer = await connect()
    while True:  # one endless line: refused as too long, then again
        writer.write(b"x" * 65536)
        await writer.drain()

async def churn():
    reader, writer = await connect()
    writer.close()

async def forever(kind):
    while True:
        try:
            await kind()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        await asyncio.sleep(0)

async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    kinds = [idle, never_reads, ping_pong, garbage]
    tasks = [asyncio.ensure_future(forever(k)) for k in kinds for _ in range(per_kind)]
    tasks += [asyncio.ensure_future(forever(churn)) for _ in range(2)]
    await stop.wait()
    print("counts", " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)

asyncio.run(main())
"""

HOSTILE_UIDS = (65534, 65532)  # nobody and an unnamed uid, both in the reader group
READER_UID = 65533  # a third reader, the one whose status must still answer
PER_KIND = 8  # 4 kinds x 8 x 2 uids = 64 clients, plus connect/close churn


@contextlib.asynccontextmanager
async def _hostile(cli: OtherUidCli, uid: int, sock: Path) -> AsyncIterator[asyncio.StreamReader]:
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    proc = await asyncio.create_subprocess_exec(
        setpriv, f"--reuid={uid}", "--regid=nogroup", "--clear-groups",
        cli.python, "-S", "-c", HOSTILE, str(sock), str(PER_KIND),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        yield proc.stdout
    finally:
        await stop_processes(proc, timeout_s=5)


async def _announced(stream: asyncio.StreamReader, *words: str) -> None:
    wanted = set(words)
    async with asyncio.timeout(15):
        while wanted:
            line = (await stream.readline()).decode().strip()
            assert line, "the hostile client ended"
            wanted.discard(line)


async def test_hostile_local_clients_leave_root_and_readers_answered(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    other_uid_cli: OtherUidCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A shorter write timeout so the test sees never-reading clients dropped.
    monkeypatch.setattr(server, "WRITE_TIMEOUT_S", 1.0)
    with tempfile.TemporaryDirectory(prefix="megapodd-hostile-") as public:
        os.chmod(public, 0o755)  # noqa: S103 - the other uids must reach the socket
        sock = Path(public) / "d.sock"
        config = write_config(tmp_path, mosquitto, "pod-hostile")
        text = config.read_text().replace(
            f'socket = "{tmp_path / "d.sock"}"', f'socket = "{sock}"\nreader_group = "nogroup"'
        )
        config.write_text(text)
        async with running_daemon(config):
            await wait_until(sock.exists, timeout_s=5)
            async with (
                _hostile(other_uid_cli, HOSTILE_UIDS[0], sock) as first,
                _hostile(other_uid_cli, HOSTILE_UIDS[1], sock) as second,
            ):
                # Both are at their per-uid limit, and the daemon has dropped a
                # client that would not read its replies.
                await _announced(first, "refused", "dropped")
                await _announced(second, "refused", "dropped")
                root_s, reader_s = [], []
                for _ in range(3):
                    started = time.monotonic()
                    code, out, err = await megapodctl("--socket", str(sock), "status", "--json")
                    root_s.append(time.monotonic() - started)
                    assert code == 0, err
                    assert json.loads(out)["pod"]["id"] == "pod-hostile"

                    started = time.monotonic()
                    code, out = await run_as(
                        other_uid_cli, READER_UID, "nogroup", "--socket", str(sock), "status"
                    )
                    reader_s.append(time.monotonic() - started)
                    assert code == 0, out
                    assert "pod-hostile" in out
                print(f"root status {max(root_s):.2f} s, reader status {max(reader_s):.2f} s")
                assert max(root_s) < 2.0, root_s
                assert max(reader_s) < 2.0, reader_s
