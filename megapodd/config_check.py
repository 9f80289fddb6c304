"""Checking a config file without running it: `megapodd --check-config FILE`
and `megapodctl config check FILE` are this one function."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from megapodd.config import ConfigError, load_config
from megapodd.safety.explain import explain
from megapodd.safety.rules import compile_rules


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    path: Path
    problems: tuple[str, ...]
    explanation: str | None = None  # every safety rule as it would run, when asked

    @property
    def valid(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {"file": str(self.path), "valid": self.valid, "problems": list(self.problems)}


def check_config(path: Path, explain_rules: bool = False) -> ConfigCheck:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return ConfigCheck(path, tuple(exc.problems))
    return ConfigCheck(path, (), explain(compile_rules(config)) if explain_rules else None)


def print_check(check: ConfigCheck, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
    """`FILE: OK` (and the rules when asked), or every problem on stderr."""
    if not check.valid:
        print(f"{check.path}: {len(check.problems)} problem(s):", file=err)
        for problem in check.problems:
            print(f"  {problem}", file=err)
        return
    print(f"{check.path}: OK", file=out)
    if check.explanation is not None:
        print(file=out)
        print(check.explanation, end="", file=out)
