"""`megapodctl`: the technician's command line for the local megapodd."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from megapodd.api.client import ApiClientError, DaemonUnreachable, call

DEFAULT_SOCKET = Path("/run/megapodd/megapodd.sock")
# 0: done. 1: refused or failed. 2: usage (argparse). 3: megapodd did not answer,
# so an action may not have run (or may have: the message says which).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# The readings a technician looks at first, per device kind.
_KEY_POINTS: dict[str, tuple[str, ...]] = {
    "cdu": (
        "supply_temp_c",
        "return_temp_c",
        "flow_lpm",
        "diff_pressure_kpa",
        "pump1_speed_pct",
        "pump2_speed_pct",
        "leak",
    ),
    "pdu": ("power_w", "load_state", "phase1_current_a", "phase2_current_a", "phase3_current_a"),
    "bmc": ("chassis_power", "power_w", "inlet_temp_c", "coolant_in_temp_c", "leak"),
}
_UNIT_SUFFIX = {
    "C": "°C",
    "°C": "°C",
    "lpm": " L/min",
    "kPa": " kPa",
    "%": " %",
    "W": " W",
    "A": " A",
}
_STATE_STYLE = {"online": "green", "stale": "yellow", "offline": "bold red"}


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    return Path(os.environ.get("MEGAPODD_SOCKET", str(DEFAULT_SOCKET)))


async def _ask(
    args: argparse.Namespace,
    cmd: str,
    request: Mapping[str, object] | None = None,
    timeout_s: float = 10.0,
) -> Any:
    """One request to the daemon; --timeout replaces the command's own timeout."""
    return await call(_socket_path(args), cmd, request, args.timeout_s or timeout_s)


def _fmt(point: Mapping[str, Any]) -> str:
    value, unit, quality = point.get("value"), str(point.get("unit", "")), point.get("quality")
    if value is None:
        text = "—"
    elif isinstance(value, bool):
        text = "YES" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.1f}{_UNIT_SUFFIX.get(unit, ' ' + unit if unit else '')}"
    else:
        text = f"{value}{_UNIT_SUFFIX.get(unit, ' ' + unit if unit else '')}"
    if quality != "good":
        text += f" ({quality})"
    return text


def status_table(status: Mapping[str, Any]) -> Table:
    pod = status["pod"]
    mqtt = pod["mqtt"]
    broker = "connected" if mqtt["connected"] else "DISCONNECTED"
    title = f"pod {pod['id']} — megapodd {pod['version']} — MQTT {broker}"
    if mqtt["pending_events"]:
        title += f", {mqtt['pending_events']} events queued"
    table = Table(title=title, title_justify="left")
    for column in ("device", "kind", "state", "key readings", "bad/stale"):
        table.add_column(column)
    for device in status["devices"]:
        points = device["points"]
        keys = [k for k in _KEY_POINTS.get(device["kind"], ()) if k in points]
        readings = ", ".join(
            f"{k.removesuffix('_c').removesuffix('_pct')}={_fmt(points[k])}" for k in keys
        )
        unhealthy = sum(1 for p in points.values() if p["quality"] != "good")
        style = _STATE_STYLE.get(device["state"], "")
        state = f"[{style}]{device['state']}[/{style}]" if style else device["state"]
        if device["state"] != "online":
            state += f"\n{device.get('reason', '')}"
        table.add_row(device["id"], device["kind"], state, readings, f"{unhealthy}/{len(points)}")
    return table


def device_table(device: Mapping[str, Any]) -> Table:
    table = Table(
        title=f"{device['id']} ({device['kind']}) — {device['state']}", title_justify="left"
    )
    for column in ("point", "value", "quality", "age"):
        table.add_column(column)
    now = time.time()
    for name, point in device["points"].items():
        age = f"{now - point['ts']:.1f} s" if point.get("ts") else "—"
        table.add_row(name, _fmt({**point, "quality": "good"}), point["quality"], age)
    return table


async def _status(args: argparse.Namespace, console: Console) -> int:
    request = {"device": args.device} if args.device else {}
    status: Any = await _ask(args, "status", request)
    if args.json:
        print(json.dumps(status, indent=2))
    elif args.device:
        device = status["devices"][0]
        console.print(device_table(device))
        link = ", ".join(f"{k} {v}" for k, v in device.get("link", {}).items())
        console.print(f"link: {link}" if link else "link: no counters")
    else:
        console.print(status_table(status))
    return 0


