"""What every device family's wiring shares: outer timeouts and secrets."""

from __future__ import annotations

from pathlib import Path

from megapodd.config import ConfigError
from megapodd.safe_files import FileRefused, read_secret_text
from megapodd.supervisor import SupervisorSettings


def read_secret(path: Path | None, key: str, config_path: Path) -> str:
    """A key file, read as validation did: never blocks, bounded (megapodd/safe_files.py)."""
    if path is None:
        return ""
    try:
        return read_secret_text(path)
    except FileRefused as exc:
        raise ConfigError(config_path, [f"{key}: {exc}"]) from None


def outer_bounds(
    timeout_s: float, retries: int, connect: int, read: int, act: int
) -> SupervisorSettings:
    """Outer timeouts from the worst case of the driver's own: each of `n`
    requests may take every retry (pymodbus and SNMP both wait up to about
    1.5 timeouts per attempt), plus a second of slack."""

    def worst(requests: int) -> float:
        return requests * (retries + 1) * timeout_s * 2.0 + 1.0

    return SupervisorSettings(
        connect_timeout_s=worst(connect), read_timeout_s=worst(read), action_timeout_s=worst(act)
    )
