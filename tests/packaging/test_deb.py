"""scripts/package builds a .deb that installs on this machine with dpkg, whose
installed daemon checks the installed example config, whose installed unit
systemd-analyze accepts, and whose purge leaves none of its files behind.

Changes the machine: installs the package system-wide, then purges it; users
and groups the package creates (and the package keeps on purge, see
pkg/deb/postrm) are deleted afterwards if they did not exist before."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.package, pytest.mark.timeout(900)]

ROOT = Path(__file__).parents[2]
USERS = ("megapodd",)
GROUPS = ("megapod-admin", "megapod")
CONFIG = Path("/etc/megapodd/megapodd.toml")
UNIT = Path("/usr/lib/systemd/system/megapodd.service")
COMPLETION = Path("/usr/share/bash-completion/completions/megapodctl")


def _run(*argv: str | Path, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _package_status() -> str:
    """dpkg's status of megapodd, '' when dpkg knows nothing of it."""
    result = _run("dpkg-query", "-W", "-f=${Status}", "megapodd")
    return result.stdout.strip() if result.returncode == 0 else ""


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def machine() -> Iterator[None]:
    """Skips where the test cannot install packages; afterwards purges the
    package and deletes the users and groups it created, whatever happened."""
    if shutil.which("dpkg") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg is missing: this test installs a Debian package")
    if os.geteuid() != 0:
        pytest.skip("needs root: this test installs the package with dpkg -i")
    if status := _package_status():
        pytest.skip(f"megapodd is already known to dpkg here ({status}): not touching it")
    users_before = {u for u in USERS if _user_exists(u)}
    groups_before = {g for g in GROUPS if _group_exists(g)}
    try:
        yield
    finally:
        if _package_status():
            _run("dpkg", "--purge", "megapodd")
        for user in set(USERS) - users_before:
            if _user_exists(user):
                _run("userdel", user)
        for group in [g for g in GROUPS if g not in groups_before]:
            if _group_exists(group):
                _run("groupdel", group)


def _mode_owner(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    owner, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    return stat.S_IMODE(st.st_mode), owner, group


@pytest.mark.usefixtures("machine")
def test_package_installs_checks_its_config_and_purges_clean(tmp_path: Path) -> None:
    built = _run(ROOT / "scripts" / "package", "--output", tmp_path, timeout_s=600)
    assert built.returncode == 0, built.stderr
    deb = Path(built.stdout.strip().splitlines()[-1])
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert deb == tmp_path / f"megapodd_{_project_version()}_{arch}.deb"

    # What the archive holds, and which of those paths this machine already
    # had (shared directories such as /usr/bin, /opt): those may stay.
    contents = _run("dpkg-deb", "--contents", deb).stdout.splitlines()
    # "drwxr-xr-x root/root 0 2026-01-01 12:00 ./usr/bin/" or "... ./a -> /b"
    names = [line.split(maxsplit=5)[5].split(" -> ")[0] for line in contents]
    paths = {name.removeprefix(".").rstrip("/") or "/" for name in names}
    existed_before = {p for p in paths if _exists(p)}

    installed = _run("dpkg", "-i", deb)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert _package_status() == "install ok installed"
    assert "not enabled" in installed.stdout  # first install: the operator starts it

    checked = _run("/usr/bin/megapodd", "--check-config", CONFIG)
    assert (checked.returncode, checked.stdout) == (0, f"{CONFIG}: OK\n"), checked.stderr
    # ExecStartPre runs the check as the daemon's user: it can read its config.
    as_daemon = _run(
        "runuser", "-u", "megapodd", "--", "/usr/bin/megapodd", "--check-config", CONFIG
    )
    assert as_daemon.returncode == 0, as_daemon.stderr
    verified = _run("systemd-analyze", "verify", UNIT)
    assert verified.returncode == 0, verified.stderr
    assert _run("/usr/bin/megapodd", "--version").stdout == f"megapodd {_project_version()}\n"
    ctl = _run("/usr/bin/megapodctl", "--socket", tmp_path / "none.sock", "version")
    assert ctl.returncode == 0 and ctl.stdout.startswith(f"megapodctl {_project_version()}\n")
    completed = _run(
        "bash", "--norc", "-c",
        f"source {COMPLETION}; COMP_WORDS=(megapodctl st); COMP_CWORD=1; _megapodctl; "
        'echo "${COMPREPLY[*]}"',
    )  # fmt: skip
    assert completed.stdout == "status\n", completed.stderr
    sim = _run("/usr/bin/megapod-sim", "--help")
    assert sim.returncode == 0 and "inject" in sim.stdout

    # Users, groups and modes as the unit and docs/operations.md expect.
    daemon_user = pwd.getpwnam("megapodd")
    assert grp.getgrgid(daemon_user.pw_gid).gr_name == "megapod"
    assert "megapodd" in grp.getgrnam("dialout").gr_mem
    assert _group_exists("megapod-admin")
    assert _mode_owner(CONFIG.parent) == (0o750, "root", "megapod")
    assert _mode_owner(CONFIG) == (0o640, "root", "megapod")

    # What an operator and the daemon add: an enabled unit, state on disk.
    enabled = _run("systemctl", "enable", "megapodd.service")
    assert enabled.returncode == 0, enabled.stderr
    links = list(Path("/etc/systemd/system").glob("*.wants/megapodd.service"))
    assert links
    state = Path("/var/lib/megapodd")
    state.mkdir(exist_ok=True)
    (state / "interlocks.json").write_text("{}")

    files = [f for f in _run("dpkg", "-L", "megapodd").stdout.splitlines() if f != "/."]
    assert set(files) == paths - {"/"}  # dpkg owns exactly what the archive holds
    assert {"/usr/bin/megapodd", "/usr/bin/megapodctl", "/usr/bin/megapod-sim", str(UNIT)} <= set(
        files
    )
    assert {"/usr/lib/sysusers.d/megapodd.conf", "/usr/lib/tmpfiles.d/megapodd.conf"} <= set(files)
    assert str(COMPLETION) in files
    assert {"/usr/share/doc/megapodd/copyright", "/usr/share/doc/megapodd/README.md"} <= set(files)
    conffiles = _run("dpkg-query", "-W", "-f=${Conffiles}", "megapodd").stdout
    assert str(CONFIG) in conffiles

    purged = _run("dpkg", "--purge", "megapodd")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert _package_status() == ""
    left = sorted(f for f in files if f not in existed_before and _exists(f))
    assert left == []
    for gone in (CONFIG.parent, state, Path("/opt/megapodd"), *links):
        assert not _exists(str(gone)), gone
    assert str(CONFIG) not in _run("dpkg-statoverride", "--list").stdout
    # Kept on purpose (Debian keeps system users): removed by the fixture.
    assert _user_exists("megapodd")
