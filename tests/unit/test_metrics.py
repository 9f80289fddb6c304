"""The metrics collector: points in base units, bad and stale points left out,
no duplicate series when point names change or collide, text that promtool
accepts; the /metrics server's answers to good and bad requests."""

from __future__ import annotations

import asyncio
import gzip
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from drivers.base import Point, Quality
from megapodd.metrics.collector import PodCollector, Sources, TickHistogram
from megapodd.metrics.http import MetricsServer, render
from megapodd.metrics.names import all_point_families
from megapodd.mqtt.stats import PublishStats
from megapodd.power.metrics import FAMILIES as POWER_FAMILIES
from megapodd.store import DeviceState, PointStore
from tests.helpers import free_tcp_port, wait_until


def _sources(store: PointStore, **overrides: Any) -> Sources:
    sources = Sources(
        pod_id="pod-m",
        version="0.1.0",
        boot_id="0" * 32,
        store=store,
        racks={"pdu-r1a": 1, "r1s01": 1},
        link_stats=lambda: {
            "cdu1": {
                "polls_ok": 5,
                "polls_failed": 1,
                "requests": 7,
                "retries": 1,
                "timeouts": 1,
                "frame_errors": 0,
                "device_errors": 0,
            }
        },
        interlocks=lambda: {
            "leak-r1": {
                "rule": "leak-r1",
                "state": "tripped",
                "last_trip": 1.5,
                "holding": {"pdu-r1a.outlet_1": "off"},
            }
        },
        loops=lambda: {
            "supply-temp": {
                "target": "cdu1.facility_valve_pct",
                "mode": "auto",
                "setpoint": 30.0,
                "process_value": 31.2,
                "output": 40.0,
                "p": 1.0,
                "i": 2.0,
                "d": None,
                "ff": 0.5,
            }
        },
        mqtt_connected=lambda: True,
        mqtt_connect_failures=lambda: 2,
        journal_depth=lambda: 3,
        journal_corrupt_lines=lambda: 0,
        published=PublishStats(),
    )
    for key, value in overrides.items():
        setattr(sources, key, value)
    return sources


def _pod_store() -> PointStore:
    store = PointStore()
    store.add_device("cdu1", "cdu")
    store.add_device("pdu-r1a", "pdu")
    store.add_device("r1s01", "bmc")
    store.update(
        "cdu1",
        {
            "supply_temp_c": Point(31.25, "C"),
            "flow_lpm": Point(120.0, "lpm"),
            "diff_pressure_kpa": Point(85.5, "kPa"),
            "pump1_speed_pct": Point(55.0, "%"),
            "pump2_running": Point(True),
            "leak": Point(False),
            "control_mode": Point("remote_speed"),
            "return_temp_c": Point(None, "C", Quality.BAD),
        },
        ts=1.0,
        mono_s=1.0,
    )
    store.update(
        "pdu-r1a",
        {
            "power_w": Point(4200, "W"),
            "energy_kwh": Point(1.5, "kWh"),
            "phase2_current_a": Point(7.25, "A"),
            "outlet_03_state": Point("on"),
            "outlet_04_state": Point("off"),
        },
        ts=1.0,
        mono_s=1.0,
    )
    store.update(
        "r1s01",
        {
            "gpu1_temp_c": Point(71.0, "C"),
            "fan1_rpm": Point(9000, "RPM"),
            "chassis_power": Point("on"),
            "odd_sensor": Point(3, "mV"),
        },
        ts=1.0,
        mono_s=1.0,
    )
    store.set_state("cdu1", DeviceState.ONLINE, "polling")
    return store


def _samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


def _collect(store: PointStore, **overrides: Any) -> dict[Any, float]:
    collector = PodCollector(_sources(store, **overrides), TickHistogram(), {("x", "info"): 2})
    return _samples(render(collector.collect))


