"""Fuzzing the fleet's MQTT command payloads (megapodd/mqtt/command_subscription.py,
megapodd/commands/payload.py) with the daemon's real commands: any verb and
payload gets a reply (ok, or refused with the error), never an exception, and
the reply is JSON without NaN."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from megapodd.app import Daemon
from megapodd.config import load_config
from megapodd.mqtt.command_subscription import CommandSubscription

pytestmark = pytest.mark.fuzz

VERBS = ["outlet", "server", "override", "release", "status", "reset", "cmd"]
ARGS = ["request_id", "device", "output", "value", "duration_s", "pdu", "outlet", "action",
        "server"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
objects = st.dictionaries(st.sampled_from(ARGS) | st.text(max_size=5), values, max_size=6)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    data = bytearray(json.dumps(draw(objects | values)).encode())
    for _ in range(draw(st.integers(0, 3))):  # and some damage
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        data[pos : pos + draw(st.integers(0, 2))] = draw(st.binary(max_size=3))
    return bytes(data)


@pytest.fixture
def fleet(tmp_path: Path) -> CommandSubscription:
    config = tmp_path / "megapodd.toml"
    config.write_text(
        '[pod]\nid = "pod-fuzz"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\ncommands = true\n'
        f'[api]\nsocket = "{tmp_path / "d.sock"}"\n[state]\ndir = "{tmp_path / "state"}"\n'
    )
    daemon = Daemon(load_config(config), config_path=config)
    return CommandSubscription(daemon.commands.commands(), None, "megapod/v1")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    verb=st.sampled_from(VERBS) | st.text(max_size=8),
    payload=payloads() | st.binary(max_size=200),
)
@example(verb="outlet", payload=b'{"request_id": "a", "pdu": NaN}')
@example(verb="override", payload=b'{"request_id": "b", "value": 1e999}')
@example(verb="outlet", payload=b"[" * 70_000)
@example(verb="server", payload=b'{"request_id": ["x"]}')
async def test_any_fleet_payload_gets_a_reply_never_an_exception(
    fleet: CommandSubscription, verb: str, payload: bytes
) -> None:
    async with asyncio.timeout(5):
        reply = await fleet._run(verb, payload)
    assert isinstance(reply.get("ok"), bool)
    if not reply["ok"]:
        assert isinstance(reply.get("error"), str) and reply["error"]
    json.dumps(reply, allow_nan=False)
