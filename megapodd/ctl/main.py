"""megapodctl's entry point: one command, one exit code, and on failure one
line that says what is wrong and what to try. Never a traceback (set
MEGAPODCTL_DEBUG=1 to see one for a bug of megapodctl's own)."""

from __future__ import annotations

import asyncio
import os
import select
import sys
from collections.abc import Sequence

from rich.console import Console

from megapodd.api.client import (
    ApiClientError,
    DaemonNotRunning,
    DaemonTimeout,
    DaemonUnreachable,
    SocketNotPermitted,
)
from megapodd.ctl.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, UsageError
from megapodd.ctl.parser import build_parser


def _what_to_try(exc: ApiClientError) -> str:
    """The next step for the person at the keyboard, after megapodd's own words."""
    if isinstance(exc, DaemonNotRunning):
        return "is it started (systemctl status megapodd)? Else name its socket with --socket"
    if isinstance(exc, DaemonTimeout):
        return "it may be busy or hung (journalctl -u megapodd); a longer --timeout waits more"
    if isinstance(exc, SocketNotPermitted):
        return "members of the megapod group may read: usermod -aG megapod $USER, log in again"
    if "needs the admin role" in str(exc):
        return "members of megapod-admin may act"
    return ""


def _say(exc: BaseException, hint: str = "") -> None:
    line = " ".join(str(exc).split())  # one line, whatever megapodd sent
    print(f"megapodctl: {line}" + (f"; {hint}" if hint else ""), file=sys.stderr)


def _stdout_closed() -> bool:
    """Nobody reads our stdout any more (`megapodctl status --json | head` is
    done): poll() reports POLLERR on a pipe whose reader has gone."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage mistake exits 2 here
    console = Console(highlight=False)
    try:
        return int(asyncio.run(args.func(args, console)))
    except UsageError as exc:
        _say(exc)
        return EXIT_USAGE
    except DaemonUnreachable as exc:
        _say(exc, _what_to_try(exc))
        return EXIT_UNREACHABLE
    except ApiClientError as exc:
        _say(exc, _what_to_try(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        if args.command == "watch" or getattr(args, "follow", False):
            return EXIT_OK  # how a watch or a --follow ends
        print("megapodctl: interrupted before megapodd answered", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BrokenPipeError:
        if not _stdout_closed():  # never the socket: the client turns its errors into ours
            print("megapodctl: broken pipe while talking to megapodd", file=sys.stderr)
            return EXIT_UNREACHABLE
        # The answer arrived and `| head` took what it wanted; keep the exit-time
        # flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug of ours, or an answer of a shape we do not know
        if os.environ.get("MEGAPODCTL_DEBUG"):
            raise
        print(
            f"megapodctl: {type(exc).__name__}: {exc}; a megapodctl bug: "
            "MEGAPODCTL_DEBUG=1 shows where",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
