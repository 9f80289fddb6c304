"""The daemon's metrics: what the collector reads, wired from the daemon's parts,
and the /metrics server when `[metrics] listen` is set."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector

from megapodd.events import Event
from megapodd.metrics.collector import PodCollector, Sources, TickHistogram
from megapodd.metrics.http import MetricsServer
from megapodd.power.metrics import power_families

if TYPE_CHECKING:
    from megapodd.app import Daemon


class EventCounts:
    """Events by type and severity (a sink of the event bus, added first)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def on_event(self, event: Event) -> None:
        key = (event.type, event.severity.value)
        self.counts[key] = self.counts.get(key, 0) + 1


class DaemonMetrics:
    def __init__(self, daemon: Daemon, tick: TickHistogram, events: EventCounts) -> None:
        config = daemon.config
        fleet = daemon.mqtt.commands
        racks = {p.id: p.rack for p in config.pdu} | {b.id: b.rack for b in config.bmc}
        self.sources = Sources(
            pod_id=config.pod.id,
            version=daemon.version,
            boot_id=daemon.boot_id,
            store=daemon.store,
            racks=racks,
            link_stats=lambda: {s.device_id: s.link_stats() for s in daemon.devices.supervisors},
            interlocks=daemon.interlocks.states,
            loops=daemon.loops.snapshot,
            mqtt_connected=lambda: daemon.mqtt.connected,
            mqtt_connect_failures=lambda: daemon.mqtt.connect_failures,
            journal_depth=lambda: daemon.mqtt.pending_events,
            journal_corrupt_lines=lambda: daemon.telemetry.outbox.corrupt_lines,
            published=daemon.telemetry.stats,
        )
        if daemon.power is not None:
            self.sources.extra.append(power_families(config.pod.id, daemon.power.snapshot))
        if fleet is not None:
            self.sources.fleet_commands = lambda: fleet.stats.results
            self.sources.fleet_refusals = lambda: fleet.stats.refusals
            self.sources.fleet_unanswered = lambda: fleet.stats.unanswered
        self.collector = PodCollector(self.sources, tick, events.counts)
        self._process = ProcessCollector(registry=None)
        address = config.metrics.address
        self.server = MetricsServer(*address, self.freeze) if address is not None else None

    def collect(self) -> Iterable[Metric]:
        return itertools.chain(self.collector.collect(), self._process.collect())

    def freeze(self) -> Callable[[], Iterable[Metric]]:
        """On the loop: copy the state; the families are built from the copy elsewhere."""
        frozen = self.collector.frozen()
        return lambda: itertools.chain(frozen.collect(), self._process.collect())
