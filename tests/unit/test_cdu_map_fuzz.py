"""Fuzzing the CDU's register blocks as the driver sees them (lists of words from
pymodbus): any list decodes or raises FrameError, and a point marked good is
inside the range its register can mean (DEVICES.md §1, drivers/modbus/cdu_map.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import Point, Quality
from drivers.errors import FrameError
from drivers.modbus import cdu_map as m

pytestmark = pytest.mark.fuzz

words = st.integers(0, 0xFFFF)
# Words a broken transmitter or a bad frame tends to give, mixed with any.
edgy_words = st.sampled_from([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF]) | words
input_blocks = st.lists(edgy_words, min_size=m.INPUT_COUNT, max_size=m.INPUT_COUNT)
holding_blocks = st.lists(edgy_words, min_size=m.HOLDING_COUNT, max_size=m.HOLDING_COUNT)
# Anything a buggy client library could hand over instead.
junk_blocks = st.lists(st.integers(-(1 << 40), 1 << 40), max_size=30)

TEMP_LOW_C, TEMP_HIGH_C = m._TEMP_VALID_C
UINT16_TENTHS = 0xFFFE * 0.1  # 0xFFFF is the broken-transmitter value, never good

# Point name suffix -> (unit, lowest and highest good value).
RANGES: dict[str, tuple[str, float, float]] = {
    "_temp_c": ("C", TEMP_LOW_C, TEMP_HIGH_C),
    "_pct": ("%", 0.0, 100.0),
    "_lpm": ("lpm", 0.0, UINT16_TENTHS),
    "_kpa": ("kPa", 0.0, UINT16_TENTHS),
    "heat_load_w": ("W", 0.0, float(0xFFFF_FFFF)),
    "watchdog_timeout_s": ("s", 0.0, float(0xFFFF)),
    "alarm_code": ("", 0.0, float(0xFFFF)),
    "leak_zones": ("", 0.0, float(0xFFFF)),
    "rack_isolation_mask": ("", 0.0, float(0xFFFF)),
}
FLAGS = {name for name, _ in m.STATUS_POINTS} | {"remote_enable", "run"}


def _check(points: dict[str, Point]) -> None:
    for name, point in points.items():
        assert isinstance(point.quality, Quality)
        if name in FLAGS:
            assert isinstance(point.value, bool) and point.quality is Quality.GOOD
            continue
        if isinstance(point.value, float):
            assert math.isfinite(point.value)
        ranges = [r for suffix, r in RANGES.items() if name.endswith(suffix)]
        if ranges and point.quality is Quality.GOOD:
            [(unit, low, high)] = ranges
            assert point.unit == unit, name
            assert isinstance(point.value, int | float) and low <= point.value <= high, (
                name,
                point,
            )


@given(input_blocks)
@example([0x8000] * m.INPUT_COUNT)  # the most negative temperature a word can say
@example([0xFFFF] * m.INPUT_COUNT)
def test_an_input_block_decodes_with_good_points_in_range(block: list[int]) -> None:
    points = m.decode_input_block(block)
    assert len(points) == 13 + len(m.STATUS_POINTS) + 3
    _check(points)
    assert points["heat_load_w"].value == block[m.IR_HEAT_LOAD_HI] << 16 | block[m.IR_HEAT_LOAD_LO]
    assert points["leak"].value is bool(block[m.IR_STATUS] & m.StatusBit.LEAK)


@given(holding_blocks)
def test_a_holding_block_decodes_with_good_points_in_range(block: list[int]) -> None:
    points = m.decode_holding_block(block)
    _check(points)
    for name in ("control_mode", "lead_pump"):
        point = points[name]
        known = {e.label for e in (m.ControlMode if name == "control_mode" else m.LeadPump)}
        assert (point.quality is Quality.GOOD) == (point.value in known), point


@given(junk_blocks)
@example([0] * (m.INPUT_COUNT - 1))
@example([0] * (m.INPUT_COUNT - 1) + [0x10000])
@example([-1] * m.HOLDING_COUNT)
def test_a_block_of_the_wrong_size_or_words_raises_only_frame_error(block: list[int]) -> None:
    for decode in (m.decode_input_block, m.decode_holding_block):
        try:
            _check(decode(block))
        except FrameError:
            continue
        assert all(0 <= word <= 0xFFFF for word in block)