def test_points_go_out_in_base_units_with_what_their_names_encode_as_labels() -> None:
    samples = _collect(_pod_store())
    assert _value(samples, "megapod_coolant_supply_temperature_celsius", device="cdu1") == 31.25
    assert _value(samples, "megapod_coolant_flow_cubic_meters_per_second") == 120.0 / 60_000
    assert _value(samples, "megapod_coolant_differential_pressure_pascals") == 85_500.0
    assert _value(samples, "megapod_pump_speed_ratio", pump="1") == 0.55
    assert _value(samples, "megapod_pump_running", pump="2") == 1.0
    assert _value(samples, "megapod_leak_detected", device="cdu1") == 0.0
    assert _value(samples, "megapod_pdu_power_watts", device="pdu-r1a", rack="1") == 4200.0
    assert _value(samples, "megapod_pdu_energy_joules") == 1.5 * 3_600_000
    assert _value(samples, "megapod_pdu_phase_current_amperes", phase="2") == 7.25
    assert _value(samples, "megapod_pdu_outlet_on", outlet="3") == 1.0
    assert _value(samples, "megapod_pdu_outlet_on", outlet="4") == 0.0
    assert _value(samples, "megapod_server_power_on", device="r1s01") == 1.0
    name = "megapod_server_sensor_temperature_celsius"
    assert _value(samples, name, device="r1s01", point="gpu1_temp_c") == 71.0
    assert _value(samples, "megapod_server_sensor_fan_speed_rpm", point="fan1_rpm") == 9000.0
    assert _value(samples, "megapod_server_sensor_value", point="odd_sensor", unit="mV") == 3.0
    # A state that is not on/off is no number: it is not exported.
    assert not [k for k in samples if ("point", "control_mode") in k[1]]


def test_bad_and_stale_points_are_not_exported_as_values() -> None:
    store = _pod_store()
    samples = _collect(store)
    assert _value(samples, "megapod_coolant_return_temperature_celsius") is None
    not_good = "megapod_point_not_good"
    assert _value(samples, not_good, device="cdu1", point="return_temp_c", quality="bad") == 1.0
    store.mark_stale("cdu1", ["supply_temp_c"], now_mono_s=10.0, stale_after_s=1.0)
    samples = _collect(store)
    assert _value(samples, "megapod_coolant_supply_temperature_celsius") is None
    assert _value(samples, not_good, point="supply_temp_c", quality="stale") == 1.0
    assert _value(samples, "megapod_device_points", device="cdu1", quality="stale") == 1.0
    assert _value(samples, "megapod_device_points", device="cdu1", quality="bad") == 1.0
    assert _value(samples, "megapod_device_points", device="cdu1", quality="good") == 6.0


def test_an_offline_device_keeps_only_its_state() -> None:
    store = _pod_store()
    store.set_state("pdu-r1a", DeviceState.OFFLINE, "link lost")
    names = store.device("pdu-r1a").points
    store.mark_stale("pdu-r1a", list(names), now_mono_s=100.0, stale_after_s=3.0)
    samples = _collect(store)
    assert _value(samples, "megapod_pdu_power_watts") is None
    state = "megapod_device_state"
    assert _value(samples, state, device="pdu-r1a", state="offline", kind="pdu") == 1.0
    assert _value(samples, state, device="pdu-r1a", state="online") == 0.0
    assert _value(samples, "megapod_device_points", device="pdu-r1a", quality="stale") == 5.0


def test_new_point_names_after_a_firmware_update_make_no_duplicate_series() -> None:
    """A new SDR renames a sensor: the supervisor marks the old name stale, the
    new one reads good; only the new name is a value, once."""
    store = _pod_store()
    store.mark_stale("r1s01", ["gpu1_temp_c"], now_mono_s=5.0, stale_after_s=0.0)
    store.update("r1s01", {"gpu_1_temp_c": Point(72.0, "C")}, ts=5.0, mono_s=5.0)
    samples = _collect(store)  # also asserts no series twice
    name = "megapod_server_sensor_temperature_celsius"
    assert _value(samples, name, point="gpu1_temp_c") is None
    assert _value(samples, name, point="gpu_1_temp_c") == 72.0


