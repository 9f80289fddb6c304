"""Where megapodd's socket is, and one request to it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from megapodd.api.client import call

DEFAULT_SOCKET = Path("/run/megapodd/megapodd.sock")
# How long to wait for an answer unless --timeout says otherwise. Actions wait
# longer: an outlet reboot or a chassis cycle waits for the device itself.
READ_TIMEOUT_S = 10.0
ACTION_TIMEOUT_S = 30.0


def socket_path(args: argparse.Namespace) -> Path:
    """--socket, else $MEGAPODD_SOCKET, else the packaged daemon's socket."""
    if args.socket is not None:
        return Path(args.socket)
    return Path(os.environ.get("MEGAPODD_SOCKET", str(DEFAULT_SOCKET)))


async def ask(
    args: argparse.Namespace,
    cmd: str,
    request: Mapping[str, object] | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> Any:
    """One request; --timeout replaces the command's own timeout. The answer
    is JSON from the daemon, so it is typed as such (Any) and read by views."""
    return await call(socket_path(args), cmd, request, args.timeout_s or timeout_s)
