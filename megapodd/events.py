"""Events: numbered, timestamped records of everything that happened.

Every event goes to each sink (the MQTT outbox, the recent-events ring the local
API serves, the log). Sinks must accept synchronously and never drop: the MQTT
outbox stores and forwards while the broker is away.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("megapodd.events")


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    boot_id: str  # seq restarts with each daemon start; (boot_id, seq) is unique
    seq: int
    type: str
    severity: Severity
    source: str
    message: str
    data: Mapping[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "ts": self.ts,
            "boot_id": self.boot_id,
            "seq": self.seq,
            "type": self.type,
            "severity": self.severity.value,
            "source": self.source,
            "message": self.message,
            "data": dict(self.data),
        }


EventSink = Callable[[Event], None]


def json_safe(value: object) -> object:
    """Event data as plain JSON: NaN/inf become None, unknown objects their text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


class EventBus:
    def __init__(
        self, boot_id: str = "", recent_max: int = 500, clock: Callable[[], float] = time.time
    ) -> None:
        self._boot_id = boot_id
        self._seq = 0
        self._clock = clock
        self._sinks: list[EventSink] = []
        self.recent: deque[Event] = deque(maxlen=recent_max)

    def add_sink(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def emit(
        self,
        type_: str,
        severity: Severity,
        source: str,
        message: str,
        data: Mapping[str, object] | None = None,
    ) -> Event:
        self._seq += 1
        event = Event(
            self._clock(),
            self._boot_id,
            self._seq,
            type_,
            severity,
            source,
            message,
            # NaN or inf in an event's data could never be sent as JSON.
            {str(k): json_safe(v) for k, v in (data or {}).items()},
        )
        self.recent.append(event)
        log_method = log.info if severity is Severity.INFO else log.warning
        log_method(type_, source=source, message=message, seq=event.seq, **dict(event.data))
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:  # a failing sink must not fail the task that emitted
                log.exception("event_sink_failed", seq=event.seq, sink=repr(sink))
        return event
