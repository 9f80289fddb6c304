"""Subscribers of the point store, each with a written failure policy.

A reading reaches the safety engine, the point events, the control loops and
the MQTT telemetry through these, wired once at the composition root. A
subscriber runs synchronously in the task that polled the device, so it must
only record what changed and wake its own task. If one raises, that is an
alarm event naming the consumer and a log line, never a device taken offline
and never a reading withheld from the other subscribers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from megapodd.events import EventBus, Severity

log = structlog.get_logger("megapodd.subscribers")

# Called with the device id and the names of the points (or "state") concerned.
Listener = Callable[[str, frozenset[str]], None]


@dataclass(slots=True)
class Subscriber:
    name: str  # for people: "safety engine", "point events"
    listener: Listener
    # How loud a failure is, and what it means while it lasts.
    on_failure: Severity
    consequence: str
    failures: int = 0  # consecutive


class Subscribers:
    def __init__(self, events: EventBus | None = None) -> None:
        self._events = events
        self._subscribers: list[Subscriber] = []

    def add(
        self,
        name: str,
        listener: Listener,
        on_failure: Severity = Severity.ALARM,
        consequence: str = "its view of the pod may be out of date",
    ) -> None:
        self._subscribers.append(Subscriber(name, listener, on_failure, consequence))

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def notify(self, device_id: str, names: frozenset[str]) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber.listener(device_id, names)
            except Exception as exc:  # the policy: an alarm, never a lost device
                if subscriber.failures == 0:  # the first of a streak; repeats at debug
                    log.exception("consumer_failed", consumer=subscriber.name, device=device_id)
                else:
                    log.debug("consumer_failed_again", consumer=subscriber.name, device=device_id)
                self._failed(subscriber, device_id, exc)
            else:
                if subscriber.failures:
                    self._recovered(subscriber)

    def _failed(self, subscriber: Subscriber, device_id: str, exc: Exception) -> None:
        subscriber.failures += 1
        if subscriber.failures > 1:  # the first of a streak is the alarm event
            return
        if self._events is not None:
            self._events.emit(
                "consumer_failed",
                subscriber.on_failure,
                "megapodd",
                f"{subscriber.name} failed on a reading of {device_id} "
                f"({type(exc).__name__}: {exc}); {subscriber.consequence}",
                {"consumer": subscriber.name, "device": device_id, "error": type(exc).__name__},
            )

    def _recovered(self, subscriber: Subscriber) -> None:
        streak, subscriber.failures = subscriber.failures, 0
        if self._events is not None:
            self._events.emit(
                "consumer_recovered",
                Severity.INFO,
                "megapodd",
                f"{subscriber.name} works again after {streak} failed readings",
                {"consumer": subscriber.name, "failures": streak},
            )
