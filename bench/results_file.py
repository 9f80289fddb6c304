"""Writing a benchmark's results file without losing what was written by hand.

A benchmark rewrites its file in bench/results/ with each run. Notes written
by hand (earlier runs, profiles, verdicts) go below NOTES_MARKER and are kept.
"""

from __future__ import annotations

from pathlib import Path

NOTES_MARKER = "<!-- Written by hand below; kept when the benchmark rewrites this file. -->"


def write_results(path: Path, text: str) -> None:
    """`text` as the file's generated part, then the hand-written notes it had."""
    old = path.read_text() if path.exists() else ""
    notes = old[old.index(NOTES_MARKER) :] if NOTES_MARKER in old else ""
    path.write_text(text.rstrip("\n") + "\n\n" + notes if notes else text)
