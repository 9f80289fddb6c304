"""`megapodd`: run the daemon, or check a config file."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from pathlib import Path

from megapodd.app import Daemon
from megapodd.config import Config, ConfigError, load_config
from megapodd.config_check import check_config, print_check
from megapodd.gc_pacing import pace_from_tick
from megapodd.logs import configure_logging
from megapodd.version import package_version

EXIT_CONFIG = 2
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megapodd", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=Path("/etc/megapodd/megapodd.toml"), help="config file"
    )
    parser.add_argument(
        "--check-config",
        type=Path,
        metavar="FILE",
        help="validate FILE, print every problem, exit 0 if valid and 2 if not",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="with --check-config: print every safety rule as it would run on this pod",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--version", action="version", version=f"megapodd {package_version()}")
    return parser


def _report(exc: ConfigError) -> None:
    print(f"{exc.path}: {len(exc.problems)} problem(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        _report(exc)
        return None


async def _run(config: Config, config_path: Path) -> None:
    daemon = Daemon(config, config_path=config_path)
    # What is built by now (modules, config, drivers, device tables: ~84 000
    # objects for the full pod) lives as long as the process. Out of the cyclic
    # collector's sight, a full collection walks only what came after; walking
    # them all took 65-160 ms with the event loop stopped (bench/results/loops.md).
    gc.collect()
    gc.freeze()
    pace_from_tick()  # routine collections run from the control tick
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    await daemon.run()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check_config is not None:
        check = check_config(args.check_config, args.explain)
        print_check(check)
        return 0 if check.valid else EXIT_CONFIG
    if args.explain:
        print("megapodd: --explain goes with --check-config FILE", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level)
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        asyncio.run(_run(config, args.config))
    except ConfigError as exc:  # found while building devices (e.g. an unreadable key file)
        _report(exc)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
