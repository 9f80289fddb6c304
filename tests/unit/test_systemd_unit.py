"""The systemd unit is accepted by systemd-analyze, and sd_notify speaks the protocol."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from megapodd.sdnotify import Notifier

UNIT = Path(__file__).parents[2] / "systemd" / "megapodd.service"


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: scripts/bootstrap installs the systemd package")
    # Point ExecStart at the megapodd this test environment installed.
    installed = Path(sys.executable).parent / "megapodd"
    unit = tmp_path / "megapodd.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/megapodd", str(installed)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    text = UNIT.read_text()
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=megapodd"):
        assert setting in text


def test_notifier_sends_datagrams_and_reads_watchdog_interval(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        try:
            assert notifier.watchdog_interval_s == 2.0
            assert notifier.ready("ok")
            assert receiver.recv(100) == b"READY=1\nSTATUS=ok"
            assert notifier.watchdog()
            assert receiver.recv(100) == b"WATCHDOG=1"
        finally:
            notifier.close()


def test_notifier_without_socket_is_silent_and_watchdog_for_another_pid_ignored() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval_s is None


def test_sysusers_puts_the_daemon_in_the_socket_group(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.fail("systemd-sysusers missing: scripts/bootstrap installs the systemd package")
    (tmp_path / "etc").mkdir()
    conf = UNIT.parent / "megapodd.sysusers"
    result = subprocess.run(
        [sysusers, "--dry-run", f"--root={tmp_path}", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    group_gid = out.split("Creating group 'megapod' with GID ")[1].split(".")[0]
    assert "Creating user 'megapodd' (megapodd daemon) with UID" in out
    assert out.split("Creating user 'megapodd'")[1].split("GID ")[1].startswith(group_gid)
    assert "Group=megapod\n" in UNIT.read_text()
