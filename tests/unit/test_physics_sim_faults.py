"""Fault requests: what is accepted, and the message for what is not."""

from __future__ import annotations

import pytest

from sim_devices import faults as f
from sim_devices.physics import ServerId
from sim_devices.profiles import PROFILES, Profile

CATALOG = f.DeviceCatalog(
    PROFILES[Profile.SMALL],
    cdu_points=frozenset({"supply_temp_c", "flow_lpm"}),
    pdu_points=frozenset(),
    bmc_points=frozenset({"gpu1_temp_c", "inlet_temp_c"}),
)


def parse(*words: str) -> f.Fault:
    return f.parse_fault(words[0], list(words[1:]), CATALOG)


@pytest.mark.parametrize(
    ("words", "fault"),
    [
        (("leak", "r2"), f.Leak(2)),
        (("leak", "1"), f.Leak(1)),
        (("leak", "r1s03"), f.Leak(1, ServerId(1, 3))),
        (("pump-seize", "2"), f.PumpSeize(2)),
        (
            ("sensor-stuck", "cdu1", "supply_temp_c", "-5.5"),
            f.SensorStuck("cdu1", f.DeviceKind.CDU, "supply_temp_c", -5.5),
        ),
        (
            ("sensor-range", "r2s04", "gpu1_temp_c"),
            f.SensorRange("r2s04", f.DeviceKind.BMC, "gpu1_temp_c"),
        ),
        (("silent", "pdu-r2a"), f.Silent("pdu-r2a", f.DeviceKind.PDU)),
        (("silent", "cdu1"), f.Silent("cdu1", f.DeviceKind.CDU)),
        (("garbage", "r1s01", "0.3"), f.Garbage(ServerId(1, 1), 0.3)),
        (("reading-corrupt", "r1s01", "0.2"), f.ReadingCorrupt(ServerId(1, 1), 0.2)),
        (("breaker-trip", "pdu-r1a", "3"), f.BreakerTrip("pdu-r1a", 3)),
        (("facility-hot", "32"), f.FacilityHot(32.0)),
        (("workload", "all", "90"), f.Workload(None, 90.0)),
        (("workload", "r2", "0"), f.Workload(2, 0.0)),
        (("fan-fail", "r1s02", "3"), f.FanFail(ServerId(1, 2), 3)),
        (("fan-fail", "r2s04", "04"), f.FanFail(ServerId(2, 4), 4)),
        (("local-mode",), f.LocalMode()),
        (("heartbeat-lost",), f.HeartbeatLost()),
    ],
)
def test_good_faults_parse_and_describe_back(words: tuple[str, ...], fault: f.Fault) -> None:
    parsed = parse(*words)
    assert parsed == fault
    assert parse(*f.describe(parsed).split()) == parsed


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (("flood", "r1"), "unknown fault 'flood'; known faults: leak, pump-seize"),
        (("leak",), "leak takes 1 argument"),
        (("leak", "r1", "r2"), "leak takes 1 argument"),
        (("leak", "r3"), "unknown rack 'r3': this pod has racks r1..r2"),
        (("leak", "r1s05"), "unknown server 'r1s05'"),
        (("leak", "rack-one"), "not a rack or server"),
        (("pump-seize", "3"), "pump must be 1-2, got 3"),
        (("pump-seize", "one"), "pump must be an integer"),
        (("sensor-stuck", "cdu2", "supply_temp_c", "1"), "unknown device 'cdu2'"),
        (("sensor-stuck", "cdu1", "gpu1_temp_c", "1"), "cdu1 (cdu) has no sensor point"),
        (("sensor-stuck", "cdu1", "supply_temp_c", "hot"), "value must be a number"),
        (("sensor-stuck", "cdu1", "supply_temp_c", "nan"), "value must be a finite number"),
        (("sensor-range", "pdu-r1a", "current"), "has no sensor point 'current'; points: none"),
        (("silent", "r9s01"), "unknown device 'r9s01'"),
        (("garbage", "pdu-r1a", "0.5"), "garbage needs a BMC"),
        (("garbage", "r1s01", "1.5"), "0 < rate <= 1"),
        (("garbage", "r1s01", "0"), "0 < rate <= 1"),
        (("reading-corrupt", "pdu-r1a", "0.2"), "reading-corrupt needs a BMC"),
        (("breaker-trip", "pdu-r1a", "4"), "phase must be 1-3, got 4"),
        (("breaker-trip", "cdu1", "1"), "breaker-trip needs a PDU"),
        (("facility-hot", "150"), "must be 1-70 C"),
        (("workload", "all", "101"), "workload must be 0-100 %"),
        (("workload", "all", "-1"), "workload must be 0-100 %"),
        (("workload", "r5", "50"), "unknown rack 'r5'"),
        (("fan-fail", "r1s02"), "fan-fail takes 2 argument"),
        (("fan-fail", "r1s02", "5"), "fan must be 1-4, got 5"),
        (("fan-fail", "r1s02", "0"), "fan must be 1-4, got 0"),
        (("fan-fail", "r1s02", "top"), "fan must be an integer 1-4"),
        (("fan-fail", "pdu-r1a", "1"), "fan-fail needs a server's BMC, 'pdu-r1a' is not one"),
        (("fan-fail", "r3s01", "1"), "unknown device 'r3s01'"),
        (("local-mode", "cdu1"), "local-mode takes 0 argument"),
        (("heartbeat-lost", "now"), "heartbeat-lost takes 0 argument"),
    ],
)
def test_bad_faults_say_what_is_wrong(words: tuple[str, ...], message: str) -> None:
    with pytest.raises(f.FaultError) as info:
        parse(*words)
    assert message in str(info.value)


