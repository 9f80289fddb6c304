"""The plausibility gate: ranges, counters, one event per streak, the store's reason."""

from __future__ import annotations

from drivers.base import Plausible, Point, Quality
from drivers.snmp.rack_pdu import plausible_ranges
from megapodd.events import EventBus
from megapodd.plausibility import PlausibilityGate
from megapodd.store import PointStore

ENERGY = plausible_ranges(24, breaker_a=32.0)["energy_kwh"]


def test_a_range_refuses_outside_and_nan() -> None:
    volts = Plausible(0.0, 264.0)
    assert volts.refuses(230.0, None, 0.0) is None
    assert volts.refuses(0.0, None, 0.0) is None  # a phase without supply
    assert "outside the plausible 0..264" in (volts.refuses(-2.0, None, 0.0) or "")
    assert volts.refuses(float("nan"), None, 0.0) is not None


def test_an_energy_counter_never_runs_backwards_except_a_reset() -> None:
    assert ENERGY.refuses(100.0, None, 0.0) is None  # the first reading sets the base
    assert ENERGY.refuses(100.0, 100.0, 1.0) is None
    assert "backwards" in (ENERGY.refuses(99.9, 100.0, 1.0) or "")
    assert ENERGY.refuses(0.3, 100.0, 1.0) is None  # reset to zero
    # 3 phases x 46.4 A x 264 V = 36.8 kW: at most 0.0102 kWh/s, plus 0.2 kWh.
    assert ENERGY.refuses(100.2, 100.0, 0.0) is None
    assert "rose by" in (ENERGY.refuses(101.0, 100.0, 10.0) or "")
    assert ENERGY.refuses(101.0, 100.0, 100.0) is None


def test_the_gate_makes_readings_bad_with_a_reason_and_one_event_per_streak() -> None:
    events = EventBus()
    store = PointStore(events)
    store.add_device("pdu", "pdu")
    ranges = plausible_ranges(24, breaker_a=32.0)
    gate = PlausibilityGate("pdu", ranges.get, events)

    def read(now_s: float, volts: float, energy: float) -> None:
        readings = {
            "phase1_voltage_v": Point(volts, "V"),
            "energy_kwh": Point(energy, "kWh"),
            "load_state": Point("normal"),
        }
        checked, reasons = gate.check(readings, now_s)
        store.update("pdu", checked, 1000.0 + now_s, now_s, reasons)

    read(0.0, 230.0, 50.0)
    read(1.0, -2.0, 20.0)
    read(2.0, -2.0, 20.0)
    volts, energy = store.get("pdu", "phase1_voltage_v"), store.get("pdu", "energy_kwh")
    assert volts is not None and volts.quality is Quality.BAD and volts.value == -2.0
    assert volts.reason is not None and "outside" in volts.reason
    assert volts.mono_s == 0.0  # the last good reading's time: it still ages
    assert energy is not None and energy.quality is Quality.BAD
    assert energy.as_json()["reason"] == "counter ran backwards from 50.0 to 20.0"
    found = [e for e in events.recent if e.type == "point_implausible"]
    assert [e.data["point"] for e in found] == ["phase1_voltage_v", "energy_kwh"]
    assert gate.implausible == 4
    read(3.0, 231.0, 50.1)
    read(4.0, -3.0, 50.1)  # a new streak
    assert len([e for e in events.recent if e.type == "point_implausible"]) == 3
    good = store.get("pdu", "energy_kwh")
    assert good is not None and good.quality is Quality.GOOD and good.reason is None
    # A reconnect forgets the counter's base: a replaced PDU reads lower.
    gate.forget_counters()
    read(5.0, 230.0, 7.0)
    again = store.get("pdu", "energy_kwh")
    assert again is not None and again.quality is Quality.GOOD


def test_an_unconfirmed_reading_keeps_the_last_good_value_and_is_no_reading() -> None:
    store = PointStore()
    store.add_device("bmc", "bmc")
    seen: list[frozenset[str]] = []
    store.readings.add("test", lambda _device, names: seen.append(names))
    store.update("bmc", {"gpu1_temp_c": Point(51.0, "C")}, 1000.0, 0.0)
    store.update("bmc", {"gpu1_temp_c": Point(107.0, "C", unconfirmed=True)}, 1002.0, 2.0)
    point = store.get("bmc", "gpu1_temp_c")
    assert point is not None and point.value == 51.0 and point.quality is Quality.GOOD
    assert point.mono_s == 0.0 and point.ts == 1000.0
    assert point.as_json()["unconfirmed"] is True
    assert seen == [frozenset({"gpu1_temp_c"})]
    store.update("bmc", {"gpu1_temp_c": Point(52.0, "C")}, 1004.0, 4.0)
    point = store.get("bmc", "gpu1_temp_c")
    assert point is not None and not point.unconfirmed and "unconfirmed" not in point.as_json()
    # Nothing to keep yet: the first reading unconfirmed adds no point.
    store.update("bmc", {"gpu2_temp_c": Point(70.0, "C", unconfirmed=True)}, 1004.0, 4.0)
    assert store.get("bmc", "gpu2_temp_c") is None