async def _watch(args: argparse.Namespace, console: Console) -> int:
    with Live(console=console, auto_refresh=False, screen=False) as live:
        for _ in range(args.count) if args.count else iter(int, 1):
            status: Any = await _ask(args, "status")
            live.update(status_table(status), refresh=True)
            await asyncio.sleep(args.interval)
    return 0


async def _events(args: argparse.Namespace, console: Console) -> int:
    events: Any = await _ask(args, "events", {"count": args.count})
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    table = Table(title="recent events", title_justify="left")
    for column in ("seq", "time (UTC)", "severity", "source", "message"):
        table.add_column(column)
    for event in events:
        stamp = time.strftime("%H:%M:%S", time.gmtime(event["ts"]))
        table.add_row(
            str(event["seq"]), stamp, event["severity"], event["source"], event["message"]
        )
    console.print(table)
    return 0


async def _outlet(args: argparse.Namespace, console: Console) -> int:
    request = {"pdu": args.pdu, "outlet": args.outlet, "action": args.action}
    result: Any = await _ask(args, "outlet", request, timeout_s=30.0)
    if args.json:
        print(json.dumps(result))
    else:
        console.print(f"{result['pdu']} outlet {result['outlet']}: {result['state']}")
    return 0


async def _server(args: argparse.Namespace, console: Console) -> int:
    request = {"server": args.server, "action": args.action}
    result: Any = await _ask(args, "server", request, timeout_s=30.0)
    if args.json:
        print(json.dumps(result))
    else:
        power = "on" if result["power_on"] else "off"
        console.print(f"{result['server']}: {result['action']} done; power now {power}")
    return 0


