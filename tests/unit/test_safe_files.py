"""The one reader for the files a config names: bounded, never blocking, regular files only;
the API socket path is replaced only when it is a socket."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from megapodd.api.server import ApiServer
from megapodd.safe_files import (
    MAX_SECRET_BYTES,
    FileRefused,
    check_socket_path,
    read_secret_text,
    read_small_file,
)


def test_a_small_regular_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  s3cret\n")
    link = tmp_path / "link"
    link.symlink_to(secret)  # e.g. a mounted secret that points at its current version
    assert read_secret_text(secret) == "s3cret"
    assert read_secret_text(link) == "s3cret"
    exact = tmp_path / "exact"
    exact.write_bytes(b"k" * MAX_SECRET_BYTES)
    assert len(read_small_file(exact)) == MAX_SECRET_BYTES


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("fifo", "it is a FIFO"),
        ("zero", "it is a character device"),
        ("dir", "it is a directory"),
        ("socket", "it is a socket"),
        ("big", f"it is {MAX_SECRET_BYTES + 1} bytes"),
        ("missing", "No such file or directory"),
        ("binary", "is not UTF-8 text (byte 0); use PEM"),
        ("blank", "is empty"),
    ],
)
def test_anything_else_is_refused_at_once(tmp_path: Path, make: str, message: str) -> None:
    path = tmp_path / "x"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "zero":
        path = Path("/dev/zero")
    elif make == "dir":
        path.mkdir()
    elif make == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.close()
    elif make == "big":
        path.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    elif make == "binary":
        path.write_bytes(b"\xff\x00")
    elif make == "blank":
        path.write_text(" \n")
    started = time.monotonic()
    with pytest.raises(FileRefused, match=re.escape(message)):
        read_secret_text(path)
    assert time.monotonic() - started < 1.0


def test_the_socket_path_check_refuses_everything_but_a_socket(tmp_path: Path) -> None:
    check_socket_path(tmp_path / "absent")
    sock = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock))
    check_socket_path(sock)
    link = tmp_path / "l"
    link.symlink_to(sock)
    with pytest.raises(FileRefused, match="is a symbolic link; it must be a socket"):
        check_socket_path(link)
    with pytest.raises(FileRefused, match="is a directory"):
        check_socket_path(tmp_path)


async def test_the_api_server_never_deletes_a_regular_file_at_its_path(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    with pytest.raises(FileRefused, match="is a regular file"):
        await ApiServer(precious, {}).run()
    assert precious.read_text() == "keep me\n"
