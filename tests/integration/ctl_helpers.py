"""Running the real megapodctl in tests, as an operator's shell would: at 80
columns, no colour, the socket named on the command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import communicate

MEGAPODCTL = str(Path(sys.executable).parent / "megapodctl")
# A cell rich cut short ends in "…" right after text; megapodd's own "…"
# (`outlet_1 … outlet_24`) always has a space before it.
_CUT = re.compile(r"[^\s│┃]…")
_BORDERS = frozenset("│┃┏┓┗┛┡┩└┘")


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MEGAPODD_SOCKET", "COLUMNS"}}
    return env | {"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)

    def table(self) -> str:
        """The output, checked to be for people at 80 columns: exit 0, nothing
        on stderr, no line wider than 80, no value cut short."""
        assert (self.code, self.err) == (0, ""), self
        lines = self.out.splitlines()
        wide = [line for line in lines if len(line) > 80]
        assert not wide, wide
        # A table the terminal had to crop has lost its right border.
        cropped = [ln for ln in lines if ln[:1] in _BORDERS and ln.rstrip()[-1:] not in _BORDERS]
        assert not cropped, self.out
        assert not _CUT.search(self.out), self.out
        return self.out

    def refused(self, code: int, *words: str) -> str:
        """The failure: this exit code, nothing on stdout, one line on stderr
        with these words, and no traceback."""
        assert (self.code, self.out) == (code, ""), self
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("megapodctl"), self.err
        for word in words:
            assert word in lines[0], (word, lines[0])
        return lines[0]


async def ctl(sock: str, *args: str, timeout_s: float = 30.0) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        MEGAPODCTL, "--socket", sock, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    code, out, err = await communicate(proc, timeout_s)
    return Ran(code, out.decode(), err.decode())


def words(text: str) -> str:
    """Table text with borders and line breaks gone, for finding a value that wrapped."""
    return " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘━─╇┳┻┼╋┃]", " ", text).split())
