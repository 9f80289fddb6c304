"""Every megapodctl command and its arguments. To add a command: write its
handler (an `async def (args, console) -> exit code` in reads, actions or a
module of its own) and add it here; completion and the docs follow from this."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from megapodd.ctl import actions, completion, reads
from megapodd.ctl.config_check import config_check
from megapodd.ctl.daemon import DEFAULT_SOCKET
from megapodd.ctl.durations import parse_duration_s, since_parser
from megapodd.ctl.errors import EXIT_USAGE
from megapodd.ctl.watch.live import watch

SEVERITIES = ("info", "warning", "alarm", "critical")


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that says a usage mistake in one line, and remembers
    for bash completion what each word of its command completes to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: list[str] = []  # its options
        self.valued_flags: list[str] = []  # options that take a value
        # Per positional: "@kind" (ids from the running megapodd, see
        # completion.WORD_KINDS), "@file", fixed words ("on off"), or "".
        self.positionals: list[str] = []
        self.commands: dict[str, CommandParser] = {}  # of the top-level parser
        super().__init__(*args, **kwargs)  # adds --help: the lists must exist

    def add_argument(self, *names: str, complete: str = "", **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*names, **kwargs)
        if action.help == argparse.SUPPRESS:
            return action
        if action.option_strings:
            self.flags += action.option_strings
            if action.nargs != 0:
                self.valued_flags += action.option_strings
        else:
            self.positionals.append(complete or " ".join(action.choices or ()))
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _json(p: CommandParser) -> None:
    p.add_argument("--json", action="store_true", help="megapodd's answer as JSON, for scripts")


def _reads(sub: Any) -> None:
    p = sub.add_parser("status", help="the pod and its devices, with their key readings")
    p.add_argument("device", nargs="?", complete="@devices", help="every point of this device")
    _json(p)
    p.set_defaults(func=reads.status)

    p = sub.add_parser("watch", help="live view: alarms, racks, CDU, loops, power, events")
    p.add_argument("--interval", type=parse_duration_s, default=1.0, help="refresh every (1s)")
    p.add_argument("--count", type=int, default=0, help="stop after this many frames")
    p.add_argument("--json", action="store_true", help="one JSON object a frame")
    p.set_defaults(func=watch)

    p = sub.add_parser("devices", help="every device: kind, rack and cabling, state, link errors")
    _json(p)
    p.set_defaults(func=reads.devices)

    p = sub.add_parser("points", help="readings, of one device or all, filtered by name")
    p.add_argument("device", nargs="?", complete="@devices", help="only this device's points")
    p.add_argument(
        "--match",
        metavar="GLOB",
        help="point names like this ('gpu*_temp_c'; with a dot: 'r1s*.inlet_temp_c')",
    )
    _json(p)
    p.set_defaults(func=reads.points)

    p = sub.add_parser("events", help="recent events; --follow for new ones as they come")
    p.add_argument("-n", "--count", type=int, help="the newest N (20; 500 with --since)")
    p.add_argument(
        "--since",
        type=since_parser(),
        metavar="DURATION|TIME",
        help="none older than this: 10m, 2h, 14:05, '2025-06-01 14:05'",
    )
    p.add_argument("--severity", choices=SEVERITIES, help="this severity and worse")
    p.add_argument("-f", "--follow", action="store_true", help="then print new events until Ctrl-C")
    p.add_argument("--json", action="store_true", help="as JSON (one object a line with --follow)")
    p.set_defaults(func=reads.events)

    p = sub.add_parser("interlocks", help="safety interlocks by rule; tripped and latched ones")
    p.add_argument("--all", action="store_true", help="a row for every instance, normal ones too")
    _json(p)
    p.set_defaults(func=reads.interlocks)

    p = sub.add_parser("loops", help="control loops: mode, setpoint, value, output, terms")
    _json(p)
    p.set_defaults(func=reads.loops)

    p = sub.add_parser(
        "power",
        help="power budget, headroom, phase loads, caps; `power budget W` changes it (admin)",
    )
    p.add_argument("what", nargs="?", choices=["budget"], help="budget: set a new budget")
    p.add_argument("watts", nargs="?", type=float, help="with budget: the new budget, W")
    _json(p)
    p.set_defaults(func=actions.power)

    p = sub.add_parser("outputs", help="claimed actuators: owner, value, every claim")
    p.add_argument("--all", action="store_true", help="unclaimed outputs too")
    _json(p)
    p.set_defaults(func=reads.outputs)


def _actions(sub: Any) -> None:
    p = sub.add_parser("reset", help="reset a latched interlock once its cause is gone (admin)")
    p.add_argument("interlock", complete="@rules", help="rule id (every latched instance) or one")
    _json(p)
    p.set_defaults(func=actions.reset)

    p = sub.add_parser("loop", help="change a loop's setpoint, within its limits (admin)")
    p.add_argument("loop", complete="@loops", help="loop id, e.g. supply-temp")
    p.add_argument("what", choices=["setpoint"])
    p.add_argument("value", type=float)
    _json(p)
    p.set_defaults(func=actions.loop_setpoint)

    p = sub.add_parser("override", help="hold an output at a value for a while (admin)")
    p.add_argument("output", complete="@outputs", help="DEVICE.OUTPUT, e.g. cdu1.pump_speed_pct")
    p.add_argument("value", help="a number, or a state such as off or closed")
    # The older form DEVICE OUTPUT VALUE: its value is a third word.
    p.add_argument("old_value", nargs="?", help=argparse.SUPPRESS)
    p.add_argument(
        "--for",
        dest="duration_s",
        type=parse_duration_s,
        default=900.0,
        metavar="DURATION",
        help="how long (90s, 15m, 2h; 15m if not given, at most 8h)",
    )
    _json(p)
    p.set_defaults(func=actions.override)

    p = sub.add_parser("release", help="end an override before it expires (admin)")
    p.add_argument("output", complete="@outputs", help="DEVICE.OUTPUT")
    p.add_argument("old_output", nargs="?", help=argparse.SUPPRESS)  # DEVICE OUTPUT
    _json(p)
    p.set_defaults(func=actions.release)

    p = sub.add_parser("outlet", help="switch a PDU outlet (admin)")
    p.add_argument("pdu", complete="@pdus", help="PDU id")
    p.add_argument("outlet", type=int, help="outlet number, from 1")
    p.add_argument("action", choices=["on", "off", "reboot"])
    _json(p)
    p.set_defaults(func=actions.outlet)

    p = sub.add_parser("server", help="a server's chassis power (admin)")
    p.add_argument("server", complete="@servers", help="server (BMC) id, e.g. r1s03")
    p.add_argument("action", choices=["on", "off", "cycle", "reset", "soft"])
    _json(p)
    p.set_defaults(func=actions.server)

    p = sub.add_parser("rack", help="open or isolate a rack's coolant supply (admin)")
    p.add_argument("rack", type=int, help="rack number, from 1")
    p.add_argument("action", choices=["open", "isolate"])
    _json(p)
    p.set_defaults(func=actions.rack)


def _tools(parser: CommandParser, sub: Any) -> None:
    p = sub.add_parser("config", help="check a config file as megapodd --check-config does")
    p.add_argument("what", choices=["check"])
    p.add_argument("file", complete="@file", help="the config file")
    p.add_argument("--explain", action="store_true", help="print every safety rule as it runs")
    _json(p)
    p.set_defaults(func=config_check)

    p = sub.add_parser("version", help="versions of megapodctl and the running megapodd")
    _json(p)
    p.set_defaults(func=reads.version)

    p = sub.add_parser("completion", help="bash completion: `megapodctl completion bash`")
    p.add_argument("what", choices=["bash", "words"], help="the script, or ids for it")
    p.add_argument(
        "kind", nargs="?", choices=sorted(completion.WORD_KINDS), help="with words: which ids"
    )
    p.set_defaults(func=completion.completion, root=parser)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="megapodctl",
        description="The technician's command line for the local megapodd.",
        epilog="Exit codes: 0 done, 1 refused or failed, 2 usage, 3 megapodd did not answer.",
    )
    parser.add_argument(
        "--socket",
        help=f"megapodd's socket (default $MEGAPODD_SOCKET, else {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--timeout",
        dest="timeout_s",
        type=parse_duration_s,
        metavar="DURATION",
        help="how long to wait for megapodd's answer (10s; 30s for outlet, server, override, rack)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    _reads(sub)
    _actions(sub)
    _tools(parser, sub)
    parser.commands = dict(sub.choices)
    return parser
