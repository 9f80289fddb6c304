"""The power budget's Prometheus families (added to the collector as
`Sources.extra`; docs/metrics.md lists them): from the same snapshot as the
retained `power` topic, so the two always agree."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

FAMILIES = {
    "megapod_power_budget_watts": "The pod's power budget now (absent without budget_w)",
    "megapod_power_pod_watts": "The pod's measured power: its PDUs' phases summed",
    "megapod_power_headroom_watts": "Budget minus the pod's power, pending cap changes counted",
    "megapod_power_phase_limit_amperes": "Each PDU phase's limit: breaker_a x phase_limit_pct",
    "megapod_power_phase_stale": "1 while a phase has no fresh reading (its servers capped)",
    "megapod_power_cap_watts": "Every server whose power limit is held, by owner",
}


Snapshot = Callable[[], Mapping[str, Any]]


def power_families(pod: str, snapshot: Snapshot) -> Callable[[], list[Metric]]:
    """The families' builder for `Sources.extra`: read at every scrape."""

    def build() -> list[Metric]:
        return list(_families(pod, snapshot()))

    return build


def _families(pod: str, power: Mapping[str, Any]) -> Iterator[Metric]:
    gauges = FAMILIES
    for key, name in (
        ("budget_w", "megapod_power_budget_watts"),
        ("pod_power_w", "megapod_power_pod_watts"),
        ("headroom_w", "megapod_power_headroom_watts"),
    ):
        family = GaugeMetricFamily(name, gauges[name], labels=["pod"])
        if isinstance(power.get(key), int | float):
            family.add_metric([pod], float(power[key]))
        yield family
    labels = ["pod", "pdu", "phase"]
    limit, stale = (
        GaugeMetricFamily(name, gauges[name], labels=labels)
        for name in ("megapod_power_phase_limit_amperes", "megapod_power_phase_stale")
    )
    for phase in power.get("phases", ()):
        values = [pod, str(phase["pdu"]), str(phase["phase"])]
        limit.add_metric(values, float(phase["limit_a"]))
        stale.add_metric(values, 1.0 if phase["stale"] else 0.0)
    yield limit
    yield stale
    caps = GaugeMetricFamily(
        "megapod_power_cap_watts", gauges["megapod_power_cap_watts"],
        labels=["pod", "server", "owner"],
    )  # fmt: skip
    for cap in power.get("caps", ()):
        caps.add_metric([pod, str(cap["server"]), str(cap["owner"])], float(cap["cap_w"]))
    yield caps
