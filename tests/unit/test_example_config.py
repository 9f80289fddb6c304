"""The example config the package installs as /etc/megapodd/megapodd.toml is
valid as shipped (naming no device), and so are its example settings once
uncommented: an operator who starts from them gets a config that checks."""

from __future__ import annotations

import re
from pathlib import Path

from megapodd.config import load_config

EXAMPLE = Path(__file__).parents[2] / "pkg" / "deb" / "megapodd.toml"


def test_the_example_as_shipped_is_valid_and_names_no_device() -> None:
    config = load_config(EXAMPLE)
    assert config.pod.id == "pod-example"
    assert (config.cdu, config.pdu, config.bmc, config.interlock) == ([], [], [], [])
    # The unit's sandbox only lets it write its own state and runtime directories.
    assert str(config.state.dir) == "/var/lib/megapodd"
    assert str(config.api.socket) == "/run/megapodd/megapodd.sock"


def test_every_example_setting_uncommented_is_valid(tmp_path: Path) -> None:
    # Example settings are '#' directly followed by a key or a [table]; prose has '# '.
    text = re.sub(r"(?m)^#(?=[\[a-z])", "", EXAMPLE.read_text())
    password = tmp_path / "mqtt-password"
    password.write_text("secret\n")
    path = tmp_path / "megapodd.toml"
    path.write_text(text.replace("/etc/megapodd/mqtt-password", str(password)))
    config = load_config(path)
    assert [c.id for c in config.cdu] == ["cdu1"]
    assert [p.id for p in config.pdu] == ["pdu-r1a"]
    assert [b.id for b in config.bmc] == ["r1s01"]
    assert [rule.id for rule in config.interlock] == ["coolant-supply-hot"]
    assert config.mqtt.username == "pod-example"
