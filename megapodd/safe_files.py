"""The files a config names: small secrets read safely, and the API socket path.

One reader for validation and for run time, so a file that passes
`--check-config` is read the same way later. It never blocks and never reads
more than its bound: the path is stat()ed before it is opened (opening some
devices has effects, e.g. /dev/watchdog arms the watchdog), opened with
O_NONBLOCK (a FIFO swapped in after the stat does not hang the open), and
fstat()ed again to be sure the open file is the regular file that was checked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET_BYTES = 4096  # passwords, SNMPv3 passphrases, private keys
MAX_CERT_BYTES = 64 * 1024  # CA bundles and certificate chains: several PEM certificates

_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefused(ValueError):
    """A named file is missing, not what it must be, too big, or not UTF-8 text.
    A ValueError, so a config validator turns it into a problem with its key."""


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "of an unknown type"


def _check_regular(path: Path, info: os.stat_result, max_bytes: int) -> None:
    bound = f"must be a regular file of at most {max_bytes} bytes"
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{path} {bound}; it is {_kind(info.st_mode)}")
    if info.st_size > max_bytes:
        raise FileRefused(f"{path} {bound}; it is {info.st_size} bytes")


def read_small_file(path: Path, max_bytes: int = MAX_SECRET_BYTES) -> bytes:
    """The whole content of a regular file of at most `max_bytes`; FileRefused otherwise."""
    try:
        _check_regular(path, os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(f"cannot read {path}: {exc.strerror}") from None
    try:
        _check_regular(path, os.fstat(fd), max_bytes)
        chunks: list[bytes] = []
        size = 0
        # Read one byte past the bound: a file that grew after fstat is refused too.
        while size <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileRefused(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise FileRefused(f"{path} grew past {max_bytes} bytes while it was read")
    return b"".join(chunks)


def read_secret_text(path: Path, max_bytes: int = MAX_SECRET_BYTES) -> str:
    """A file's UTF-8 text stripped of surrounding whitespace; empty counts as an error."""
    data = read_small_file(path, max_bytes)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise FileRefused(f"{path} is not UTF-8 text (byte {exc.start}); use PEM") from None
    if not text:
        raise FileRefused(f"{path} is empty")
    return text


def check_socket_path(path: Path) -> None:
    """The API socket path is a socket or does not exist: never replace anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileRefused(f"cannot check {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise FileRefused(
            f"{path} exists and is {_kind(info.st_mode)}; it must be a socket or not exist "
            "(anything else is never replaced)"
        )
