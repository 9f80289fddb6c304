"""Fuzzing the local API's request parser and handling (megapodd/api/server.py)
with the daemon's real commands: any line gets a JSON reply with "ok", never
an exception, never a NaN in the reply, and a reader never gets an action done."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from megapodd.app import Daemon
from megapodd.commands.caller import Caller, Role
from megapodd.commands.payload import MAX_REQUEST_BYTES, loads_strict
from megapodd.config import load_config

pytestmark = pytest.mark.fuzz

COMMANDS = ["status", "events", "outlet", "server", "outputs", "override", "release",
            "interlocks", "reset", "rack", "loops", "setpoint"]  # fmt: skip
ARG_NAMES = ["device", "output", "value", "duration_s", "pdu", "outlet", "action", "server",
             "interlock", "count", "rack", "loop", "setpoint", "request_id"]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats()  # NaN and infinities included: json.dumps writes them as tokens
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
requests = st.fixed_dictionaries(
    {"cmd": st.sampled_from(COMMANDS) | st.text(max_size=8)},
    optional={"args": st.dictionaries(st.sampled_from(ARG_NAMES) | st.text(max_size=6), values)},
)


@st.composite
def request_lines(draw: st.DrawFn) -> bytes:
    line = json.dumps(draw(requests | values)).encode()
    if draw(st.booleans()):  # and some damage
        data = bytearray(line)
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, max(len(data) - 1, 0)))
            data[pos:pos + draw(st.integers(0, 2))] = draw(st.binary(max_size=3))
        line = bytes(data)
    return line


@given(st.binary(max_size=300) | request_lines())
@example(b"[" * 100_000)
@example(b"[" * 60_000)  # under the size limit, past the recursion limit
@example(b'{"cmd": "status", "args": {"count": 1' + b"0" * 5000 + b"}}")
@example(b'{"cmd": 1e999}')
@example(b"\xef\xbb\xbf{}")
def test_the_parser_raises_only_value_error_and_never_returns_nan(line: bytes) -> None:
    try:
        parsed = loads_strict(line)
    except ValueError as exc:
        assert str(exc)
        return
    json.dumps(parsed, allow_nan=False)  # raises if a NaN or infinity got through


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    config = tmp_path / "megapodd.toml"
    config.write_text(
        '[pod]\nid = "pod-fuzz"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
        f'[api]\nsocket = "{tmp_path / "d.sock"}"\n[state]\ndir = "{tmp_path / "state"}"\n'
    )
    return Daemon(load_config(config), config_path=config)


ADMIN = Caller(uid=0, pid=1, role=Role.ADMIN)
READER = Caller(uid=65534, pid=2, role=Role.READER)
ACTING = {"outlet", "server", "override", "release", "reset", "rack", "setpoint"}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=request_lines(), as_admin=st.booleans())
@example(line=b'{"cmd": "outlet", "args": {"device": Infinity}}', as_admin=False)
@example(line=b'{"cmd": []}', as_admin=False)
async def test_any_request_gets_a_json_reply_and_readers_never_act(
    daemon: Daemon, line: bytes, as_admin: bool
) -> None:
    caller = ADMIN if as_admin else READER
    async with asyncio.timeout(5):
        reply = await daemon.api._handle(line[:MAX_REQUEST_BYTES], caller)
    assert isinstance(reply.get("ok"), bool)
    if not reply["ok"]:
        assert isinstance(reply.get("error"), str) and reply["error"]
    encoded = json.dumps(reply, allow_nan=False)  # what goes back on the socket
    assert "\n" not in encoded  # one line: the framing of the protocol
    try:
        request = loads_strict(line[:MAX_REQUEST_BYTES])  # as the server reads it
    except ValueError:
        return
    cmd = request.get("cmd") if isinstance(request, dict) else None
    if caller is READER and isinstance(cmd, str) and cmd in ACTING:
        assert reply == {"ok": False, "error": f"{cmd!r} needs the admin role"}
