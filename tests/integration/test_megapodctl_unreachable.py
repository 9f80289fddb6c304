"""megapodctl when megapodd does not answer (issue 14, finding 4): exit 3 and one
clear line, never 0 for an action that got no reply; 1 for a refusal; and the
`| head` path (a closed stdout) still exits 0 quietly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from megapodd.api import client
from megapodd.ctl import main as cli
from tests.daemon_helpers import megapodctl

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
OUTLET_OFF = ("outlet", "pdu1", "3", "off")

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FakeDaemon:
    """A socket that behaves in one bad way; counts the connections it saw."""

    def __init__(self, path: Path, serve: Serve) -> None:
        self.path = path
        self.connections = 0
        self._serve = serve

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _close_at_once(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    """Accept and close before reading anything: the EPIPE race."""


async def _read_then_close(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    await reader.readline()


async def _read_then_hang(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    await reader.read()  # never answer; return once megapodctl gives up and closes


async def _answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.write(b"<html>not megapodd</html>\n")
    await writer.drain()


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.write(b'{"ok": false, "error": "no PDU \'pdu1\'"}\n')
    await writer.drain()


async def _big_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    result = {"pod": {"id": "pod-big"}, "devices": [{"id": f"d{i}"} for i in range(20_000)]}
    writer.write(json.dumps({"ok": True, "result": result}).encode() + b"\n")
    await writer.drain()


@contextlib.asynccontextmanager
async def _fake(tmp_path: Path, serve: Serve) -> AsyncIterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path / "fake.sock", serve)
    server = await asyncio.start_unix_server(fake._handle, path=str(fake.path))
    try:
        yield fake
    finally:
        server.close()
        await server.wait_closed()


def _one_clear_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("megapodctl: "), err
    assert "Traceback" not in err
    return lines[0]


async def test_no_socket_and_a_refused_socket_exit_3(tmp_path: Path) -> None:
    code, out, err = await megapodctl("--socket", str(tmp_path / "none.sock"), *OUTLET_OFF)
    assert (code, out) == (3, "")
    assert "is not running at" in _one_clear_line(err) and "No such file" in err

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening: connect is refused
    code, out, err = await megapodctl("--socket", str(stale), "status")
    assert (code, out) == (3, "")
    assert "Connection refused" in _one_clear_line(err)


async def test_a_daemon_that_closes_before_reading_never_gives_exit_0(tmp_path: Path) -> None:
    async with _fake(tmp_path, _close_at_once) as fake:
        runs = [megapodctl("--socket", str(fake.path), *OUTLET_OFF) for _ in range(24)]
        results = []
        for batch in range(0, len(runs), 6):
            results += await asyncio.gather(*runs[batch : batch + 6])
        assert fake.connections == 24
        for code, out, err in results:
            assert (code, out) == (3, ""), (code, out, err)
            line = _one_clear_line(err)
            assert "closed the connection" in line


def test_the_epipe_race_itself_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon has closed the connection before megapodctl writes: forced
    by closing the accepted side between connect and write."""
    path = tmp_path / "race.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    connect = client._connect

    async def connect_then_daemon_closes(socket_path: Path) -> socket.socket:
        sock = await connect(socket_path)
        accepted, _ = listener.accept()
        accepted.close()
        return sock

    monkeypatch.setattr(client, "_connect", connect_then_daemon_closes)
    try:
        code = cli.main(["--socket", str(path), *OUTLET_OFF])
    finally:
        listener.close()
    captured = capsys.readouterr()
    assert code == 3 and captured.out == ""
    line = _one_clear_line(captured.err)
    assert "closed the connection" in line


@pytest.mark.parametrize(
    ("serve", "args", "code", "message"),
    [
        (_read_then_close, OUTLET_OFF, 3, "the request was sent: whether it ran is unknown"),
        (_read_then_hang, ("--timeout", "0.5", *OUTLET_OFF), 3, "did not answer in 0.5 s"),
        (_answer_garbage, OUTLET_OFF, 3, "answered with no JSON"),
        (_refuse, OUTLET_OFF, 1, "megapodctl: no PDU 'pdu1'"),
    ],
)
async def test_each_way_of_not_answering_has_its_exit_code(
    tmp_path: Path, serve: Serve, args: tuple[str, ...], code: int, message: str
) -> None:
    async with _fake(tmp_path, serve) as fake:
        got, out, err = await megapodctl("--socket", str(fake.path), *args)
        assert (got, out) == (code, ""), (got, out, err)
        assert message in _one_clear_line(err)


async def test_a_closed_stdout_after_the_answer_still_exits_0(tmp_path: Path) -> None:
    async with _fake(tmp_path, _big_status) as fake:
        # As an operator would: head exits after 100 bytes, megapodctl's next write fails.
        pipeline = (
            '"$0" --socket "$1" status --json 2>"$2" | head -c 100 >"$3"; echo "${PIPESTATUS[0]}"'
        )
        err, head = tmp_path / "err", tmp_path / "head"
        shell = await asyncio.create_subprocess_exec(
            "bash", "-c", pipeline, str(BIN / "megapodctl"), str(fake.path), str(err), str(head),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            out, _ = await shell.communicate()
        assert head.read_bytes().startswith(b"{") and len(head.read_bytes()) == 100
        assert int(out) == 0, err.read_text()
        assert err.read_text() == ""
