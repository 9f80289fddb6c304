"""`megapodctl config check FILE`: the checks of `megapodd --check-config`,
with no daemon needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from megapodd.ctl.errors import EXIT_FAILED, EXIT_OK
from megapodd.ctl.reads import print_json


async def config_check(args: argparse.Namespace, _console: Console) -> int:
    # Imported here: it brings the config models and the rule compiler, which
    # no other command needs (megapodctl starts faster without them).
    from megapodd.config_check import check_config, print_check  # noqa: PLC0415

    check = check_config(Path(args.file), args.explain)
    if args.json:
        print_json({**check.as_json(), "rules": check.explanation})
    else:
        print_check(check)
    return EXIT_OK if check.valid else EXIT_FAILED
