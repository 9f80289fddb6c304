"""Library log records become one structured line each, without tracebacks or
frame dumps, and a flooding library logger is held back with a summary."""

from __future__ import annotations

import io
import json
import logging

import structlog

from megapodd.logs import FOREIGN_RECORDS_PER_WINDOW, FOREIGN_WINDOW_S, foreign_handler


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _logger(stream: io.StringIO, clock: Clock, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers[:] = [foreign_handler(stream, structlog.processors.JSONRenderer(), clock)]
    logger.setLevel(logging.WARNING)
    return logger


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _decode() -> None:
    raise ValueError("Unable to decode request\nsecond line")


def test_a_traceback_and_a_frame_dump_become_one_json_line() -> None:
    stream, clock = io.StringIO(), Clock()
    logger = _logger(stream, clock, "test.logs.pymodbus")
    try:
        _decode()
    except ValueError:
        logger.exception("Fatal error: data_received() failed.\n>>>>> recv: 0xde 0xad")
    [line] = _lines(stream)
    assert line["event"] == "Fatal error: data_received() failed."
    assert line["error"] == "ValueError: Unable to decode request"
    assert line["lines_dropped"] == 1
    assert line["logger"] == "test.logs.pymodbus" and line["level"] == "error"
    assert "Traceback" not in stream.getvalue() and "0xde" not in stream.getvalue()


def test_a_flooding_logger_is_held_back_then_summarised() -> None:
    stream, clock = io.StringIO(), Clock()
    flood = _logger(stream, clock, "test.logs.flood")
    other = _logger(stream, clock, "test.logs.other")
    for n in range(FOREIGN_RECORDS_PER_WINDOW + 25):
        flood.warning("bad frame %d", n)
    other.warning("still heard")  # limits are per logger
    assert len(_lines(stream)) == FOREIGN_RECORDS_PER_WINDOW + 1
    clock.now_s = FOREIGN_WINDOW_S
    flood.warning("next window")
    *_, summary, after = _lines(stream)
    assert summary["event"] == "log_records_held_back"
    assert summary["held_back"] == 25 and summary["logger"] == "test.logs.flood"
    assert after["event"] == "next window"
