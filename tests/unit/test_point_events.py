"""Point changes that matter become events; an alarm present at start is reported."""

from __future__ import annotations

from drivers.base import Point
from megapodd.events import EventBus, Severity
from megapodd.point_events import PointEvents
from megapodd.store import PointStore


def _setup() -> tuple[PointStore, EventBus]:
    store, events = PointStore(), EventBus("boot")
    store.add_device("cdu1", "cdu")
    store.add_device("pdu1", "pdu")
    store.changes.add("point events", PointEvents(store, events).on_change)
    return store, events


def test_a_leak_present_at_the_first_reading_is_an_alarm() -> None:
    store, events = _setup()
    store.update("cdu1", {"leak": Point(True), "leak_zones": Point(0b100)}, 1.0, 1.0)
    kinds = {(e.type, e.severity) for e in events.recent}
    assert kinds == {("leak_changed", Severity.ALARM), ("leak_zones_changed", Severity.ALARM)}


def test_ordinary_first_readings_are_quiet_and_changes_are_events() -> None:
    store, events = _setup()
    store.update("pdu1", {"outlet_01_state": Point("on"), "load_state": Point("normal")}, 1, 1)
    assert list(events.recent) == []
    store.update("pdu1", {"outlet_01_state": Point("off"), "load_state": Point("overload")}, 2, 2)
    by_type = {e.type: e for e in events.recent}
    assert by_type["outlet_state_changed"].data == {
        "point": "outlet_01_state",
        "from": "on",
        "to": "off",
    }
    assert by_type["pdu_load_state_changed"].severity is Severity.ALARM
    store.update("pdu1", {"load_state": Point("normal")}, 3, 3)
    assert events.recent[-1].severity is Severity.INFO


def test_event_data_is_always_plain_json() -> None:
    events = EventBus("boot")
    event = events.emit(
        "command_rejected",
        Severity.WARNING,
        "megapodctl",
        "refused",
        {"args": {"value": float("inf"), "n": [float("nan"), 1.5]}, "when": object()},
    )
    args = event.data["args"]
    assert args == {"value": None, "n": [None, 1.5]}
    assert isinstance(event.data["when"], str)
