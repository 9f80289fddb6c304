"""The acting commands (admin role): each sends one request, then prints one
line saying what megapodd did, or its answer as JSON with --json."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console

from megapodd.ctl.daemon import ACTION_TIMEOUT_S, READ_TIMEOUT_S, ask
from megapodd.ctl.errors import UsageError
from megapodd.ctl.reads import power as power_status
from megapodd.ctl.reads import print_json
from megapodd.ctl.views.text import literal


async def _act(
    args: argparse.Namespace,
    console: Console,
    cmd: str,
    request: Mapping[str, object],
    say: Callable[[Any], str],
    timeout_s: float = ACTION_TIMEOUT_S,
) -> int:
    answer: Any = await ask(args, cmd, request, timeout_s)
    if args.json:
        print_json(answer)
    else:
        console.print(say(literal(answer)), highlight=False)
    return 0


def target(output: str, then: str | None) -> tuple[str, str]:
    """(device, output) from an output as `outputs` names it
    (`cdu1.pump_speed_pct`), or from device and output as two words (the
    older form, still taken: `then` is the second word)."""
    if then is not None:
        return output, then
    device, dot, name = output.partition(".")
    if not dot or not device or not name:
        raise UsageError(
            f"not an output: {output!r} (write DEVICE.OUTPUT, e.g. cdu1.pump_speed_pct; "
            "megapodctl outputs --all lists them)"
        )
    return device, name


def override_value(text: str) -> float | str:
    """A number for a continuous output, else a state (`off`, `closed`)."""
    try:
        return float(text)
    except ValueError:
        return text


async def outlet(args: argparse.Namespace, console: Console) -> int:
    request = {"pdu": args.pdu, "outlet": args.outlet, "action": args.action}
    return await _act(
        args, console, "outlet", request, lambda r: f"{r['pdu']} outlet {r['outlet']}: {r['state']}"
    )


async def server(args: argparse.Namespace, console: Console) -> int:
    def say(r: Any) -> str:
        state = {"soft_off": "shutting down (soft off)"}.get(r["state"], r["state"])
        return f"{r['server']}: {r['action']} done; power {state}"

    request = {"server": args.server, "action": args.action}
    return await _act(args, console, "server", request, say)


async def override(args: argparse.Namespace, console: Console) -> int:
    # The older form is DEVICE OUTPUT VALUE: then the value is the third word.
    if args.old_value is not None:
        device, output, value = args.output, args.value, args.old_value
    else:
        (device, output), value = target(args.output, None), args.value
    request = {
        "device": device,
        "output": output,
        "value": override_value(value),
        "duration_s": args.duration_s,
    }

    def say(r: Any) -> str:
        line = f"{r['output']} = {r['value']} for {r['duration_s']:g} s"
        if r["held_by"]:
            line += f" (held by {r['held_by']}: applies when it releases)"
        return line

    return await _act(args, console, "override", request, say)


async def release(args: argparse.Namespace, console: Console) -> int:
    device, output = target(args.output, args.old_output)
    return await _act(
        args,
        console,
        "release",
        {"device": device, "output": output},
        lambda r: (
            f"{r['output']}: {r['released']} claim released; owner now {r['owner'] or 'none'}"
        ),
        READ_TIMEOUT_S,
    )


async def reset(args: argparse.Namespace, console: Console) -> int:
    def say(r: Any) -> str:
        done = ", ".join(r.get("reset") or [r["interlock"]])
        return f"interlock {r['interlock']}: reset ({done}), now {r['state']}"

    return await _act(args, console, "reset", {"interlock": args.interlock}, say, READ_TIMEOUT_S)


async def loop_setpoint(args: argparse.Namespace, console: Console) -> int:
    return await _act(
        args,
        console,
        "setpoint",
        {"loop": args.loop, "setpoint": args.value},
        lambda r: f"loop {r['loop']}: setpoint {r['setpoint']:g}",
        READ_TIMEOUT_S,
    )


async def power(args: argparse.Namespace, console: Console) -> int:
    """`power`: the budget, phases and caps; `power budget W`: change the budget."""
    if args.what is None:
        if args.watts is not None:
            raise UsageError("a number of watts goes after 'budget': megapodctl power budget W")
        return await power_status(args, console)
    if args.watts is None:
        raise UsageError("power budget needs the new budget in W: megapodctl power budget 60000")
    return await _act(
        args,
        console,
        "power_budget",
        {"watts": args.watts},
        lambda r: (
            f"power budget {r['budget_w']:.0f} W (bounds {r['min_budget_w']:.0f}–"
            f"{r['max_budget_w']:.0f} W; until megapodd restarts)"
        ),
        READ_TIMEOUT_S,
    )


async def rack(args: argparse.Namespace, console: Console) -> int:
    return await _act(
        args,
        console,
        "rack",
        {"rack": args.rack, "action": args.action},
        lambda r: f"rack {r['rack']}: coolant supply {r['isolation']}",
    )
