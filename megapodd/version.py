"""The installed megapodd's version, for `megapodd --version` and `megapodctl version`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("megapodd")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
