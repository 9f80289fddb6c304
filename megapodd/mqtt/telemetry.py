"""What the pod publishes: device state, retained topics and events.

Publishing runs in the session's task and never blocks polling: the store and
the event bus only mark what needs sending and wake it. Device state goes out
on change beyond a deadband and as a periodic full snapshot; events wait in a
store-and-forward outbox until the broker acknowledges them (QoS 1 PUBACK).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from megapodd.events import Event
from megapodd.mqtt.deadband import changed_beyond_deadband
from megapodd.mqtt.outbox import EventOutbox
from megapodd.store import PointStore

# Gather changes for this long before publishing, so a group read of 300
# points becomes one message per device rather than 300.
_COALESCE_S = 0.05


def dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


@dataclass(slots=True)
class _Published:
    values: dict[str, object] = field(default_factory=dict)
    state: str = ""


class Telemetry:
    def __init__(
        self,
        store: PointStore,
        topic: Callable[[str], str],
        state_dir: Path,
        snapshot_s: float,
        queue_max_events: int,
    ) -> None:
        self._store = store
        self._topic = topic
        self._snapshot_s = snapshot_s
        self._wake = asyncio.Event()
        self.outbox = EventOutbox(
            state_dir / "events-outbox.jsonl", queue_max_events, on_ready=self._wake.set
        )
        self._dirty: set[str] = set()
        self._retained: dict[str, Callable[[], object]] = {}
        self._dirty_topics: set[str] = set()
        self._published: dict[str, _Published] = {}

    # -- inputs (synchronous, never block) ---------------------------------

    def on_change(self, device_id: str, _names: frozenset[str]) -> None:
        """A device's points or state changed (a subscriber of the store)."""
        self._dirty.add(device_id)
        self._wake.set()

    def on_event(self, event: Event) -> None:
        """An event to deliver (a sink of the event bus)."""
        self.outbox.put(event.as_json())
        self._wake.set()

    def add_retained_topic(self, suffix: str, snapshot: Callable[[], object]) -> None:
        """A retained topic (e.g. `interlocks`) published on connect and on change."""
        self._retained[suffix] = snapshot
        self._dirty_topics.add(suffix)

    def topic_changed(self, suffix: str) -> None:
        self._dirty_topics.add(suffix)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- per connection ----------------------------------------------------

    def new_session(self) -> None:
        """A fresh connection gets the full state."""
        self._dirty.update(d.id for d in self._store.devices())
        self._dirty_topics.update(self._retained)
        self._published.clear()

    async def publish_until(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_snapshot_s = loop.time() + self._snapshot_s
        while not stopping.is_set():
            await self._drain_events(client)
            await self._publish_retained_topics(client)
            if self._dirty:
                await asyncio.sleep(_COALESCE_S)
                dirty, self._dirty = self._dirty, set()
                for device_id in sorted(dirty):
                    await self._publish_device(client, device_id, force=False)
            if loop.time() >= next_snapshot_s - 1e-3:  # not a sliver below the clock resolution
                next_snapshot_s = loop.time() + self._snapshot_s
                for record in list(self._store.devices()):
                    await self._publish_device(client, record.id, force=True)
            self._wake.clear()
            if self._dirty or self._dirty_topics or self.outbox.peek() is not None:
                continue
            try:
                async with asyncio.timeout(max(0.0, next_snapshot_s - loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass
        await self._drain_events(client)

    async def _publish_retained_topics(self, client: aiomqtt.Client) -> None:
        while self._dirty_topics:
            suffix = self._dirty_topics.pop()
            payload = {"ts": time.time(), suffix: self._retained[suffix]()}
            await client.publish(self._topic(suffix), dumps(payload), qos=1, retain=True)

    async def _drain_events(self, client: aiomqtt.Client, batch: int = 100) -> None:
        """Send queued events, a batch at a time so a backlog after an outage
        does not hold device state back."""
        for _ in range(batch):
            if (payload := self.outbox.peek()) is None:
                return
            try:
                await client.publish(self._topic("events"), dumps(payload), qos=1)
            except BaseException:
                self.outbox.give_back()
                raise
            self.outbox.pop()  # only once the broker has it

    async def _publish_device(self, client: aiomqtt.Client, device_id: str, force: bool) -> None:
        record = self._store.device(device_id)
        seen = self._published.setdefault(device_id, _Published())
        points = record.points
        worth_it = force or seen.state != record.state.value
        if not worth_it:
            for name, point in points.items():
                old = seen.values.get(name)
                if (
                    old is None
                    or not isinstance(old, dict)
                    or old["quality"] != point.quality.value
                    or changed_beyond_deadband(old["value"], point.value, point.unit)
                ):
                    worth_it = True
                    break
        if not worth_it:
            return
        payload_points = {name: p.as_json() for name, p in sorted(points.items())}
        payload = {
            "ts": time.time(),
            "kind": record.kind,
            "state": record.state.value,
            "reason": record.reason,
            "points": payload_points,
        }
        await client.publish(
            self._topic(f"devices/{device_id}/state"), dumps(payload), qos=1, retain=True
        )
        seen.values = dict(payload_points)
        seen.state = record.state.value
