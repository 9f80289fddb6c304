"""Layouts, cabling, ports and the written daemon config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from megapodd.config import load_config
from sim_devices.config_writer import (
    ConfigWriteError,
    DaemonConfigSpec,
    render_config,
    write_config,
)
from sim_devices.physics import ServerId
from sim_devices.profiles import (
    PROFILES,
    LayoutError,
    PodLayout,
    PortPlan,
    Profile,
    SimPaths,
    breaker_rating_a,
)

FULL = PROFILES[Profile.FULL]
SMALL = PROFILES[Profile.SMALL]


def test_profiles_have_the_documented_sizes() -> None:
    assert (SMALL.server_count, SMALL.pdu_count, SMALL.outlets_per_pdu) == (8, 2, 24)
    assert (FULL.server_count, FULL.pdu_count, FULL.outlets_per_pdu) == (144, 16, 48)
    assert FULL.pdu_ids()[:3] == ("pdu-r1a", "pdu-r1b", "pdu-r2a")


def test_servers_alternate_pdus_and_spread_over_phases() -> None:
    plugs = [FULL.plug(ServerId(3, slot)) for slot in range(1, 19)]
    assert {p.pdu_id for p in plugs} == {"pdu-r3a", "pdu-r3b"}
    on_a = [p for p in plugs if p.pdu_id == "pdu-r3a"]
    assert [p.outlet for p in on_a] == list(range(1, 10))
    # Three servers per phase per PDU: balanced.
    assert sorted(p.phase for p in on_a) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    # Every outlet is used once.
    assert len({(p.pdu_id, p.outlet) for p in plugs}) == 18


def test_breaker_is_sized_for_the_busiest_phase_at_peak() -> None:
    # Small: two 10.2 kW servers on phase 1 at 230 V = 88.7 A, / 0.8 = 111 A -> 125 A.
    assert breaker_rating_a(SMALL, 10_200.0, 230.0) == 125.0
    # Full: three per phase = 133 A, / 0.8 = 166 A -> 200 A.
    assert breaker_rating_a(FULL, 10_200.0, 230.0) == 200.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"racks": 17}, "racks must be 1-16, got 17"),
        ({"racks": 0}, "racks must be 1-16, got 0"),
        ({"servers_per_rack": 100}, "servers per rack must be 1-99"),
        ({"pdus_per_rack": 3}, "PDUs per rack must be 1-2"),
        ({"outlets_per_pdu": 0}, "outlets per PDU must be 1-96"),
        ({"servers_per_rack": 30, "outlets_per_pdu": 24}, "do not fit on 1 PDU(s) of 24 outlets"),
    ],
)
def test_impossible_layouts_are_named(kwargs: dict[str, int], message: str) -> None:
    base = {"racks": 2, "servers_per_rack": 4, "pdus_per_rack": 1, "outlets_per_pdu": 24}
    with pytest.raises(LayoutError) as info:
        PodLayout(**(base | kwargs))
    assert message in str(info.value)


def test_ports_follow_the_base_and_must_fit() -> None:
    plan = PortPlan(20_000, FULL, bmc_tcp=True)
    assert plan.cdu_port == 20_000
    assert plan.pdu_port("pdu-r1a") == 20_001
    assert plan.pdu_port("pdu-r8b") == 20_016
    assert plan.bmc_port(ServerId(1, 1)) == 20_017
    assert plan.bmc_port(ServerId(8, 18)) == 20_016 + 144
    with pytest.raises(LayoutError, match="choose another --base-port"):
        PortPlan(65_530, FULL)
    with pytest.raises(LayoutError, match="not TCP"):
        PortPlan(20_000, FULL).bmc_port(ServerId(1, 1))


def spec(tmp_path: Path, layout: PodLayout = FULL, bmc_tcp: bool = False) -> DaemonConfigSpec:
    return DaemonConfigSpec(
        layout,
        PortPlan(21_000, layout, bmc_tcp),
        SimPaths(tmp_path / "state dir"),  # a space: paths must be quoted properly
        pod_id="pod-7",
        mqtt_url="mqtts://broker.example:8883",
    )


def test_written_config_points_at_every_device(tmp_path: Path) -> None:
    data = tomllib.loads(render_config(spec(tmp_path)))
    assert data["pod"] == {"id": "pod-7"}
    assert data["mqtt"]["url"] == "mqtts://broker.example:8883"
    assert data["api"]["socket"] == str(tmp_path / "state dir" / "megapodd.sock")
    assert data["state"]["dir"] == str(tmp_path / "state dir" / "state")
    assert data["cdu"] == [
        {"id": "cdu1", "url": "modbus+tcp://127.0.0.1:21000", "unit": 1, "poll_s": 0.25}
    ]
    assert len(data["pdu"]) == 16
    assert data["pdu"][15] | {} == {
        "id": "pdu-r8b",
        "host": "127.0.0.1",
        "port": 21_016,
        "version": "2c",
        "community": "public",
        "write_community": "private",
        "outlets": 48,
        "rack": 8,
        "breaker_a": 200,  # as the simulator sizes them
        "fast_poll_s": 1.0,
        "slow_poll_s": 10.0,
    }
    assert len(data["bmc"]) == 144
    assert data["bmc"][1] == {
        "id": "r1s02",
        "port": str(tmp_path / "state dir" / "pty" / "r1s02.tty"),
        "baud": 115_200,
        "rack": 1,
        "pdu": "pdu-r1b",
        "outlet": 1,
        "poll_s": 2.0,
    }


def test_written_config_passes_the_daemons_validation(tmp_path: Path) -> None:
    for layout, bmc_tcp in ((FULL, False), (SMALL, True)):
        path = tmp_path / f"pod-{layout.server_count}.toml"
        write_config(path, render_config(spec(tmp_path, layout, bmc_tcp)))
        config = load_config(path)
        assert len(config.bmc) == layout.server_count
        assert len(config.pdu) == layout.pdu_count
    assert config.bmc[0].port == "socket://127.0.0.1:21003"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "pod.toml"
    path.write_text("old")
    write_config(path, "new\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pod.toml"]


@pytest.mark.parametrize(
    ("pod_id", "url", "message"),
    [
        ("Pod 1", "mqtt://h", "pod id 'Pod 1' must be lower-case"),
        ("pod", "http://h", "MQTT URL must start mqtt:// or mqtts://"),
    ],
)
def test_bad_pod_id_or_url_is_named(tmp_path: Path, pod_id: str, url: str, message: str) -> None:
    with pytest.raises(ConfigWriteError) as info:
        DaemonConfigSpec(SMALL, PortPlan(21_000, SMALL), SimPaths(tmp_path), pod_id, url)
    assert message in str(info.value)