def test_two_points_on_one_series_keep_the_first_and_say_so_once() -> None:
    store = _pod_store()
    store.update("pdu-r1a", {"outlet_3_state": Point("off")}, ts=2.0, mono_s=2.0)
    collector = PodCollector(_sources(store), TickHistogram(), {})
    with structlog.testing.capture_logs() as logs:
        first = _samples(render(collector.collect))
        render(collector.collect)  # every scrape leaves it out; the log says so once
    assert _value(first, "megapod_pdu_outlet_on", outlet="3") == 1.0  # outlet_03_state's
    collisions = [e for e in logs if e["event"] == "metric_series_collision"]
    assert len(collisions) == 1
    assert collisions[0]["point"] == "outlet_3_state"
    assert collisions[0]["metric"] == "megapod_pdu_outlet_on"


def test_daemon_families_read_the_daemons_state() -> None:
    stats = PublishStats()
    stats.published("device_state", "megapod/v1/pod-m/devices/cdu1/state", b"x" * 100, "cdu1")
    stats.coalesced("cdu1")
    tick = TickHistogram()
    for duration_s in (0.0004, 0.003, 2.0):
        tick.observe(duration_s)
    collector = PodCollector(_sources(_pod_store(), published=stats), tick, {("leak_changed",
                             "alarm"): 2})  # fmt: skip
    samples = _samples(render(collector.collect))
    assert _value(samples, "megapod_events_total", type="leak_changed", severity="alarm") == 2.0
    assert _value(samples, "megapod_interlock_state", interlock="leak-r1", state="tripped") == 1.0
    assert _value(samples, "megapod_interlock_state", interlock="leak-r1", state="normal") == 0.0
    assert _value(samples, "megapod_interlock_outputs_held", interlock="leak-r1") == 1.0
    assert _value(samples, "megapod_interlock_last_trip_timestamp_seconds") == 1.5
    assert _value(samples, "megapod_loop_setpoint", loop="supply-temp") == 30.0
    assert _value(samples, "megapod_loop_mode", loop="supply-temp", mode="auto") == 1.0
    assert _value(samples, "megapod_loop_term", loop="supply-temp", term="ff") == 0.5
    assert _value(samples, "megapod_loop_term", loop="supply-temp", term="d") is None
    assert _value(samples, "megapod_device_polls_total", device="cdu1", result="failed") == 1.0
    assert _value(samples, "megapod_device_request_retries_total", device="cdu1") == 1.0
    assert _value(samples, "megapod_mqtt_connected") == 1.0
    assert _value(samples, "megapod_mqtt_connection_failures_total") == 2.0
    assert _value(samples, "megapod_event_journal_events") == 3.0
    size = 100 + len("megapod/v1/pod-m/devices/cdu1/state")
    assert _value(samples, "megapod_mqtt_device_state_bytes_total", device="cdu1") == size
    assert _value(samples, "megapod_mqtt_device_updates_coalesced_total", device="cdu1") == 1.0
    tick_name = "megapod_control_tick_duration_seconds"
    assert _value(samples, f"{tick_name}_bucket", le="0.0005") == 1.0
    assert _value(samples, f"{tick_name}_bucket", le="0.005") == 2.0
    assert _value(samples, f"{tick_name}_bucket", le="+Inf") == 3.0
    assert _value(samples, f"{tick_name}_count") == 3.0


def test_family_names_are_unique_and_promtool_accepts_every_family() -> None:
    names = [f.name for f in all_point_families()]
    assert len(names) == len(set(names))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/bootstrap")
    store = _pod_store()
    # One point of every kind in every unit, so every generic family appears.
    for device, kind in (("cdu1", "cdu"), ("pdu-r1a", "pdu"), ("r1s01", "bmc")):
        units = ("C", "W", "A", "V", "%", "RPM", "kPa", "lpm", "kWh", "s", "")
        readings = {f"extra_{n}": Point(1.0, unit) for n, unit in enumerate(units)}
        store.update(device, readings, ts=1.0, mono_s=1.0)
        assert store.device(device).kind == kind
    text = render(PodCollector(_sources(store), TickHistogram(), {}).collect)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert not result.stdout.strip() and not result.stderr.strip()
    emitted = {f.name for f in text_string_to_metric_families(text.decode())}
    assert emitted >= {n for n in names if "sensor" in n}


