"""Roles on the local socket come from the kernel (SO_PEERCRED): a reader may
read, only admins act, and every refused action is an audited event."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from megapodd.api.client import ApiClientError, call
from tests.daemon_helpers import running_daemon, write_config
from tests.helpers import MosquittoBroker, wait_until
from tests.other_uid import OtherUidCli, run_as

pytestmark = pytest.mark.integration


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_reader_reads_and_cannot_act_and_refusals_are_audited(
    tmp_path: Path, mosquitto: MosquittoBroker, other_uid_cli: OtherUidCli
) -> None:
    # pytest's tmp_path is private to root, so the socket goes in a public directory;
    # nogroup stands in for the megapod group whose members may read.
    with tempfile.TemporaryDirectory(prefix="megapodd-roles-") as public:
        os.chmod(public, 0o755)  # noqa: S103 - the test user must reach the socket
        sock = Path(public) / "d.sock"
        config = write_config(tmp_path, mosquitto, "pod-roles")
        text = config.read_text().replace(
            f'socket = "{tmp_path / "d.sock"}"', f'socket = "{sock}"\nreader_group = "nogroup"'
        )
        config.write_text(text)
        await _check_roles(config, sock, other_uid_cli)


async def _check_roles(config: Path, sock: Path, cli: OtherUidCli) -> None:
    async def as_nobody(*args: str) -> tuple[int, str]:
        """megapodctl as user nobody, group nogroup (not root, not an admin)."""
        return await run_as(cli, "nobody", "nogroup", *args)

    async with running_daemon(config) as daemon:
        await wait_until(sock.exists, timeout_s=5)
        # The daemon gave the socket to the reader group (0660): no chmod needed.
        code, out = await as_nobody("--socket", str(sock), "status", "--json")
        assert code == 0, out
        assert json.loads(out)["pod"]["id"] == "pod-roles"

        code, out = await as_nobody("--socket", str(sock), "outlet", "pdu-x", "1", "off")
        assert code == 1 and "'outlet' needs the admin role" in out
        [refused] = [e for e in daemon.events.recent if e.type == "command_rejected"]
        assert refused.data["command"] == "outlet"
        caller = refused.data["caller"]
        assert isinstance(caller, dict)
        assert caller["role"] == "reader" and caller["uid"] == 65534

        # Resetting an interlock is an action: a reader cannot, and it is audited.
        code, out = await as_nobody("--socket", str(sock), "reset", "leak-tray-r1")
        assert code == 1 and "'reset' needs the admin role" in out
        refused = [e for e in daemon.events.recent if e.type == "command_rejected"][-1]
        assert refused.data["command"] == "reset"
        assert isinstance(refused.data["caller"], dict)
        assert refused.data["caller"]["role"] == "reader"

        # An admin's bad arguments are audited too.
        with pytest.raises(ApiClientError, match="no PDU 'pdu-x'"):
            await call(sock, "outlet", {"pdu": "pdu-x", "outlet": 1, "action": "off"})
        last = daemon.events.recent[-1]
        assert last.type == "command_rejected"
        assert isinstance(last.data["caller"], dict) and last.data["caller"]["role"] == "admin"
