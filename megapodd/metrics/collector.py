"""Every metric family, built from the daemon's live state at scrape time.

Nothing is kept between scrapes but counters the daemon keeps anyway, so a
point that disappears, goes stale or reads bad is simply absent as a value
(Prometheus ends its series) and appears in `megapod_point_not_good`
instead. Two points that would land on the same series are a collision: the
first one wins, the other is left out and logged once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from drivers.base import LINK_STAT_KEYS, Quality
from megapodd.metrics.names import PointMetric, numeric, point_metric
from megapodd.mqtt.stats import DeviceTraffic, PublishStats, Traffic
from megapodd.store import DeviceRecord, DeviceState, PointStore

log = structlog.get_logger("megapodd.metrics")

POINT_LABELS = ("pod", "device", "rack")

# link_stats() key -> (metric name, help); polls are counted by result.
LINK_COUNTERS: dict[str, tuple[str, str]] = {
    "requests": ("megapod_device_requests", "Requests sent to the device"),
    "retries": ("megapod_device_request_retries", "Requests sent again after no answer"),
    "timeouts": ("megapod_device_request_timeouts", "Requests the device did not answer in time"),
    "frame_errors": ("megapod_device_frame_errors", "Answers that did not decode (CRC, framing)"),
    "device_errors": ("megapod_device_error_replies", "Answers that were an error (exception)"),
}
# The supervisor's own counts of readings it did not take as they came.
READING_COUNTERS: dict[str, tuple[str, str]] = {
    "implausible": (
        "megapod_device_readings_implausible",
        "Readings outside their point's plausible range (made bad)",
    ),
    "unconfirmed": (
        "megapod_device_readings_unconfirmed",
        "Large moves of a BMC reading that its re-reads did not confirm",
    ),
}
assert set(LINK_COUNTERS) == set(LINK_STAT_KEYS)  # noqa: S101 - every driver's counters

# Seconds; the tick is 100 ms, its duties normally well under a millisecond.
TICK_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class TickHistogram:
    """Durations of the control tick's duties, as a Prometheus histogram."""

    def __init__(self, buckets_s: tuple[float, ...] = TICK_BUCKETS_S) -> None:
        self.buckets_s = buckets_s
        self.counts = [0] * len(buckets_s)
        self.count = 0
        self.sum_s = 0.0

    def copy(self) -> TickHistogram:
        copy = TickHistogram(self.buckets_s)
        copy.counts, copy.count, copy.sum_s = list(self.counts), self.count, self.sum_s
        return copy

    def observe(self, duration_s: float) -> None:
        self.count += 1
        self.sum_s += duration_s
        for index, bound in enumerate(self.buckets_s):
            if duration_s <= bound:
                self.counts[index] += 1
                break

    def family(self, pod: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "megapod_control_tick_duration_seconds",
            "Time the control tick spent on its duties (loops, arbiter, heartbeats, ageing)",
            labels=["pod"],
        )
        cumulative, buckets = 0, []
        for bound, count in zip(self.buckets_s, self.counts, strict=True):
            cumulative += count
            buckets.append((repr(bound), float(cumulative)))
        buckets.append(("+Inf", float(self.count)))
        family.add_metric([pod], buckets, self.sum_s)
        return family


class _Devices:
    """Device records copied at one moment: what `_points` and `_devices` read of a store."""

    def __init__(self, records: list[DeviceRecord]) -> None:
        self._records = records

    def devices(self) -> list[DeviceRecord]:
        return self._records


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


@dataclass(slots=True)
class Sources:
    """What the collector reads; callables are read at every scrape."""

    pod_id: str
    version: str
    boot_id: str
    store: PointStore | _Devices
    racks: Mapping[str, int]  # device -> rack (the CDU has none)
    link_stats: Callable[[], Mapping[str, Mapping[str, int]]]
    # instance -> {"rule", "state", "last_trip", "holding"} (InterlockEngine.states)
    interlocks: Callable[[], Mapping[str, Any]]
    loops: Callable[[], Mapping[str, Any]]
    mqtt_connected: Callable[[], bool]
    mqtt_connect_failures: Callable[[], int]
    journal_depth: Callable[[], int]
    journal_corrupt_lines: Callable[[], int]
    published: PublishStats
    fleet_commands: Callable[[], Mapping[str, int]] = dict  # result -> count
    fleet_refusals: Callable[[], Mapping[str, int]] = dict  # reason -> count
    fleet_unanswered: Callable[[], int] = lambda: 0
    started_s: float = field(default_factory=time.time)
    # More families from features that bring their own (the power budget).
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


