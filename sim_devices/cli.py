"""`megapod-sim`: run a simulated pod, inject faults into it, show its true state.

    megapod-sim run [--profile small|full] [--racks N] ... [--write-config FILE]
    megapod-sim inject <fault> <args...> [--state-dir D]
    megapod-sim inject --clear [<fault> [<args...>]] [--state-dir D]
    megapod-sim status [--json] [--state-dir D]

Exit codes: 0 done, 1 the simulator cannot be reached or could not start,
2 bad arguments or a refused fault (the simulator keeps running).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from sim_devices.config_writer import ConfigWriteError
from sim_devices.control import ControlError, request
from sim_devices.faults import USAGE
from sim_devices.pod import DEFAULT_TICK_S, DEFAULT_WORKLOAD_PCT, PodOptions, SimPod
from sim_devices.profiles import (
    PROFILES,
    LayoutError,
    PodLayout,
    PortPlan,
    Profile,
    SimPaths,
    default_state_dir,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_BASE_PORT = 15_020


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megapod-sim", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the simulated pod until SIGINT/SIGTERM")
    run.add_argument("--profile", choices=[p.value for p in Profile], default=Profile.SMALL.value)
    run.add_argument("--racks", type=int)
    run.add_argument("--servers-per-rack", type=int)
    run.add_argument("--pdus-per-rack", type=int)
    run.add_argument("--outlets", type=int, help="outlets per PDU")
    run.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help="CDU Modbus TCP here, PDUs (UDP) on the next ports",
    )
    run.add_argument(
        "--bmc-tcp", action="store_true", help="also serve each BMC on TCP after the PDUs' ports"
    )
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per wall second (the plant only)",
    )
    run.add_argument("--tick", type=float, default=DEFAULT_TICK_S, help="model step, wall s")
    run.add_argument(
        "--workload",
        type=float,
        default=DEFAULT_WORKLOAD_PCT,
        help="initial workload of every server, %%",
    )
    run.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="write a megapodd config pointing at every simulated device",
    )
    run.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    run.add_argument(
        "--metrics-listen",
        default="127.0.0.1:9108",
        help="the daemon's /metrics address in the written config; '' for off",
    )
    run.add_argument("--pod-id", default="pod-sim")
    run.add_argument(
        "--oversubscribe",
        type=float,
        default=1.0,
        metavar="RATIO",
        help="size the phase breakers and the pod's feed for peak / RATIO "
        "(1.0-3.0; default 1.0: every server at peak fits)",
    )
    _state_dir(run)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    inject = sub.add_parser(
        "inject",
        help="inject or clear a fault in a running simulator",
        epilog="faults:\n  " + "\n  ".join(USAGE.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inject.add_argument("--clear", action="store_true", help="undo faults instead")
    inject.add_argument("words", nargs="*", metavar="fault/args")
    _state_dir(inject)

    status = sub.add_parser("status", help="print the true physical state")
    status.add_argument("--json", action="store_true")
    _state_dir(status)
    return parser


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="ptys, control socket, daemon socket and state (default %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "inject":
        return _inject(args)
    return _status(args)


# --- run ------------------------------------------------------------------------
def _layout(args: argparse.Namespace) -> PodLayout:
    base = PROFILES[Profile(args.profile)]
    return PodLayout(
        racks=args.racks if args.racks is not None else base.racks,
        servers_per_rack=(
            args.servers_per_rack if args.servers_per_rack is not None else base.servers_per_rack
        ),
        pdus_per_rack=args.pdus_per_rack if args.pdus_per_rack is not None else base.pdus_per_rack,
        outlets_per_pdu=args.outlets if args.outlets is not None else base.outlets_per_pdu,
    )


def _configure_logging(level: str) -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _run(args: argparse.Namespace) -> int:
    try:
        layout = _layout(args)
        options = PodOptions(
            layout=layout,
            base_port=args.base_port,
            state_dir=args.state_dir.resolve(),
            seed=args.seed,
            speed=args.speed,
            host=args.host,
            bmc_tcp=args.bmc_tcp,
            tick_s=args.tick,
            workload_pct=args.workload,
            pod_id=args.pod_id,
            mqtt_url=args.mqtt_url,
            metrics_listen=args.metrics_listen,
            write_config=args.write_config,
            oversubscribe=args.oversubscribe,
        )
        pod = SimPod(options)
    except (LayoutError, ConfigWriteError, ValueError) as exc:
        print(f"megapod-sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.log_level)
    failures: list[BaseException] = []
    try:
        asyncio.run(_serve(pod))
    except* OSError as group:  # a port taken, a state dir not writable
        failures.extend(group.exceptions)
    for failure in failures:
        print(f"megapod-sim: cannot start: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


async def _serve(pod: SimPod) -> None:
    loop = asyncio.get_running_loop()
    stop, ready = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(pod.run(stop, ready), name="sim-pod")
            await _announce_when_ready(pod, ready, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _announce_when_ready(pod: SimPod, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """One JSON line on stdout once every device listens (scripts wait for it)."""
    waiter = asyncio.ensure_future(ready.wait())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        stopper.cancel()
        await asyncio.gather(waiter, stopper, return_exceptions=True)
    if not ready.is_set():
        return
    opts = pod.options
    ports: PortPlan = opts.ports
    paths: SimPaths = opts.paths
    line = {
        "event": "ready",
        "cdu_port": ports.cdu_port,
        "pdu_ports": {pdu: ports.pdu_port(pdu) for pdu in opts.layout.pdu_ids()},
        "control_socket": str(paths.control_socket),
        "pty_dir": str(paths.pty_dir),
        "config": str(opts.write_config) if opts.write_config else None,
    }
    print(json.dumps(line), flush=True)


# --- inject / status -----------------------------------------------------------------
def _ask(state_dir: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return request(SimPaths(state_dir).control_socket, message)
    except ControlError as exc:
        print(f"megapod-sim: {exc}", file=sys.stderr)
        return None


def _inject(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if not args.clear and not words:
        print(
            "megapod-sim: inject needs a fault; faults:\n  " + "\n  ".join(USAGE.values()),
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.clear:
        message = {"op": "clear", "fault": words[0] if words else None, "args": words[1:]}
    else:
        message = {"op": "inject", "fault": words[0], "args": words[1:]}
    reply = _ask(args.state_dir, message)
    if reply is None:
        return EXIT_FAILED
    if not reply.get("ok"):
        print(f"megapod-sim: {reply.get('error', 'refused')}", file=sys.stderr)
        return EXIT_USAGE
    if args.clear:
        cleared = reply.get("cleared", [])
        print("cleared: " + (", ".join(cleared) if cleared else "nothing"))
    else:
        print(f"injected: {reply.get('injected')}")
    active = reply.get("active", [])
    print("active faults: " + (", ".join(active) if active else "none"))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    reply = _ask(args.state_dir, {"op": "status"})
    if reply is None:
        return EXIT_FAILED
    if not reply.get("ok"):
        print(f"megapod-sim: {reply.get('error', 'refused')}", file=sys.stderr)
        return EXIT_FAILED
    status = reply["status"]
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(render_status(status))
    return EXIT_OK


def render_status(status: dict[str, Any]) -> str:
    """A short table for people."""
    c = status["cooling"]
    lines = [
        f"sim time {status['time_s']:.1f} s  speed x{status['speed']:g}  "
        f"IT power {status['total_power_w'] / 1000:.1f} kW",
        f"coolant  supply {c['supply_temp_c']:.2f} C  return {c['return_temp_c']:.2f} C  "
        f"flow {c['flow_lpm']:.1f} L/min  dp {c['diff_pressure_kpa']:.1f} kPa  "
        f"reservoir {c['reservoir_level_pct']:.1f} %",
        f"facility supply {c['facility_supply_temp_c']:.1f} C  "
        f"return {c['facility_return_temp_c']:.1f} C  valve {c['facility_valve_pct']:.1f} %  "
        f"heat {c['coolant_heat_w'] / 1000:.1f} kW  pumps {c['pump_speed_pct']}",
        f"leaks in racks {c['leak_racks'] or 'none'}  "
        f"isolated racks {c['isolated_racks'] or 'none'}",
        "",
        f"{'server':8} {'on':3} {'power W':>8} {'GPU max C':>9} {'coolant C':>9} {'air out C':>9} "
        f"{'fans %':>6} {'outlet':>12}",
    ]
    for s in status["servers"]:
        lines.append(
            f"{s['id']:8} {'yes' if s['powered'] else 'no':3} {s['power_w']:8.0f} "
            f"{max(s['gpu_temps_c']):9.1f} {s['coolant_in_c']:9.1f} {s['outlet_air_c']:9.1f} "
            f"{s['fan_duty_pct']:6.0f} {s['pdu'] + '/' + str(s['outlet']):>12}"
            + ("  LEAK" if s["leak"] else "")
            + "".join(f"  FAN{fan} FAILED" for fan in s["failed_fans"])
            + ("  THERMAL TRIP" if s["thermal_trip"] else "")
        )
    faults = status["faults"]
    lines += ["", "active faults: " + (", ".join(faults) if faults else "none")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
