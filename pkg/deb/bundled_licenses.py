"""Prints DEP-5 copyright paragraphs for the Python distributions bundled in
the virtualenv that runs this script (all but megapodd itself), with the
licence each one's metadata declares and where its licence files are."""

from __future__ import annotations

import sys
from importlib.metadata import Distribution, distributions
from pathlib import PurePosixPath


def _licence(dist: Distribution) -> str:
    meta = dist.metadata
    expression = meta["License-Expression"]  # None when absent
    if expression:
        return str(expression)
    classifiers = [
        c.rsplit(" :: ", 1)[-1]
        for c in meta.get_all("Classifier") or []
        if c.startswith("License :: ")
    ]
    if classifiers:
        return " or ".join(classifiers)
    declared = str(meta["License"] or "").strip().splitlines()
    return declared[0] if declared and len(declared[0]) < 80 else "see its licence files"


def _paragraph(dist: Distribution, site: PurePosixPath) -> str:
    files = [PurePosixPath(str(f)) for f in dist.files or []]
    inside = [f for f in files if f.parts and f.parts[0] != ".."]  # not bin/ scripts
    # A directory's files by pattern, a top-level module by its name.
    tops = sorted({f"{f.parts[0]}/*" if len(f.parts) > 1 else f.name for f in inside})
    licences = sorted(
        str(site / f)
        for f in files
        if f.parts[0].endswith(".dist-info")
        and f.name.upper().startswith(("LICEN", "COPYING", "NOTICE", "AUTHORS"))
    )
    name = dist.metadata["Name"]
    relative = site.relative_to("/")
    lines = [
        "Files: " + " ".join(f"{relative}/{top}" for top in tops),
        f"Copyright: the {name} authors (see its licence files)",
        f"License: {_licence(dist)}",
        f" {name} {dist.version}, bundled from PyPI. Licence files:",
    ]
    lines += [f" {path}" for path in licences] or [" none shipped; see its project page"]
    return "\n".join(lines)


def main() -> None:
    # site-packages as it will be installed, e.g. /opt/megapodd/lib/python3.11/site-packages
    site = PurePosixPath(sys.argv[1])
    bundled = sorted(
        (d for d in distributions() if d.metadata["Name"].lower() != "megapodd"),
        key=lambda d: str(d.metadata["Name"]).lower(),
    )
    print("\n\n".join(_paragraph(d, site) for d in bundled))


if __name__ == "__main__":
    main()