def test_keys_let_one_fault_replace_another_on_the_same_thing() -> None:
    assert parse("facility-hot", "30").key == parse("facility-hot", "40").key
    assert (
        parse("sensor-stuck", "cdu1", "flow_lpm", "1").key
        == parse("sensor-range", "cdu1", "flow_lpm").key
    )
    assert parse("leak", "r1").key != parse("leak", "r1s01").key


@pytest.mark.parametrize(
    ("words", "key"),
    [
        (("leak",), ("leak",)),
        (("leak", "r1s02"), ("leak", "r1s02")),
        (("sensor-range",), ("sensor",)),
        (("sensor-stuck", "cdu1"), ("sensor", "cdu1")),
        (("breaker-trip", "pdu-r2a", "1"), ("breaker-trip", "pdu-r2a", "1")),
        (("workload", "all"), ("workload", "all")),
        (("pump-seize", "1"), ("pump-seize", "1")),
        (("fan-fail",), ("fan-fail",)),
        (("fan-fail", "r1s02"), ("fan-fail", "r1s02")),
        (("fan-fail", "r1s02", "03"), ("fan-fail", "r1s02", "3")),
    ],
)
def test_clear_keys(words: tuple[str, ...], key: tuple[str, ...]) -> None:
    assert f.clear_key(words[0], list(words[1:]), CATALOG) == key


def test_clear_of_unknown_things_is_refused() -> None:
    with pytest.raises(f.FaultError, match="unknown fault"):
        f.clear_key("bogus", [], CATALOG)
    with pytest.raises(f.FaultError, match="unknown device"):
        f.clear_key("silent", ["pdu-r7a"], CATALOG)
    with pytest.raises(f.FaultError, match="not per server"):
        f.clear_key("workload", ["r1s01"], CATALOG)
    with pytest.raises(f.FaultError, match="fan must be 1-4"):
        f.clear_key("fan-fail", ["r1s01", "9"], CATALOG)
    with pytest.raises(f.FaultError, match="needs a server's BMC"):
        f.clear_key("fan-fail", ["cdu1"], CATALOG)


def test_a_clear_key_matches_the_fault_it_names() -> None:
    fault = parse("fan-fail", "r1s02", "3")
    for words in (("fan-fail",), ("fan-fail", "r1s02"), ("fan-fail", "r1s02", "3")):
        prefix = f.clear_key(words[0], list(words[1:]), CATALOG)
        assert fault.key[: len(prefix)] == prefix
    other = f.clear_key("fan-fail", ["r1s02", "2"], CATALOG)
    assert fault.key[: len(other)] != other
