"""Roles with the real megapodctl run as other uids (setpriv) against the
simulated pod: a member of the reader group reads everything and every one
of its actions is refused (exit 1) and audited; anyone else cannot read,
whether the socket's mode stops them or megapodd does."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from megapodd.app import Daemon
from tests.helpers import MosquittoBroker
from tests.integration.simulated_pod import open_pod
from tests.other_uid import OtherUidCli, run_as

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run megapodctl as other users"),
]

READS = [
    ("status", "--json"),
    ("status", "cdu1"),
    ("devices",),
    ("points", "r1s01", "--match", "gpu*"),
    ("events", "-n", "3"),
    ("interlocks",),
    ("loops", "--json"),
    ("outputs",),
    ("watch", "--count", "1"),
    ("version",),
]
ACTIONS = [
    ("outlet", "pdu-r1a", "3", "off"),
    ("server", "r1s01", "cycle"),
    ("override", "cdu1.pump_speed_pct", "80", "--for", "5m"),
    ("release", "cdu1.pump_speed_pct"),
    ("reset", "leak-tray-r1"),
    ("loop", "supply-temp", "setpoint", "31"),
    ("rack", "1", "isolate"),
]
# The API's names for the commands megapodctl sends.
SENT_AS = {"loop": "setpoint"}


async def test_readers_read_and_cannot_act_and_others_cannot_read(
    tmp_path: Path, mosquitto: MosquittoBroker, other_uid_cli: OtherUidCli
) -> None:
    # pytest's tmp_path is private to root: the socket goes in a directory any
    # uid can enter. nogroup stands in for the megapod group.
    with tempfile.TemporaryDirectory(prefix="megapodctl-roles-") as public:
        os.chmod(public, 0o755)  # noqa: S103 - the other uids must reach the socket
        sock = Path(public) / "d.sock"

        def public_socket(text: str) -> str:
            start = text.index("[api]\nsocket = ")
            end = text.index("\n", start + len("[api]\n"))
            return f'{text[:start]}[api]\nsocket = "{sock}"\nreader_group = "nogroup"{text[end:]}'

        async with open_pod(tmp_path, mosquitto, public_socket) as pod:
            await _reader(pod.daemon, str(sock), other_uid_cli)
            await _others(sock, other_uid_cli)


async def _reader(daemon: Daemon, sock: str, cli: OtherUidCli) -> None:
    """nobody in the reader group: every read works, every action is refused
    with exit 1 and one line, and audited with the caller's uid and role."""

    async def as_reader(*args: str) -> tuple[int, str]:
        return await run_as(cli, "nobody", "nogroup", "--socket", sock, *args)

    for args in READS:
        code, out = await as_reader(*args)
        assert code == 0 and "Traceback" not in out, (args, out)
    code, out = await as_reader("status", "--json")
    assert json.loads(out)["pod"]["id"] == "pod-safety"

    for args in ACTIONS:
        command = SENT_AS.get(args[0], args[0])
        code, out = await as_reader(*args)
        assert (code, out) == (
            1,
            f"megapodctl: {command!r} needs the admin role; members of megapod-admin may act\n",
        ), args
        audited = [e for e in daemon.events.recent if e.type == "command_rejected"][-1]
        caller = audited.data["caller"]
        assert audited.data["command"] == command and isinstance(caller, dict)
        assert (caller["uid"], caller["role"], caller["via"]) == (65534, "reader", "socket")
    assert daemon.interlocks.snapshot()["leak-tray-r1"]["state"] == "normal"  # type: ignore[index]


async def _others(sock: Path, cli: OtherUidCli) -> None:
    """nobody in another group: the socket's mode keeps it out; with the mode
    opened up, megapodd itself refuses it even a read."""
    code, out = await run_as(cli, "nobody", "daemon", "--socket", str(sock), "status")
    assert (code, out) == (
        1,
        f"megapodctl: no permission to open {sock}; members of the megapod group may read: "
        "usermod -aG megapod $USER, log in again\n",
    )
    os.chmod(sock, 0o666)  # noqa: S103 - past the socket's mode, to megapodd's own check
    code, out = await run_as(cli, "nobody", "daemon", "--socket", str(sock), "interlocks")
    assert (code, out) == (1, "megapodctl: 'interlocks' needs the reader role\n")