class PodCollector(Collector):
    def __init__(
        self, sources: Sources, tick: TickHistogram, events: Mapping[tuple[str, str], int]
    ) -> None:
        self._s = sources
        self._tick = tick
        self._events = events  # (type, severity) -> count
        self._mapping: dict[tuple[str, str, str], PointMetric] = {}
        self._collided: set[tuple[str, str]] = set()

    def frozen(self) -> PodCollector:
        """A collector over a copy of everything a scrape reads, taken now (on the
        loop, in a few milliseconds), whose families can be built and formatted
        in another thread while the daemon runs on."""
        s = self._s
        records = [
            DeviceRecord(r.id, r.kind, r.state, r.reason, dict(r.points)) for r in s.store.devices()
        ]
        stats = PublishStats(
            {k: Traffic(t.messages, t.bytes) for k, t in s.published.topics.items()},
            {
                k: DeviceTraffic(t.messages, t.bytes, t.coalesced)
                for k, t in s.published.devices.items()
            },
        )
        copy = replace(
            s,
            store=_Devices(records),
            link_stats=_constant({k: dict(v) for k, v in s.link_stats().items()}),
            interlocks=_constant(s.interlocks()),
            loops=_constant(s.loops()),
            mqtt_connected=_constant(s.mqtt_connected()),
            mqtt_connect_failures=_constant(s.mqtt_connect_failures()),
            journal_depth=_constant(s.journal_depth()),
            journal_corrupt_lines=_constant(s.journal_corrupt_lines()),
            published=stats,
            fleet_commands=_constant(dict(s.fleet_commands())),
            fleet_refusals=_constant(dict(s.fleet_refusals())),
            fleet_unanswered=_constant(s.fleet_unanswered()),
            extra=[_constant(list(extra())) for extra in s.extra],
        )
        frozen = PodCollector(copy, self._tick.copy(), dict(self._events))
        # One cache and one record of collisions for both: a collision is logged once.
        frozen._mapping, frozen._collided = self._mapping, self._collided
        return frozen

    def collect(self) -> Iterator[Metric]:
        yield from self._daemon()
        yield from self._points()
        yield from self._devices()
        yield from self._interlocks()
        yield from self._loops()
        yield from self._mqtt()
        yield self._tick.family(self._s.pod_id)
        for extra in self._s.extra:
            yield from extra()

    # -- families ----------------------------------------------------------------

    def _daemon(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        info = GaugeMetricFamily(
            "megapod_daemon_info", "megapodd's version and this run's boot id (always 1)",
            labels=["pod", "version", "boot_id"],
        )  # fmt: skip
        info.add_metric([pod, self._s.version, self._s.boot_id], 1.0)
        yield info
        started = GaugeMetricFamily(
            "megapod_daemon_start_time_seconds", "Unix time the daemon started", labels=["pod"]
        )
        started.add_metric([pod], self._s.started_s)
        yield started
        events = CounterMetricFamily(
            "megapod_events", "Events made since the daemon started, by type and severity",
            labels=["pod", "type", "severity"],
        )  # fmt: skip
        for (type_, severity), count in sorted(self._events.items()):
            events.add_metric([pod, type_, severity], float(count))
        yield events

    def _points(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        families: dict[str, GaugeMetricFamily] = {}
        seen: set[tuple[str, tuple[str, ...]]] = set()
        not_good = GaugeMetricFamily(
            "megapod_point_not_good",
            "1 for each point whose reading is bad or stale (its value is not exported)",
            labels=[*POINT_LABELS, "point", "quality"],
        )
        counts = GaugeMetricFamily(
            "megapod_device_points", "Points of the device by quality",
            labels=[*POINT_LABELS, "quality"],
        )  # fmt: skip
        for record in self._s.store.devices():
            rack = str(self._s.racks.get(record.id, ""))
            base = (pod, record.id, rack)
            by_quality = dict.fromkeys(Quality, 0)
            for name, point in record.points.items():
                by_quality[point.quality] += 1
                if point.quality is not Quality.GOOD:
                    not_good.add_metric([*base, name, point.quality.value], 1.0)
                    continue
                value = numeric(point.value)
                if value is None:
                    continue
                metric = self._metric_for(record.kind, name, point.unit)
                labels = (*base, *metric.labels)
                key = (metric.family.name, labels)
                if key in seen:
                    self._collision(record.id, name, metric)
                    continue
                seen.add(key)
                family = families.get(metric.family.name)
                if family is None:
                    family = families[metric.family.name] = GaugeMetricFamily(
                        metric.family.name,
                        metric.family.help,
                        labels=[*POINT_LABELS, *metric.family.labels],
                    )
                family.add_metric(list(labels), metric.convert(value))
            for quality, count in by_quality.items():
                counts.add_metric([*base, quality.value], float(count))
        yield from families.values()
        yield not_good
        yield counts

    def _metric_for(self, kind: str, name: str, unit: str) -> PointMetric:
        key = (kind, name, unit)
        metric = self._mapping.get(key)
        if metric is None:
            metric = self._mapping[key] = point_metric(kind, name, unit)
        return metric

    def _collision(self, device: str, name: str, metric: PointMetric) -> None:
        if (device, name) in self._collided:
            return
        self._collided.add((device, name))
        log.warning(
            "metric_series_collision",
            device=device,
            point=name,
            metric=metric.family.name,
            labels=list(metric.labels),
            detail="another point of this device already gives this series; this one is left out",
        )

    def _devices(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        state = GaugeMetricFamily(
            "megapod_device_state", "1 for the device's current state (online, stale, offline)",
            labels=["pod", "device", "rack", "kind", "state"],
        )  # fmt: skip
        for record in self._s.store.devices():
            rack = str(self._s.racks.get(record.id, ""))
            for candidate in DeviceState:
                value = 1.0 if record.state is candidate else 0.0
                state.add_metric([pod, record.id, rack, record.kind, candidate.value], value)
        yield state
        polls = CounterMetricFamily(
            "megapod_device_polls", "Poll group reads by result",
            labels=["pod", "device", "result"],
        )  # fmt: skip
        counters = {
            key: CounterMetricFamily(name, help_, labels=["pod", "device"])
            for key, (name, help_) in LINK_COUNTERS.items()
        }
        readings = {
            key: CounterMetricFamily(name, help_, labels=["pod", "device"])
            for key, (name, help_) in READING_COUNTERS.items()
        }
        for device, stats in sorted(self._s.link_stats().items()):
            polls.add_metric([pod, device, "ok"], float(stats.get("polls_ok", 0)))
            polls.add_metric([pod, device, "failed"], float(stats.get("polls_failed", 0)))
            for key, family in (*counters.items(), *readings.items()):
                family.add_metric([pod, device], float(stats.get(key, 0)))
        yield polls
        yield from counters.values()
        yield from readings.values()

    def _interlocks(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        state = GaugeMetricFamily(
            "megapod_interlock_state", "1 for the interlock's current state",
            labels=["pod", "interlock", "rule", "state"],
        )  # fmt: skip
        last_trip = GaugeMetricFamily(
            "megapod_interlock_last_trip_timestamp_seconds",
            "Unix time of the interlock's last trip (absent if it has not tripped)",
            labels=["pod", "interlock"],
        )
        holding = GaugeMetricFamily(
            "megapod_interlock_outputs_held", "Outputs the interlock holds now",
            labels=["pod", "interlock"],
        )  # fmt: skip
        for name, entry in self._s.interlocks().items():
            for candidate in ("normal", "tripped", "latched"):
                value = 1.0 if entry["state"] == candidate else 0.0
                state.add_metric([pod, name, str(entry["rule"]), candidate], value)
            if isinstance(entry.get("last_trip"), int | float):
                last_trip.add_metric([pod, name], float(entry["last_trip"]))
            holding.add_metric([pod, name], float(len(entry.get("holding", {}))))
        yield state
        yield last_trip
        yield holding

    def _loops(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        labels = ["pod", "loop", "target"]
        mode = GaugeMetricFamily(
            "megapod_loop_mode", "1 for the loop's current mode", labels=[*labels, "mode"]
        )
        values = {
            key: GaugeMetricFamily(f"megapod_loop_{key}", help_, labels=labels)
            for key, help_ in (
                ("setpoint", "The loop's setpoint, in its input's unit (pid loops)"),
                ("process_value", "The loop's input as it last read it"),
                ("output", "What the loop asks of its output, in the output's unit"),
            )
        }
        terms = GaugeMetricFamily(
            "megapod_loop_term", "The pid loop's terms (p, i, d, feed-forward ff)",
            labels=[*labels, "term"],
        )  # fmt: skip
        for name, entry in self._s.loops().items():
            base = [pod, name, str(entry["target"])]
            for candidate in ("auto", "failsafe", "overridden", "held"):
                mode.add_metric([*base, candidate], 1.0 if entry["mode"] == candidate else 0.0)
            for key, family in values.items():
                if isinstance(entry.get(key), int | float):
                    family.add_metric(base, float(entry[key]))
            for term in ("p", "i", "d", "ff"):
                if isinstance(entry.get(term), int | float):
                    terms.add_metric([*base, term], float(entry[term]))
        yield mode
        yield from values.values()
        yield terms

    def _mqtt(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        connected = GaugeMetricFamily(
            "megapod_mqtt_connected", "1 while connected to the broker", labels=["pod"]
        )
        connected.add_metric([pod], 1.0 if self._s.mqtt_connected() else 0.0)
        yield connected
        failures = CounterMetricFamily(
            "megapod_mqtt_connection_failures", "Broker connections that failed or dropped",
            labels=["pod"],
        )  # fmt: skip
        failures.add_metric([pod], float(self._s.mqtt_connect_failures()))
        yield failures
        depth = GaugeMetricFamily(
            "megapod_event_journal_events",
            "Events waiting for the broker's acknowledgement (journal and memory)",
            labels=["pod"],
        )
        depth.add_metric([pod], float(self._s.journal_depth()))
        yield depth
        corrupt = CounterMetricFamily(
            "megapod_event_journal_corrupt_lines",
            "Journal lines skipped because they did not parse",
            labels=["pod"],
        )
        corrupt.add_metric([pod], float(self._s.journal_corrupt_lines()))
        yield corrupt
        yield from self._published()
        yield from self._fleet()

    def _published(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        stats = self._s.published
        messages = CounterMetricFamily(
            "megapod_mqtt_messages_published", "Messages the broker acknowledged, by topic",
            labels=["pod", "topic"],
        )  # fmt: skip
        size = CounterMetricFamily(
            "megapod_mqtt_published_bytes", "Topic and payload bytes published, by topic",
            labels=["pod", "topic"],
        )  # fmt: skip
        for topic, traffic in sorted(stats.topics.items()):
            messages.add_metric([pod, topic], float(traffic.messages))
            size.add_metric([pod, topic], float(traffic.bytes))
        yield messages
        yield size
        device_messages = CounterMetricFamily(
            "megapod_mqtt_device_state_messages", "Device state messages published",
            labels=["pod", "device"],
        )  # fmt: skip
        device_bytes = CounterMetricFamily(
            "megapod_mqtt_device_state_bytes", "Device state bytes published (topic and payload)",
            labels=["pod", "device"],
        )  # fmt: skip
        coalesced = CounterMetricFamily(
            "megapod_mqtt_device_updates_coalesced",
            "Device updates held back by the bandwidth budget and carried by a later message",
            labels=["pod", "device"],
        )
        for device, traffic in sorted(stats.devices.items()):
            device_messages.add_metric([pod, device], float(traffic.messages))
            device_bytes.add_metric([pod, device], float(traffic.bytes))
            coalesced.add_metric([pod, device], float(traffic.coalesced))
        yield device_messages
        yield device_bytes
        yield coalesced

    def _fleet(self) -> Iterator[Metric]:
        pod = self._s.pod_id
        commands = CounterMetricFamily(
            "megapod_fleet_commands", "Fleet commands received over MQTT, by result",
            labels=["pod", "result"],
        )  # fmt: skip
        for result, count in sorted(self._s.fleet_commands().items()):
            commands.add_metric([pod, result], float(count))
        yield commands
        refusals = CounterMetricFamily(
            "megapod_fleet_command_refusals", "Fleet commands refused before they ran, by reason",
            labels=["pod", "reason"],
        )  # fmt: skip
        for reason, count in sorted(self._s.fleet_refusals().items()):
            refusals.add_metric([pod, reason], float(count))
        yield refusals
        unanswered = CounterMetricFamily(
            "megapod_fleet_command_refusals_unanswered",
            "Refused fleet commands that had no usable response topic (counted, not replied)",
            labels=["pod"],
        )
        unanswered.add_metric([pod], float(self._s.fleet_unanswered()))
        yield unanswered
