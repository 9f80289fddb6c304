"""Config validation: every problem reported at once, with its key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from megapodd.config import ConfigError, load_config

BIN = Path(sys.executable).parent

GOOD = """
[pod]
id = "pod-a"
[mqtt]
url = "mqtts://broker.example:8883"
username = "pod-a"
[[cdu]]
id = "cdu1"
url = "modbus+rtu:///dev/ttyUSB0?baud=19200&parity=E"
[[pdu]]
id = "pdu-r1a"
host = "127.0.0.1"
port = 16100
rack = 1
outlets = 48
[[pdu]]
id = "pdu-r1b"
host = "127.0.0.1"
version = "3"
user = "megapod"
auth_key_file = "KEYS/auth"
priv_key_file = "KEYS/priv"
rack = 1
[[bmc]]
id = "r1s01"
port = "socket://10.0.0.5:7001"
rack = 1
pdu = "pdu-r1a"
outlet = 1
"""


def _write(tmp_path: Path, text: str) -> Path:
    """Write a config; KEYS stands for a directory with readable v3 key files."""
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "auth").write_text("auth-passphrase\n")
    (keys / "priv").write_text("priv-passphrase\n")
    path = tmp_path / "megapodd.toml"
    path.write_text(text.replace("KEYS", str(keys)))
    return path


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    return caught.value.problems


def test_a_good_config_parses_into_typed_objects(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert config.pod.id == "pod-a"
    assert config.mqtt.tls and config.mqtt.port == 8883 and config.mqtt.host == "broker.example"
    assert config.mqtt.topic_prefix == "megapod/v1"
    assert config.api.socket == Path("/run/megapodd/megapodd.sock")
    assert config.state.dir == Path("/var/lib/megapodd")
    assert [p.version for p in config.pdu] == ["2c", "3"]
    assert config.bmc[0].baud == 115200


def test_every_problem_is_listed_with_its_key_path(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
[pod]
name = "oops"
[mqtt]
url = "http://broker"
[[cdu]]
id = "dup"
url = "modbus+tcp://127.0.0.1:99999"
[[pdu]]
id = "dup"
host = "h"
rack = 1
version = "3"
[[bmc]]
id = "b1"
port = "ttyS0"
rack = 1
pdu = "pdu-missing"
""",
    )
    joined = "\n".join(problems)
    assert "pod.id: Field required" in joined
    assert "pod.name: unknown key" in joined
    assert "mqtt.url: scheme must be mqtt:// or mqtts://" in joined
    assert "cdu.0.url:" in joined and "99999" in joined
    assert "pdu.0: version 3 needs user, auth_key_file" in joined
    assert "pdu.0.id: duplicate device id 'dup' (also cdu.0.id)" in joined
    assert "bmc.0.port: expected a device path or socket://host:port" in joined
    assert "bmc.0.pdu: no [[pdu]] with id 'pdu-missing'" in joined
    assert len(problems) == 8


def test_an_outlet_beyond_the_pdu_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("outlet = 1", "outlet = 49")
    assert _problems(tmp_path, text) == ["bmc.0.outlet: 49 exceeds 'pdu-r1a''s 48 outlets"]


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, "[pod\nid = 1")
    assert problem.startswith("not valid TOML") and "line 1" in problem


def test_check_config_exits_2_listing_errors_and_0_when_valid(tmp_path: Path) -> None:
    bad = _write(tmp_path, '[pod]\nid = "Bad Id"\nextra = 1\n')
    result = subprocess.run(
        [str(BIN / "megapodd"), "--check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "2 problem(s)" in result.stderr
    assert "pod.id: String should match pattern" in result.stderr
    assert "pod.extra: unknown key" in result.stderr

    good = _write(tmp_path, GOOD)
    result = subprocess.run(
        [str(BIN / "megapodd"), "--check-config", str(good)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    [problem] = _problems_missing(tmp_path / "nope.toml")
    assert problem.startswith("cannot read")


def _problems_missing(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_unreadable_or_empty_key_files_are_named(tmp_path: Path) -> None:
    text = GOOD.replace("KEYS/priv", "KEYS/missing").replace(
        'url = "mqtts://broker.example:8883"',
        'url = "mqtts://broker.example:8883"\npassword_file = "KEYS/empty"',
    )
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "empty").write_text("  \n")
    problems = _problems(tmp_path, text)
    assert any(p.startswith("pdu.1.priv_key_file: cannot read") for p in problems), problems
    assert any(p.startswith("mqtt.password_file:") and "is empty" in p for p in problems)


def test_two_devices_on_one_serial_line_are_refused(tmp_path: Path) -> None:
    text = GOOD + '[[bmc]]\nid = "r1s02"\nport = "/dev/ttyUSB0"\nrack = 1\n'
    problems = _problems(tmp_path, text)
    assert problems == ["bmc.1.port: serial line /dev/ttyUSB0 is already used by cdu.0.url"]


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "megapodd.toml"
    path.write_bytes(b'[pod]\nid = "\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == ["not UTF-8 text (byte 12)"]


def test_interlocks_name_real_devices_outputs_and_values(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
[[interlock]]
id = "hot"
device = "cdu1"
point = "supply_temp_c"
trip_when = "above"
limit = 45.0
actions = [
    {output = "cdu1.pump_speed_pct", value = 10},
    {output = "cdu1.valve", value = 100},
    {output = "pdu-r1a.outlet", value = 1},
    {output = "pdu-r1a.outlet_3", value = "dim"},
    {output = "pdu-r1a.outlet_4", value = "off"},
]
[[interlock]]
id = "hot"
device = "nope"
point = "x"
trip_when = "true"
"""
    )
    problems = _problems(tmp_path, text)
    assert "interlock.0.actions.0.value: cdu1.pump_speed_pct 10 is outside 20–100 %" in problems
    assert (
        "interlock.0.actions.3.value: pdu-r1a.outlet_3 takes one of on | off; got 'dim'"
        in problems
    )
    assert not any("actions.4" in p for p in problems)  # a discrete state that exists
    assert any(
        p.startswith("interlock.0.actions.1.output: no output 'cdu1.valve'") for p in problems
    )
    assert any(
        p.startswith("interlock.0.actions.2.output: no output 'pdu-r1a.outlet'") for p in problems
    )
    assert "interlock.1.id: duplicate interlock id 'hot'" in problems
    assert "interlock.1.device: no device 'nope'" in problems
