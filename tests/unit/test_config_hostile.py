"""Hostile config values (issue 14, finding 5) are refused by `megapodd --check-config`:
exit 2, a line naming the key and the bound, promptly, and nothing on disk touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

BASE = """
[pod]
id = "pod-h"
[mqtt]
url = "mqtt://127.0.0.1:1883"
MQTT
[api]
socket = "SOCKET"
[[cdu]]
id = "cdu1"
url = "modbus+tcp://127.0.0.1:502"
CDU
[[pdu]]
id = "pdu1"
host = "127.0.0.1"
PDU
[[bmc]]
id = "r1s01"
port = "socket://127.0.0.1:7001"
BMC
"""


def _config(
    tmp_path: Path,
    mqtt: str = "",
    cdu: str = "",
    pdu: str = "rack = 1",
    bmc: str = "rack = 1",
    sock: str = "",
) -> Path:
    text = (
        BASE.replace("MQTT", mqtt)
        .replace("CDU", cdu)
        .replace("PDU", pdu)
        .replace("BMC", bmc)
        .replace("SOCKET", sock or str(tmp_path / "d.sock"))
    )
    path = tmp_path / "megapodd.toml"
    path.write_text(text)
    return path


def _check(config: Path) -> tuple[int, str, float]:
    """(exit code, stderr, seconds it took) of the real CLI."""
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "megapodd"), "--check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stderr, time.monotonic() - started


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    code, err, _ = _check(_config(tmp_path))
    assert code == 0, err


# (section text, expected problem lines): every line must appear.
HOSTILE = {
    "mqtt": (
        "snapshot_s = 1e-300\nkeepalive_s = 100000\nqueue_max_events = 1e9",
        [
            "mqtt.snapshot_s: Input should be greater than or equal to 1",
            "mqtt.keepalive_s: Input should be less than or equal to 3600",
            "mqtt.queue_max_events: Input should be less than or equal to 100000",
        ],
    ),
    "cdu": (
        "timeout_s = 1e-300\npoll_s = nan",
        [
            "cdu.0.timeout_s: Input should be greater than or equal to 0.05",
            "cdu.0.poll_s: Input should be a finite number",
        ],
    ),
    "pdu": (
        "port = 0\nrack = 1e20\ntimeout_s = 1e-300\nfast_poll_s = inf",
        [
            "pdu.0.port: Input should be greater than or equal to 1",
            "pdu.0.rack: 1e+20 is not a whole number in 1–16",
            "pdu.0.timeout_s: Input should be greater than or equal to 0.05",
            "pdu.0.fast_poll_s: Input should be a finite number",
        ],
    ),
    "bmc": (
        "rack = 17\nbaud = 12345\ntimeout_s = 1e-300",
        [
            "bmc.0.rack: Input should be less than or equal to 16",
            "bmc.0.baud: 12345 is not a standard rate (1200, 2400",
            "bmc.0.timeout_s: Input should be greater than or equal to 0.05",
        ],
    ),
}


def test_hostile_numbers_are_each_refused_by_key_and_bound(tmp_path: Path) -> None:
    config = _config(tmp_path, **{section: text for section, (text, _) in HOSTILE.items()})
    code, err, _ = _check(config)
    assert code == 2
    for _, lines in HOSTILE.values():
        for line in lines:
            assert line in err, (line, err)
    expected = sum(len(lines) for _, lines in HOSTILE.values())
    assert f"{expected} problem(s)" in err, err


@pytest.mark.parametrize(
    ("where", "text", "line"),
    [
        ("mqtt", "", "mqtt.url: port 0 in 'mqtt://127.0.0.1:0' is outside 1–65535"),
        ("cdu", "", "port 0 is outside 1–65535"),
        ("bmc", "", "bmc.0.port: port 0 in 'socket://127.0.0.1:0' is outside 1–65535"),
        ("cdu", "rtu", "baud='12345' is not allowed"),
    ],
)
def test_port_zero_in_urls_and_odd_rtu_rates_are_refused(
    tmp_path: Path, where: str, text: str, line: str
) -> None:
    path = _config(tmp_path)
    body = path.read_text()
    body = {
        "mqtt": body.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:0"),
        "cdu": body.replace(
            "modbus+tcp://127.0.0.1:502",
            "modbus+rtu:///dev/ttyUSB0?baud=12345" if text else "modbus+tcp://127.0.0.1:0",
        ),
        "bmc": body.replace("socket://127.0.0.1:7001", "socket://127.0.0.1:0"),
    }[where]
    path.write_text(body)
    code, err, _ = _check(path)
    assert code == 2 and line in err, err
    key = {"mqtt": "mqtt.url:", "cdu": "cdu.0.url:", "bmc": "bmc.0.port:"}[where]
    assert key in err


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        ("dev_zero", "a character device"),
        ("fifo", "a FIFO"),
        ("directory", "a directory"),
        ("big", "it is 4097 bytes"),
    ],
)
def test_password_files_that_are_not_small_regular_files_are_refused_promptly(
    tmp_path: Path, make: str, kind: str
) -> None:
    target = tmp_path / "secret"
    if make == "dev_zero":
        target = Path("/dev/zero")
    elif make == "fifo":
        os.mkfifo(target)  # nobody ever writes: a blocking open would hang forever
    elif make == "directory":
        target.mkdir()
    else:
        target.write_bytes(b"x" * 4097)
    config = _config(tmp_path, mqtt=f'password_file = "{target}"')
    code, err, took_s = _check(config)
    assert code == 2
    assert f"mqtt.password_file: {target} must be a regular file of at most 4096 bytes" in err
    assert kind in err, err
    assert took_s < 5.0, f"--check-config took {took_s:.1f} s"


def test_every_secret_and_tls_file_uses_the_same_check(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    mqtt = (
        'url = "mqtts://127.0.0.1:8883"\n'
        f'ca_file = "/dev/zero"\ncert_file = "{tmp_path}"\nkey_file = "{tmp_path / "fifo"}"'
    )
    pdu = (
        f'rack = 1\nversion = "3"\nuser = "u"\nauth_key_file = "/dev/zero"\n'
        f'priv_key_file = "{tmp_path / "fifo"}"'
    )
    path = _config(tmp_path, mqtt=mqtt, pdu=pdu)
    path.write_text(path.read_text().replace('url = "mqtt://127.0.0.1:1883"\n', ""))
    code, err, took_s = _check(path)
    assert code == 2, err
    assert "mqtt.ca_file: /dev/zero must be a regular file of at most 65536 bytes" in err
    assert f"mqtt.cert_file: {tmp_path} must be a regular file" in err
    assert "mqtt.key_file:" in err and "a FIFO" in err
    assert "pdu.0.auth_key_file: /dev/zero must be a regular file of at most 4096" in err
    assert "pdu.0.priv_key_file:" in err
    assert took_s < 5.0


def test_an_api_socket_path_that_is_a_regular_file_is_refused_and_kept(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("do not delete\n")
    code, err, _ = _check(_config(tmp_path, sock=str(precious)))
    assert code == 2
    assert f"api.socket: {precious} exists and is a regular file" in err
    assert "must be a socket or not exist" in err
    assert precious.read_text() == "do not delete\n"


def test_an_api_socket_path_that_is_a_socket_or_absent_is_fine(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))
    code, err, _ = _check(_config(tmp_path, sock=str(stale)))
    assert code == 0, err
    too_long = "/tmp/" + "s" * 120
    code, err, _ = _check(_config(tmp_path, sock=too_long))
    assert code == 2 and "api.socket: path is 125 bytes; a Unix socket path has at most 107" in err


@pytest.mark.parametrize("make", ["dev_zero", "fifo"])
def test_a_config_file_that_is_a_device_or_fifo_is_refused_promptly(
    tmp_path: Path, make: str
) -> None:
    target = Path("/dev/zero")
    if make == "fifo":
        target = tmp_path / "megapodd.toml"
        os.mkfifo(target)
    code, err, took_s = _check(target)
    assert code == 2
    assert f"{target} must be a regular file of at most 1048576 bytes" in err
    assert took_s < 5.0