# -- the server -------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    collector = PodCollector(_sources(_pod_store()), TickHistogram(), {})
    metrics = MetricsServer("127.0.0.1", free_tcp_port(), lambda: collector.frozen().collect)
    task = asyncio.create_task(metrics.run())
    try:
        async with asyncio.timeout(5):
            await metrics.bound.wait()
        yield metrics
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _http(server: MetricsServer, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server._port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status.encode(), headers, body


async def test_get_metrics_answers_the_text_format_plain_or_gzipped(server: MetricsServer) -> None:
    status, headers, body = await _http(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    assert b"megapod_coolant_supply_temperature_celsius{" in body
    status, headers, zipped = await _http(
        server, b"GET /metrics?x=1 HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    assert headers["content-encoding"] == "gzip"
    assert _samples(gzip.decompress(zipped)).keys() == _samples(body).keys()
    status, headers, body = await _http(server, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK" and body == b"" and int(headers["content-length"]) > 0
    assert server.scrapes == 3


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /other HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"HTTP/1.1 405 Method Not Allowed"),
        (b"\x16\x03\x01 garbage\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
         b"HTTP/1.1 431 Request Header Fields Too Large"),
    ],
)  # fmt: skip
async def test_bad_requests_get_an_error_and_the_server_keeps_serving(
    server: MetricsServer, request_bytes: bytes, status: bytes
) -> None:
    assert (await _http(server, request_bytes))[0] == status
    assert (await _http(server, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == b"HTTP/1.1 200 OK"


async def test_a_port_in_use_is_logged_and_tried_again() -> None:
    blocker = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    metrics = MetricsServer("127.0.0.1", port, lambda: lambda: iter(()))
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(metrics.run())
        try:
            await wait_until(lambda: any(e["event"] == "metrics_listen_failed" for e in logs), 5)
            blocker.close()
            await blocker.wait_closed()
            async with asyncio.timeout(10):
                await metrics.bound.wait()  # the retry binds once the port is free
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    failed = [e for e in logs if e["event"] == "metrics_listen_failed"]
    assert failed[0]["listen"] == f"127.0.0.1:{port}" and "error" in failed[0]


def test_docs_metrics_md_lists_every_family_and_no_other() -> None:
    from pathlib import Path

    from prometheus_client.process_collector import ProcessCollector

    docs = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    rows = [line for line in docs.splitlines() if line.startswith("|")]
    documented = {name for row in rows for name in re.findall(r"`((?:megapod|process)_\w+)`", row)}
    collector = PodCollector(_sources(PointStore()), TickHistogram(), {})
    families = [*collector.collect(), *ProcessCollector(registry=None).collect()]
    emitted = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    emitted |= {f.name for f in all_point_families()}
    emitted |= set(POWER_FAMILIES)  # Sources.extra with [power] (tests/unit/test_power_metrics.py)
    assert documented == emitted


def test_a_frozen_scrape_shows_the_moment_it_was_taken() -> None:
    store = _pod_store()
    collector = PodCollector(_sources(store), TickHistogram(), {})
    frozen = collector.frozen()
    assert _samples(render(frozen.collect)) == _samples(render(collector.collect))
    store.update("cdu1", {"supply_temp_c": Point(40.0, "C")}, ts=2.0, mono_s=2.0)
    store.set_state("cdu1", DeviceState.OFFLINE, "link lost")
    then = _samples(render(frozen.collect))
    assert _value(then, "megapod_coolant_supply_temperature_celsius") == 31.25
    assert _value(then, "megapod_device_state", device="cdu1", state="online") == 1.0
    now = _samples(render(collector.collect))
    assert _value(now, "megapod_coolant_supply_temperature_celsius") == 40.0
