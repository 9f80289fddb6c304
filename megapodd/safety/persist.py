"""Latched interlock state on disk: written atomically (temp file, fsync,
rename, fsync of the directory) so a power cut leaves the old file or the new
one, never half of one (invariant 3)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

log = structlog.get_logger("megapodd.safety")


def save_state(path: Path, state: dict[str, dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump({"version": 1, "rules": state}, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_state(path: Path) -> dict[str, dict[str, object]]:
    """What was saved; an unreadable file is reported and counts as nothing
    latched only if it is missing (a corrupt one raises: safety state is not
    guessed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    data = json.loads(text)  # a JSONDecodeError is a ValueError: the caller handles both
    if not isinstance(data, dict) or not isinstance(data.get("rules"), dict):
        raise ValueError(f"{path}: not an interlock state file")  # noqa: TRY004 - bad content
    rules: dict[str, dict[str, object]] = {}
    for rule_id, entry in data["rules"].items():
        if isinstance(entry, dict):
            rules[str(rule_id)] = entry
    return rules
