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


def _analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: scripts/bootstrap installs the systemd package")
    return analyze


def test_security_exposure_stays_at_most_1_6_and_every_exposure_is_explained() -> None:
    result = subprocess.run(
        [_analyze(), "security", "--offline=yes", "--threshold=16", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    exposed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")]
    assert exposed  # the daemon needs the network, serial lines and its groups
    comments = "\n".join(
        line for line in UNIT.read_text().splitlines() if line.lstrip().startswith("#")
    )
    for setting in exposed:
        name = setting.split("=")[0].split("/")[0]  # "RootDirectory=/RootImage=" → RootDirectory
        assert f"{name}=" in comments, f"{setting} is exposed but the unit does not say why"


def _syscalls(analyze: str, group: str) -> set[str]:
    """The system calls a systemd syscall group stands for, nested groups expanded."""
    out = subprocess.run(
        [analyze, "syscall-filter", "--no-pager", group],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= _syscalls(analyze, item) if item.startswith("@") else {item}
    return names


def test_syscall_filter_allows_the_calls_the_daemon_makes() -> None:
    # systemd.exec(5): the first SystemCallFilter= line (an allow list here)
    # sets the default; later lines add (plain) or remove (~) calls in order.
    analyze = _analyze()
    allowed: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.removeprefix("SystemCallFilter=")
        deny = value.startswith("~")
        calls: set[str] = set()
        for item in value.removeprefix("~").split():
            calls |= _syscalls(analyze, item) if item.startswith("@") else {item}
        allowed = allowed - calls if deny else allowed | calls
    # ApiServer chowns its socket to the reader group; serial lines are locked
    # (flock) and set up (ioctl); the rest of @privileged and @resources stays out.
    assert {"chown", "fchownat", "flock", "ioctl", "connect", "sendto", "recvfrom"} <= allowed
    assert not {"setuid", "setgroups", "setrlimit", "sched_setscheduler", "chroot"} & allowed
