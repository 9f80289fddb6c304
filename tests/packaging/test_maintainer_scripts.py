"""The maintainer scripts' dealings with systemd, which this machine (no
systemd running) cannot show through dpkg: an upgrade stops a running daemon
before the files change and starts it after; a stopped one stays stopped; a
first install never starts it; without systemd nothing is called.

Each case runs prerm/postinst in a private mount namespace whose /run is a
fresh tmpfs (with /run/systemd/system where systemd is to look as if running),
with systemctl, deb-systemd-invoke, systemd-sysusers, systemd-tmpfiles and
dpkg-statoverride replaced by stubs that record their arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.package

DEB = Path(__file__).parents[2] / "pkg" / "deb"
STUBS = ("systemctl", "deb-systemd-invoke", "systemd-sysusers", "systemd-tmpfiles")


def _run_steps(tmp_path: Path, steps: list[str], systemd: bool, active: bool) -> list[str]:
    """Runs `steps` (maintainer script invocations) in one namespace; returns
    the stubs' calls, with '== step' lines between steps and 'marker' where
    the restart marker exists after a step."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private /run")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls"
    for name in STUBS:
        stub = stubs / name
        # `systemctl is-active` answers as the case says; every stub logs.
        stub.write_text(
            f'#!/bin/sh\necho "{name} $*" >> {log}\n'
            f'[ "{name} $1" = "systemctl is-active" ] && exit {0 if active else 3}\nexit 0\n'
        )
        stub.chmod(0o755)
    statoverride = stubs / "dpkg-statoverride"
    statoverride.write_text(  # nothing registered yet: --list fails, --add is called
        f'#!/bin/sh\necho "dpkg-statoverride $*" >> {log}\n[ "$1" = --list ] && exit 1\nexit 0\n'
    )
    statoverride.chmod(0o755)
    lines = ["set -e", "mount -t tmpfs tmpfs /run"]
    if systemd:
        lines.append("mkdir -p /run/systemd/system")
    for step in steps:
        script, *args = step.split()
        lines += [
            f"echo '== {step}' >> {log}",
            f"sh {DEB / script} {' '.join(args)}",
            f"if [ -e /run/megapodd.dpkg-restart ]; then echo marker >> {log}; fi",
        ]
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "\n".join(lines)],
        env={**os.environ, "PATH": f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return log.read_text().splitlines()


SETUP = [
    "systemd-sysusers /usr/lib/sysusers.d/megapodd.conf",
    "systemd-tmpfiles --create /usr/lib/tmpfiles.d/megapodd.conf",
    "dpkg-statoverride --list /etc/megapodd/megapodd.toml",
    "dpkg-statoverride --update --add root megapod 0640 /etc/megapodd/megapodd.toml",
]


def test_upgrade_stops_a_running_daemon_first_and_starts_it_after(tmp_path: Path) -> None:
    calls = _run_steps(
        tmp_path, ["prerm upgrade 0.2.0", "postinst configure 0.1.0"], systemd=True, active=True
    )
    assert calls == [
        "== prerm upgrade 0.2.0",
        "systemctl is-active --quiet megapodd.service",
        "deb-systemd-invoke stop megapodd.service",
        "marker",
        "== postinst configure 0.1.0",
        *SETUP,
        "systemctl daemon-reload",
        "deb-systemd-invoke start megapodd.service",
    ]


def test_upgrade_leaves_a_stopped_daemon_stopped(tmp_path: Path) -> None:
    calls = _run_steps(
        tmp_path, ["prerm upgrade 0.2.0", "postinst configure 0.1.0"], systemd=True, active=False
    )
    assert calls == [
        "== prerm upgrade 0.2.0",
        "systemctl is-active --quiet megapodd.service",
        "== postinst configure 0.1.0",
        *SETUP,
        "systemctl daemon-reload",
    ]


def test_first_install_and_remove(tmp_path: Path) -> None:
    calls = _run_steps(tmp_path, ["postinst configure", "prerm remove"], systemd=True, active=False)
    assert calls == [
        "== postinst configure",
        *SETUP,
        "systemctl daemon-reload",  # never enable or start: the config is an example
        "== prerm remove",
        "deb-systemd-invoke stop megapodd.service",
    ]


def test_without_systemd_running_nothing_talks_to_it(tmp_path: Path) -> None:
    calls = _run_steps(
        tmp_path,
        ["prerm upgrade 0.2.0", "postinst configure 0.1.0", "prerm remove"],
        systemd=False,
        active=True,
    )
    assert calls == [
        "== prerm upgrade 0.2.0",
        "== postinst configure 0.1.0",
        *SETUP,
        "== prerm remove",
    ]
