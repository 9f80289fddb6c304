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
from megapodd.version import package_version

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
        state = {"soft_off": "shutting down (soft off)"}.get(result["state"], result["state"])
        console.print(f"{result['server']}: {result['action']} done; power {state}")
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
    console.print(
        f"{result['output']}: {result['released']} claim released; owner now {result['owner']}"
    )
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


_RULE_STYLE = {"tripped": "bold red", "latched": "yellow", "normal": "green"}


def _stages_text(stages: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for stage in stages:
        when = "now" if not stage["after_s"] else f"+{stage['after_s']:g} s"
        lines.append(f"{when}: {stage['action']} ({stage['outputs']} = {stage['value']})")
    return "\n".join(lines) or "alarm only"


def interlocks_table(rules: Mapping[str, Mapping[str, Any]], everything: bool) -> Table:
    """One row per rule; instances that are not normal get rows of their own
    (a per-server rule has one instance per server). Wraps, never cuts."""
    table = Table(title="interlocks", title_justify="left", expand=False)
    table.add_column("interlock", overflow="fold")
    table.add_column("state", overflow="fold")
    table.add_column("watches / does", overflow="fold", ratio=1)
    by_rule: dict[str, list[Mapping[str, Any]]] = {}
    for instance in rules.values():
        by_rule.setdefault(str(instance["rule"]), []).append(instance)
    for rule_id, instances in by_rule.items():
        first = instances[0]
        shown = instances if everything else [i for i in instances if i["state"] != "normal"]
        if len(instances) > 1 or not shown:
            states = {state: sum(1 for i in instances if i["state"] == state)
                      for state in ("tripped", "latched", "normal")}
            summary = ", ".join(
                f"[{_RULE_STYLE[k]}]{n if len(instances) > 1 else ''} {k}[/{_RULE_STYLE[k]}]"
                for k, n in states.items()
                if n
            ).replace("] ", "]")
            kind = "" if first["latch"] else " (releases by itself)"
            what = f"{first['watches']}{kind}\n{_stages_text(first['actions'])}"
            label = rule_id if len(instances) == 1 else f"{rule_id} ×{len(instances)}"
            table.add_row(label, summary, what)
            if len(instances) == 1:
                continue
        for instance in shown:
            style = _RULE_STYLE.get(str(instance["state"]), "")
            since = instance["since"]
            stamp = time.strftime("%H:%M:%S", time.gmtime(since)) if since else "—"
            state = f"[{style}]{instance['state']}[/{style}]\nsince {stamp}"
            what = f"{instance['watches']}\n{instance['reason']}"
            if len(instances) == 1:
                what += f"\n{_stages_text(instance['actions'])}"
            table.add_row(str(instance["id"]), state, what)
    return table


async def _interlocks(args: argparse.Namespace, console: Console) -> int:
    rules: Any = await _ask(args, "interlocks")
    if args.json:
        print(json.dumps(rules, indent=2))
        return 0
    console.print(interlocks_table(rules, args.all))
    return 0


_MODE_STYLE = {"auto": "green", "failsafe": "bold red", "held": "yellow", "overridden": "yellow"}


def _num(value: object, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.4g}{unit}" if isinstance(value, float) else str(value)


def loops_table(loops: Mapping[str, Mapping[str, Any]]) -> Table:
    """One row per loop; per-server loops folded into one row unless not in auto."""
    table = Table(title="control loops", title_justify="left")
    table.add_column("loop", overflow="fold")
    table.add_column("mode", overflow="fold")
    table.add_column("input → output", overflow="fold", ratio=1)
    table.add_column("P / I / D / FF", overflow="fold")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for loop in loops.values():
        groups.setdefault(str(loop["id"]).partition("@")[0], []).append(loop)
    for name, members in groups.items():
        shown = members if len(members) == 1 else [m for m in members if m["mode"] != "auto"]
        if len(members) > 1:
            auto = sum(1 for m in members if m["mode"] == "auto")
            first = members[0]
            others = len(members) - auto
            table.add_row(
                f"{name} ×{len(members)}",
                f"[green]{auto} auto[/green]" + (f", {others} not" if others else ""),
                f"{first['input']} → {first['target']}",
                "",
            )
        for loop in shown:
            style = _MODE_STYLE.get(str(loop["mode"]), "")
            mode = f"[{style}]{loop['mode']}[/{style}]"
            if loop["mode"] != "auto" and loop["reason"]:
                mode += f"\n{loop['reason']}"
            setpoint = ""
            if loop["setpoint"] is not None:
                setpoint = f" (setpoint {_num(loop['setpoint'])})"
            flow = (
                f"{loop['input']} = {_num(loop['process_value'])}{setpoint}\n"
                f"→ {loop['target']} = {_num(loop['output'])} (owner {loop['owner']})"
            )
            terms = " / ".join(_num(loop[k]) for k in ("p", "i", "d", "ff"))
            table.add_row(str(loop["id"]), mode, flow, terms)
    return table


async def _loops(args: argparse.Namespace, console: Console) -> int:
    loops: Any = await _ask(args, "loops")
    if args.json:
        print(json.dumps(loops, indent=2))
        return 0
    console.print(loops_table(loops))
    return 0


async def _loop_setpoint(args: argparse.Namespace, console: Console) -> int:
    request = {"loop": args.loop, "setpoint": args.value}
    result: Any = await _ask(args, "setpoint", request)
    console.print(f"loop {result['loop']}: setpoint {result['setpoint']:g}")
    return 0


async def _rack(args: argparse.Namespace, console: Console) -> int:
    request = {"rack": args.rack, "action": args.action}
    result: Any = await _ask(args, "rack", request, timeout_s=30.0)
    console.print(f"rack {result['rack']}: coolant supply {result['isolation']}")
    return 0


async def _reset(args: argparse.Namespace, console: Console) -> int:
    result: Any = await _ask(args, "reset", {"interlock": args.interlock})
    reset = ", ".join(result.get("reset") or [result["interlock"]])
    console.print(f"interlock {result['interlock']}: reset ({reset}), now {result['state']}")
    return 0


async def _version(args: argparse.Namespace, console: Console) -> int:
    """This CLI's version, then the running daemon's; an unreachable daemon is
    reported but is not an error (the CLI's own version is the answer)."""
    print(f"megapodctl {package_version()}")
    try:
        status: Any = await call(_socket_path(args), "status", timeout_s=5.0)
    except ApiClientError as exc:
        print(f"megapodd: unknown ({exc})")
    else:
        print(f"megapodd {status['pod']['version']} (pod {status['pod']['id']})")
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
    interlocks.add_argument(
        "--all", action="store_true", help="a row for every instance, normal ones too"
    )
    interlocks.add_argument("--json", action="store_true")
    interlocks.set_defaults(func=_interlocks)
    reset = sub.add_parser("reset", help="reset a latched interlock once its cause is gone (admin)")
    reset.add_argument("interlock", help="interlock id")
    reset.set_defaults(func=_reset)
    loops = sub.add_parser("loops", help="control loops: mode, setpoint, value, output, terms")
    loops.add_argument("--json", action="store_true")
    loops.set_defaults(func=_loops)
    loop = sub.add_parser("loop", help="change a loop's setpoint (admin)")
    loop.add_argument("loop", help="loop id, e.g. supply-temp")
    loop.add_argument("what", choices=["setpoint"])
    loop.add_argument("value", type=float)
    loop.set_defaults(func=_loop_setpoint)
    rack = sub.add_parser("rack", help="open or isolate a rack's coolant supply (admin)")
    rack.add_argument("rack", type=int, help="rack number, from 1")
    rack.add_argument("action", choices=["open", "isolate"])
    rack.set_defaults(func=_rack)
    outputs = sub.add_parser("outputs", help="who owns each actuator")
    outputs.add_argument("--json", action="store_true")
    outputs.set_defaults(func=_outputs)
    sub.add_parser("version", help="versions of megapodctl and the running megapodd").set_defaults(
        func=_version
    )
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
