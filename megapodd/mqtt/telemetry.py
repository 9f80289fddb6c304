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
from megapodd.mqtt.budget import DeviceBudget
from megapodd.mqtt.deadband import changed_beyond_deadband
from megapodd.mqtt.outbox import EventOutbox
from megapodd.mqtt.stats import PublishStats
from megapodd.store import PointStore

# Gather changes for this long before publishing, so a group read of 300
# points becomes one message per device rather than 300.
_COALESCE_S = 0.05
# A retained whole-pod topic (interlocks: every rule instance, 300 kB on the
# full pod) is published at most this often: a trip changes it once per action,
# a hundred times in a second, and the events carry each change as it happens.
RETAINED_MIN_INTERVAL_S = 0.5


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
        device_budget_bytes_per_s: float = 0.0,
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
        self._topic_published_s: dict[str, float] = {}  # loop time of each topic's last
        self._published: dict[str, _Published] = {}
        self._budget = DeviceBudget(device_budget_bytes_per_s)
        self._deferred: set[str] = set()  # changed, waiting for budget
        self.stats = PublishStats()

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
        self._topic_published_s.clear()
        self._published.clear()
        self._deferred.clear()

    async def publish_until(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_snapshot_s = loop.time() + self._snapshot_s
        while not stopping.is_set():
            self._release_deferred(loop.time())
            await self._drain_events(client)
            await self._publish_retained_topics(client, loop.time())
            if self._dirty:
                await asyncio.sleep(_COALESCE_S)
                dirty, self._dirty = self._dirty, set()
                for device_id in sorted(dirty):
                    await self._publish_device(client, device_id, force=False)
            if loop.time() >= next_snapshot_s - 1e-3:  # not a sliver below the clock resolution
                next_snapshot_s = loop.time() + self._snapshot_s
                self._deferred.clear()  # the snapshot carries them
                for record in list(self._store.devices()):
                    await self._publish_device(client, record.id, force=True)
            self._wake.clear()
            topics_ready_s = min(map(self._topic_ready_s, self._dirty_topics), default=None)
            if topics_ready_s is not None and topics_ready_s <= loop.time():
                continue
            if self._dirty or self.outbox.peek() is not None:
                continue
            wake_s = next_snapshot_s
            if topics_ready_s is not None:
                wake_s = min(wake_s, topics_ready_s)
            for device_id in self._deferred:
                # Not below a millisecond: a clock's resolution must not make this spin.
                ready_s = self._budget.ready_at_s(device_id, loop.time())
                wake_s = min(wake_s, max(ready_s, loop.time() + 1e-3))
            try:
                async with asyncio.timeout(max(0.0, wake_s - loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass
        await self._drain_events(client)

    def _topic_ready_s(self, suffix: str) -> float:
        last_s = self._topic_published_s.get(suffix)
        return float("-inf") if last_s is None else last_s + RETAINED_MIN_INTERVAL_S

    async def _publish_retained_topics(self, client: aiomqtt.Client, now_s: float) -> None:
        for suffix in sorted(self._dirty_topics):
            if self._topic_ready_s(suffix) > now_s:
                continue  # published moments ago: the latest state goes at its time
            self._dirty_topics.discard(suffix)
            self._topic_published_s[suffix] = now_s
            payload = dumps({"ts": time.time(), suffix: self._retained[suffix]()})
            topic = self._topic(suffix)
            await client.publish(topic, payload, qos=1, retain=True)
            self.stats.published(suffix, topic, payload)

    async def _drain_events(self, client: aiomqtt.Client, batch: int = 100) -> None:
        """Send queued events, a batch at a time so a backlog after an outage
        does not hold device state back."""
        for _ in range(batch):
            if (payload := self.outbox.peek()) is None:
                return
            body = dumps(payload)
            topic = self._topic("events")
            try:
                await client.publish(topic, body, qos=1)
            except BaseException:
                self.outbox.give_back()
                raise
            self.outbox.pop()  # only once the broker has it
            self.stats.published("events", topic, body)

    def _release_deferred(self, now_s: float) -> None:
        """Devices held back by their budget that may publish again."""
        ready = {d for d in self._deferred if self._budget.allows(d, now_s)}
        if ready:
            self._deferred -= ready
            self._dirty |= ready

    async def _publish_device(self, client: aiomqtt.Client, device_id: str, force: bool) -> None:
        record = self._store.device(device_id)
        seen = self._published.setdefault(device_id, _Published())
        points = record.points
        # A new state, quality or point goes at once; values moving past their
        # deadband go within the device's budget.
        urgent = force or seen.state != record.state.value
        worth_it = urgent
        if not urgent:
            for name, point in points.items():
                old = seen.values.get(name)
                if (
                    old is None
                    or not isinstance(old, dict)
                    or old["quality"] != point.quality.value
                ):
                    urgent = worth_it = True
                    break
                if not worth_it and changed_beyond_deadband(old["value"], point.value, point.unit):
                    worth_it = True
        if not worth_it:
            return
        now_s = asyncio.get_running_loop().time()
        if not urgent and not self._budget.allows(device_id, now_s):
            self._deferred.add(device_id)
            self.stats.coalesced(device_id)
            return
        self._deferred.discard(device_id)
        payload_points = {name: p.as_json() for name, p in sorted(points.items())}
        payload = {
            "ts": time.time(),
            "kind": record.kind,
            "state": record.state.value,
            "reason": record.reason,
            "points": payload_points,
        }
        body = dumps(payload)
        topic = self._topic(f"devices/{device_id}/state")
        await client.publish(topic, body, qos=1, retain=True)
        self._budget.spend(device_id, len(topic) + len(body), now_s)
        self.stats.published("device_state", topic, body, device=device_id)
        seen.values = dict(payload_points)
        seen.state = record.state.value