def parse_duration_s(text: str) -> float:
    """'90s', '15m', '2h' or plain seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90s, 15m, 2h)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


async def _override(args: argparse.Namespace, console: Console) -> int:
    request = {
        "device": args.device,
        "output": args.output,
        "value": args.value,
        "duration_s": args.duration_s,
    }
    result: Any = await _ask(args, "override", request, timeout_s=30.0)
    if args.json:
        print(json.dumps(result))
        return 0
    line = f"{result['output']} = {result['value']} for {result['duration_s']:.0f} s"
    if result["held_by"]:
        line += f" (held by {result['held_by']}: applies when it releases)"
    console.print(line)
    return 0


async def _release(args: argparse.Namespace, console: Console) -> int:
    request = {"device": args.device, "output": args.output}
    result: Any = await _ask(args, "release", request)
    console.print(f"{result['output']}: override released; owner now {result['owner']}")
    return 0


async def _outputs(args: argparse.Namespace, console: Console) -> int:
    outputs: Any = await _ask(args, "outputs")
    if args.json:
        print(json.dumps(outputs, indent=2))
        return 0
    table = Table(title="outputs", title_justify="left")
    for column in ("output", "owner", "value", "on device", "claims"):
        table.add_column(column)
    for name, output in outputs.items():
        claims = "; ".join(
            f"{c['owner']}={c['value']} by {c['by']}"
            + (f" ({c['expires_in_s']} s left)" if c["expires_in_s"] is not None else "")
            for c in output["claims"]
        )
        table.add_row(
            name, str(output["owner"]), str(output["value"]), str(output["written"]), claims
        )
    console.print(table)
    return 0


async def _interlocks(args: argparse.Namespace, console: Console) -> int:
    rules: Any = await _ask(args, "interlocks")
    if args.json:
        print(json.dumps(rules, indent=2))
        return 0
    table = Table(title="interlocks", title_justify="left")
    for column in ("interlock", "state", "watches", "since (UTC)", "reason", "actions"):
        table.add_column(column)
    for rule in rules.values():
        style = {"tripped": "bold red", "latched": "yellow"}.get(rule["state"], "green")
        since = time.strftime("%H:%M:%S", time.gmtime(rule["since"])) if rule["since"] else "—"
        limit = "" if rule["limit"] is None else f" {rule['limit']}"
        watches = f"{rule['device']}.{rule['point']} {rule['trip_when']}{limit}"
        actions = ", ".join(f"{a['output']}={a['value']:g}" for a in rule["actions"])
        state = f"[{style}]{rule['state']}[/{style}]"
        table.add_row(rule["id"], state, watches, since, rule["reason"], actions)
    console.print(table)
    return 0


async def _reset(args: argparse.Namespace, console: Console) -> int:
    result: Any = await _ask(args, "reset", {"interlock": args.interlock})
    console.print(f"interlock {result['interlock']}: reset, now {result['state']}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megapodctl", description=__doc__)
    parser.add_argument(
        "--socket", help=f"megapodd's socket (default $MEGAPODD_SOCKET or {DEFAULT_SOCKET})"
    )
    parser.add_argument(
        "--timeout",
        dest="timeout_s",
        type=parse_duration_s,
        help="how long to wait for megapodd's answer (default 10s; 30s for actions)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="pod and device status")
    status.add_argument("device", nargs="?", help="show every point of this device")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)
    watch = sub.add_parser("watch", help="live status view")
    watch.add_argument("--interval", type=float, default=1.0, help="refresh period in s")
    watch.add_argument("--count", type=int, default=0, help="stop after this many refreshes")
    watch.set_defaults(func=_watch)
    events = sub.add_parser("events", help="recent events")
    events.add_argument("-n", "--count", type=int, default=20)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=_events)
    outlet = sub.add_parser("outlet", help="switch a PDU outlet (admin)")
    outlet.add_argument("pdu", help="PDU id")
    outlet.add_argument("outlet", type=int, help="outlet number, from 1")
    outlet.add_argument("action", choices=["on", "off", "reboot"])
    outlet.add_argument("--json", action="store_true")
    outlet.set_defaults(func=_outlet)
    server = sub.add_parser("server", help="server chassis power (admin)")
    server.add_argument("server", help="server (BMC) id, e.g. r1s03")
    server.add_argument("action", choices=["on", "off", "cycle", "reset", "soft"])
    server.add_argument("--json", action="store_true")
    server.set_defaults(func=_server)
    override = sub.add_parser("override", help="override an output for a while (admin)")
    override.add_argument("device", help="device id, e.g. cdu1")
    override.add_argument(
        "output", help="pump_speed_pct, facility_valve_pct (CDU); fan_duty_pct, power_limit_w (BMC)"
    )
    override.add_argument("value", type=float)
    override.add_argument(
        "--for",
        dest="duration_s",
        type=parse_duration_s,
        default=900.0,
        help="how long (90s, 15m, 2h; default 15m, at most 8h)",
    )
    override.add_argument("--json", action="store_true")
    override.set_defaults(func=_override)
    release = sub.add_parser("release", help="end an override (admin)")
    release.add_argument("device")
    release.add_argument("output")
    release.set_defaults(func=_release)
    interlocks = sub.add_parser("interlocks", help="interlock states")
    interlocks.add_argument("--json", action="store_true")
    interlocks.set_defaults(func=_interlocks)
    reset = sub.add_parser("reset", help="reset a latched interlock once its cause is gone (admin)")
    reset.add_argument("interlock", help="interlock id")
    reset.set_defaults(func=_reset)
    outputs = sub.add_parser("outputs", help="who owns each actuator")
    outputs.add_argument("--json", action="store_true")
    outputs.set_defaults(func=_outputs)
    return parser


def _stdout_closed() -> bool:
    """Nobody reads our stdout any more (`megapodctl status --json | head` is done):
    poll() reports POLLERR on a pipe whose reader has gone."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    try:
        return int(asyncio.run(args.func(args, console)))
    except DaemonUnreachable as exc:
        print(f"megapodctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiClientError as exc:
        print(f"megapodctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if args.command == "watch":
            return 0  # how a watch ends
        print("megapodctl: interrupted before megapodd answered", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BrokenPipeError:
        if not _stdout_closed():  # never the socket: the client turns its errors into ours
            print("megapodctl: broken pipe while talking to megapodd", file=sys.stderr)
            return EXIT_UNREACHABLE
        # The answer arrived and `| head` took what it wanted; keep the exit-time
        # flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
