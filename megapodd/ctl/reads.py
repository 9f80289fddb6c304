"""The read commands: ask megapodd, then print a table for people or, with
--json, megapodd's answer as it came (for scripts)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console, RenderableType

from megapodd.api.client import ApiClientError
from megapodd.ctl.daemon import ask, socket_path
from megapodd.ctl.views.devices import (
    device_points_table,
    devices_table,
    link_line,
    points_table,
    status_table,
)
from megapodd.ctl.views.events import event_line, events_table
from megapodd.ctl.views.interlocks import interlocks_table
from megapodd.ctl.views.loops import loops_table
from megapodd.ctl.views.outputs import outputs_table
from megapodd.ctl.views.power import power_view
from megapodd.ctl.views.text import clock, esc, literal
from megapodd.version import package_version

# How often `events --follow` asks for new events; the daemon keeps its last
# 500, so a second apart no event is missed at any rate it produces them.
FOLLOW_POLL_S = 1.0
RECENT_MAX = 500  # the daemon's ring of recent events


def print_json(answer: object, lines: bool = False) -> None:
    """JSON to stdout: indented, or one object a line (`--follow`)."""
    text = json.dumps(answer) if lines else json.dumps(answer, indent=2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def status(args: argparse.Namespace, console: Console) -> int:
    answer: Any = await ask(args, "status", {"device": args.device} if args.device else {})
    if args.json:
        print_json(answer)
    elif args.device:
        device = answer["devices"][0]
        console.print(device_points_table(literal(device)))
        console.print(link_line(literal(device)))
    else:
        console.print(status_table(literal(answer)))
    return 0


async def devices(args: argparse.Namespace, console: Console) -> int:
    answer: Any = await ask(args, "devices")
    if args.json:
        print_json(answer)
    else:
        console.print(devices_table(literal(answer)))
    return 0


async def points(args: argparse.Namespace, console: Console) -> int:
    request = {k: v for k, v in (("device", args.device), ("match", args.match)) if v}
    answer: Any = await ask(args, "points", request)
    if args.json:
        print_json(answer)
        return 0
    title = f"points of {args.device}" if args.device else "points"
    if args.match:
        title += f" matching {args.match}"
    console.print(points_table(literal(answer), esc(title)))
    if not answer:
        console.print(
            f"no point matches {args.match!r} (try a pattern such as '*temp*')", markup=False
        )
    return 0


def _events_request(args: argparse.Namespace) -> dict[str, object]:
    count = args.count if args.count is not None else RECENT_MAX if args.since else 20
    request: dict[str, object] = {"count": count}
    if args.since is not None:
        request["since_ts"] = args.since
    if args.severity:
        request["min_severity"] = args.severity
    return request


async def events(args: argparse.Namespace, console: Console) -> int:
    request = _events_request(args)
    answer: Any = await ask(args, "events", request)
    if not args.follow:
        if args.json:
            print_json(answer)
        elif answer:
            console.print(events_table(literal(answer)))
        else:
            console.print(_no_events(args))
        return 0
    await _follow(args, console, request, answer)
    return 0


def _no_events(args: argparse.Namespace) -> str:
    line = "no events"
    if args.severity:
        line += f" of severity {args.severity} or worse"
    if args.since is not None:
        line += f" since {clock(args.since)}"
    return line


async def _follow(
    args: argparse.Namespace, console: Console, request: dict[str, object], first: Any
) -> None:
    """Print what came so far, then each new event as it comes, until Ctrl-C."""
    boot_id, last_seq = None, 0
    batch: Any = first
    while True:
        for event in batch:
            if boot_id is not None and event["boot_id"] != boot_id:
                console.print("[yellow]megapodd restarted: its events start again at 1[/yellow]")
            elif boot_id is not None and event["seq"] > last_seq + 1:
                console.print(f"[yellow]{event['seq'] - last_seq - 1} events missed[/yellow]")
            boot_id, last_seq = event["boot_id"], event["seq"]
            if args.json:
                print_json(event, lines=True)
            else:
                console.print(event_line(literal(event)), highlight=False)
        await asyncio.sleep(FOLLOW_POLL_S)
        follow = {**request, "count": RECENT_MAX, "after_seq": last_seq}
        if boot_id is not None:
            follow["boot_id"] = boot_id
        batch = await ask(args, "events", follow)


async def interlocks(args: argparse.Namespace, console: Console) -> int:
    return await _show(args, console, "interlocks", lambda a: interlocks_table(a, args.all))


async def loops(args: argparse.Namespace, console: Console) -> int:
    return await _show(args, console, "loops", loops_table)


async def outputs(args: argparse.Namespace, console: Console) -> int:
    return await _show(args, console, "outputs", lambda a: outputs_table(a, args.all))


async def power(args: argparse.Namespace, console: Console) -> int:
    return await _show(args, console, "power", power_view)


async def _show(
    args: argparse.Namespace,
    console: Console,
    command: str,
    view: Callable[[Any], RenderableType],
) -> int:
    """One read: megapodd's answer as JSON with --json, else through its view."""
    answer: Any = await ask(args, command)
    if args.json:
        print_json(answer)
    else:
        console.print(view(literal(answer)))
    return 0


async def version(args: argparse.Namespace, _console: Console) -> int:
    """This CLI's version, then the running daemon's. An unreachable daemon is
    said but is no error: the CLI's own version is the answer."""
    mine = package_version()
    daemon: str | None
    pod: str | None
    why: str | None
    try:
        answer: Any = await ask(args, "status", {}, timeout_s=5.0)
    except ApiClientError as exc:
        daemon, pod, why = None, None, str(exc)
    else:
        daemon, pod, why = answer["pod"]["version"], answer["pod"]["id"], None
    if args.json:
        print_json(
            {"megapodctl": mine, "megapodd": daemon, "pod": pod, "socket": str(socket_path(args))}
        )
    else:
        print(f"megapodctl {mine}")
        print(f"megapodd: unknown ({why})" if daemon is None else f"megapodd {daemon} (pod {pod})")
    return 0
