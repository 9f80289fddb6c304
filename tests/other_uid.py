"""Running the real megapodctl as another uid, wherever the checkout is.

The checkout and its .venv may sit in a directory other users cannot enter (a
clone under `mktemp -d` is mode 0700), so the other uid gets a world-readable
copy of exactly the packages megapodctl imports (the project's own and their
dependencies from the venv), run with -S by an interpreter of the same version
that any uid can run (the venv's base one, or the system's when that one sits
under a private home, as with pyenv): only that copy and the standard library
are on its path.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import communicate

# Lists, as JSON, the file or package directory of every non-standard module
# `megapodd.ctl.main` pulls in.
_CLOSURE = """
import json, sys, sysconfig
import megapodd.ctl.main
stdlib = sysconfig.get_paths()["stdlib"]
found = {}
for name, module in list(sys.modules.items()):
    top = name.partition(".")[0]
    file = getattr(sys.modules.get(top), "__file__", None)
    if not file or file.startswith(stdlib + "/") or top.startswith("_"):
        continue
    found[top] = file
print(json.dumps(found))
"""

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from megapodd.ctl.main import main; sys.exit(main())"
)


@dataclass(frozen=True, slots=True)
class OtherUidCli:
    """How to start megapodctl so that any uid can run it."""

    python: str  # an interpreter any uid can run, not the venv's symlink
    packages: Path  # world-readable copy of what megapodctl imports

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-S", "-c", _BOOT, str(self.packages), *args]


def _make_readable(root: Path) -> None:
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)  # noqa: S103 - other uids must enter it
        for name in files:
            os.chmod(Path(directory) / name, 0o644)


def _searchable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def _interpreter_for_others() -> str:
    """The venv's base interpreter if any uid can run it, else a system one of
    the same version (the venv's may live under a private home, e.g. pyenv)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.realpath(sys.executable)]
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system is not None:
        candidates.append(os.path.realpath(system))
    for candidate in candidates:
        if _searchable_by_others(Path(candidate)):
            return candidate
    raise RuntimeError(f"no {version} that other users can run: tried {candidates}")


@contextmanager
def readable_megapodctl() -> Iterator[OtherUidCli]:
    """A copy of megapodctl's code that other uids can run; removed afterwards."""
    closure = subprocess.run(
        [sys.executable, "-c", _CLOSURE], capture_output=True, text=True, check=True, timeout=60
    )
    modules: dict[str, str] = json.loads(closure.stdout)
    python = _interpreter_for_others()
    with tempfile.TemporaryDirectory(prefix="megapodctl-other-uid-") as tmp:
        packages = Path(tmp) / "packages"
        packages.mkdir()
        for name, file in modules.items():
            source = Path(file)
            if source.name == "__init__.py":
                shutil.copytree(
                    source.parent, packages / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(source, packages / source.name)
        # Compiled by the interpreter that runs it, so the other uid never needs to write.
        subprocess.run([python, "-m", "compileall", "-q", str(packages)], check=True, timeout=120)
        _make_readable(Path(tmp))
        if not _searchable_by_others(packages):
            raise RuntimeError(f"{packages} is not reachable by other users: set TMPDIR elsewhere")
        yield OtherUidCli(python, packages)


async def run_as(
    cli: OtherUidCli, uid: int | str, gid: int | str, *args: str, timeout_s: float = 30.0
) -> tuple[int, str]:
    """megapodctl as `uid`:`gid` with no supplementary groups; (exit code, stdout+stderr)."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed"
    proc = await asyncio.create_subprocess_exec(
        setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *cli.argv(*args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    code, out, _ = await communicate(proc, timeout_s)
    return code, out.decode()
