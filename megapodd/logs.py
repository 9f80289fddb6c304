"""structlog set-up: key/value lines on a terminal, JSON lines for journald.

Third-party libraries (pymodbus, aiomqtt/paho, asyncio) log through the
standard library; their records are rendered by the same structlog renderer,
one line each: a multi-line message keeps its first line, an exception becomes
`error = "Type: message"` without its traceback (a malformed frame from a
device must not write a traceback or a frame dump into the daemon's log), and
each library logger may write at most FOREIGN_RECORDS_PER_WINDOW records per
FOREIGN_WINDOW_S, then one summary of what it held back.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

FOREIGN_RECORDS_PER_WINDOW = 10
FOREIGN_WINDOW_S = 60.0
MAX_EVENT_CHARS = 300


def _one_line(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A library's record as one bounded line: no traceback, no frame dump."""
    text = str(event.get("event", ""))
    first, _, rest = text.partition("\n")
    if rest:
        event["lines_dropped"] = rest.count("\n") + 1
    event["event"] = first[:MAX_EVENT_CHARS]
    exc_info = event.pop("exc_info", None)
    if isinstance(exc_info, tuple) and exc_info[1] is not None:
        error = f"{type(exc_info[1]).__name__}: {exc_info[1]}"
        event["error"] = error.partition("\n")[0][:MAX_EVENT_CHARS]
    event.pop("stack_info", None)
    return event


@dataclass(slots=True)
class _Window:
    started_s: float
    written: int = 0
    held_back: int = 0


class RateLimitedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that lets each logger write a few records per window,
    then says how many it held back once the next window starts."""

    def __init__(
        self,
        stream: TextIO | None = None,
        per_window: int = FOREIGN_RECORDS_PER_WINDOW,
        window_s: float = FOREIGN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def emit(self, record: logging.LogRecord) -> None:
        now_s = self._clock()
        window = self._windows.get(record.name)
        if window is None or now_s - window.started_s >= self.window_s:
            if window is not None and window.held_back:
                super().emit(self._summary(record.name, window))
            if len(self._windows) >= 1000:  # loggers are few; a bound all the same
                self._windows.clear()
            window = self._windows[record.name] = _Window(now_s)
        if window.written >= self.per_window:
            window.held_back += 1
            return
        window.written += 1
        super().emit(record)

    def _summary(self, name: str, window: _Window) -> logging.LogRecord:
        record = logging.LogRecord(
            name, logging.WARNING, __file__, 0, "log_records_held_back", None, None
        )
        record.held_back = window.held_back
        record.window_s = self.window_s
        return record


def _summary_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    for key in ("held_back", "window_s"):
        if record is not None and hasattr(record, key):
            event[key] = getattr(record, key)
    return event


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    """A crash is one structured record too (with its traceback as a field)."""
    structlog.get_logger("megapodd").critical("uncaught_exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def foreign_handler(
    stream: TextIO, renderer: Processor, clock: Callable[[], float] = time.monotonic
) -> RateLimitedHandler:
    """The handler for standard-library records: rate-limited, one structured line each."""
    handler = RateLimitedHandler(stream, clock=clock)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _summary_fields,
                _one_line,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    return handler


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # pymodbus, aiomqtt/paho and asyncio log through the standard library.
    handler = foreign_handler(sys.stderr, renderer)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
