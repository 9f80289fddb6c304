"""[power]: the budget's bad inputs are config errors naming the key and the bound."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from megapodd.config import ConfigError, parse_config

POD = """
[pod]
id = "pod-a"
[[pdu]]
id = "pdu-r1a"
host = "127.0.0.1"
rack = 1
breaker_a = 63
[[bmc]]
id = "r1s01"
port = "/dev/ttyS1"
rack = 1
pdu = "pdu-r1a"
outlet = 1
priority = 10
min_cap_w = 3000
[[bmc]]
id = "r1s02"
port = "/dev/ttyS2"
rack = 1
pdu = "pdu-r1a"
outlet = 2
"""


def _parse(text: str) -> object:
    return parse_config(tomllib.loads(text), Path("megapodd.toml"))


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    return caught.value.problems


def test_a_power_section_parses_with_its_defaults() -> None:
    config = parse_config(tomllib.loads(POD + "[power]\nbudget_w = 15000\n"), Path("x"))
    assert config.power is not None
    assert config.power.phase_limit_pct == 80.0
    assert config.power.budget_ceiling_w == 15000.0  # run-time changes can only lower it
    assert [b.min_cap_w for b in config.bmc] == [3000.0, 2000.0]
    assert config.min_budget_w() == 5000.0


def test_no_power_section_means_no_budget() -> None:
    assert parse_config(tomllib.loads(POD), Path("x")).power is None


def test_a_budget_below_the_servers_min_caps_is_refused() -> None:
    (problem,) = _problems(POD + "[power]\nbudget_w = 4000\n")
    assert "budget_w 4000 W is below the sum of the servers' min_cap_w (5000 W)" in problem


def test_a_phase_limit_above_100_percent_is_refused() -> None:
    (problem,) = _problems(POD + "[power]\nbudget_w = 9000\nphase_limit_pct = 120\n")
    assert problem.startswith("power.phase_limit_pct:") and "100" in problem


def test_the_run_time_maximum_is_not_below_the_budget() -> None:
    (problem,) = _problems(POD + "[power]\nbudget_w = 9000\nmax_budget_w = 8000\n")
    assert "max_budget_w 8000 W is below budget_w 9000 W" in problem
    (problem,) = _problems(POD + "[power]\nmax_budget_w = 8000\n")
    assert "max_budget_w needs budget_w" in problem


def test_servers_without_their_feed_and_a_pod_without_pdus_are_refused() -> None:
    unfed = POD.replace('pdu = "pdu-r1a"\noutlet = 2\n', "")
    (problem,) = _problems(unfed + "[power]\nbudget_w = 9000\n")
    assert "each server's pdu and outlet" in problem and "r1s02" in problem
    no_pdus = '[pod]\nid = "p"\n[power]\nbudget_w = 9000\n'
    (problem,) = _problems(no_pdus)
    assert "at least one [[pdu]]" in problem


def test_bad_numbers_name_their_key() -> None:
    problems = _problems(POD + "[power]\nbudget_w = -1\nrelease_s = 0\nbogus = 1\n")
    assert {p.split(":")[0] for p in problems} == {
        "power.budget_w",
        "power.release_s",
        "power.bogus",
    }
    (problem,) = _problems(POD.replace("min_cap_w = 3000", "min_cap_w = 50"))
    assert problem.startswith("bmc.0.min_cap_w:")


def test_a_loop_on_a_power_limit_beside_the_budget_is_refused() -> None:
    loop = (
        '[[loop]]\nid = "cap-r1s01"\ncontroller = "demand"\ninput = "r1s01.gpu1_temp_c"\n'
        'gain = 100.0\noutput = "r1s01.power_limit_w"\n'
    )
    problems = _problems(POD + loop + "[power]\nbudget_w = 9000\n")
    assert any("loop cap-r1s01 would fight it" in p for p in problems), problems
    assert not any("would fight" in p for p in _problems(POD + loop))  # no budget, no fight
