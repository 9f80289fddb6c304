"""The power budget's metrics: the `power` snapshot as Prometheus families,
accepted by promtool, read at every scrape through `Sources.extra`."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from megapodd.metrics.collector import PodCollector, TickHistogram
from megapodd.metrics.http import render
from megapodd.power.metrics import FAMILIES, power_families
from megapodd.store import PointStore
from tests.unit.test_ctl_power_view import ANSWER
from tests.unit.test_metrics import _sources


def _scrape(power: dict[str, Any]) -> bytes:
    sources = _sources(PointStore())
    sources.extra.append(power_families("pod-m", lambda: power))
    return render(PodCollector(sources, TickHistogram(), {}).frozen().collect)


def test_the_power_snapshot_becomes_its_families_and_promtool_accepts_them() -> None:
    text = _scrape(ANSWER)
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert set(FAMILIES) <= set(families)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for name in FAMILIES
        for s in families[name].samples
    }
    assert samples[("megapod_power_budget_watts", (("pod", "pod-m"),))] == 65280.0
    assert samples[("megapod_power_headroom_watts", (("pod", "pod-m"),))] == -1620.0
    stale = (("pdu", "pdu-r2a"), ("phase", "1"), ("pod", "pod-m"))
    assert samples[("megapod_power_phase_stale", stale)] == 1.0
    cap = (("owner", "interlock"), ("pod", "pod-m"), ("server", "r2s02"))
    assert samples[("megapod_power_cap_watts", cap)] == 3000.0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/bootstrap")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_without_a_budget_its_gauge_is_absent() -> None:
    text = _scrape({**ANSWER, "budget_w": None, "headroom_w": None})
    budget = next(
        f for f in text_string_to_metric_families(text.decode())
        if f.name == "megapod_power_budget_watts"
    )  # fmt: skip
    assert budget.samples == []
