"""PointStore: staleness ages good values only; NaN is no reading; change notices."""

from __future__ import annotations

from drivers.base import Point, Quality
from megapodd.store import PointStore


def test_good_values_age_to_stale_and_bad_ones_stay_bad() -> None:
    store = PointStore()
    store.add_device("d", "cdu")
    changes: list[frozenset[str]] = []
    store.changes.add("test", lambda _device, names: changes.append(names))
    store.update("d", {"t_c": Point(30.0, "C"), "p_kpa": Point(None, "kPa", Quality.BAD)}, 0, 0)
    store.mark_stale("d", ["t_c", "p_kpa"], now_mono_s=2.9, stale_after_s=3.0)
    assert store.get("d", "t_c").quality is Quality.GOOD  # type: ignore[union-attr]
    store.mark_stale("d", ["t_c", "p_kpa"], now_mono_s=3.0, stale_after_s=3.0)
    stale = store.get("d", "t_c")
    assert stale is not None and stale.quality is Quality.STALE and stale.value == 30.0
    assert store.get("d", "p_kpa").quality is Quality.BAD  # type: ignore[union-attr]
    assert changes == [frozenset({"t_c", "p_kpa"}), frozenset({"t_c"})]
    # The same bad reading again is not a change: nothing flaps.
    store.update("d", {"p_kpa": Point(None, "kPa", Quality.BAD)}, 4, 4)
    assert len(changes) == 2


def test_nan_is_stored_as_a_bad_reading_without_a_value() -> None:
    store = PointStore()
    store.add_device("d", "bmc")
    store.update("d", {"x_w": Point(float("nan"), "W")}, 0, 0)
    point = store.get("d", "x_w")
    assert point is not None and point.value is None and point.quality is Quality.BAD


def test_matching_names_follow_the_points_a_device_gains() -> None:
    store = PointStore()
    store.add_device("r1s01", "bmc")
    assert store.matching("r1s01", "gpu*_temp_c") == []
    store.update("r1s01", {"gpu1_temp_c": Point(60.0, "C"), "fan1_rpm": Point(9000, "RPM")}, 1, 1)
    assert store.matching("r1s01", "gpu*_temp_c") == ["gpu1_temp_c"]
    store.update("r1s01", {"gpu1_temp_c": Point(61.0, "C")}, 2, 2)  # no new point
    assert store.matching("r1s01", "gpu*_temp_c") == ["gpu1_temp_c"]
    store.update("r1s01", {"gpu2_temp_c": Point(62.0, "C")}, 3, 3)
    assert store.matching("r1s01", "gpu*_temp_c") == ["gpu1_temp_c", "gpu2_temp_c"]
    assert store.matching("r1s01", "fan?_rpm") == ["fan1_rpm"]


def test_the_count_of_points_not_good_follows_every_write() -> None:
    store = PointStore()
    store.add_device("pdu1", "pdu")
    record = store.device("pdu1")

    def counted() -> int:
        assert record.not_good == sum(p.quality is not Quality.GOOD for p in record.points.values())
        return record.not_good

    store.update("pdu1", {"a": Point(1.0, "A"), "b": Point(None, "A", Quality.BAD)}, 0.0, 0.0)
    assert counted() == 1
    store.update("pdu1", {"b": Point(float("nan"), "A")}, 1.0, 1.0)  # NaN: still bad
    assert counted() == 1
    store.update("pdu1", {"b": Point(2.0, "A")}, 2.0, 2.0)
    assert counted() == 0
    store.update("pdu1", {"a": Point(9.0, "A", unconfirmed=True)}, 3.0, 3.0)  # keeps its quality
    assert counted() == 0
    assert store.mark_stale("pdu1", ["a", "b"], 10.0, 5.0) == 2
    assert counted() == 2
    store.mark_stale("pdu1", ["a", "b"], 20.0, 5.0)  # already stale: not counted twice
    assert counted() == 2
    store.update("pdu1", {"a": Point(1.0, "A"), "b": Point(None, "A", Quality.BAD)}, 21.0, 21.0)
    assert counted() == 1
