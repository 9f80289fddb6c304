"""/metrics of a daemon on the small simulated pod: promtool accepts it, also
while a device is offline, and it says what `megapodctl status --json` and
the retained MQTT device states say, reading for reading."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from megapodd.metrics.names import numeric, point_metric
from megapodd.store import DeviceState
from tests.daemon_helpers import megapodctl
from tests.helpers import MosquittoBroker, wait_until
from tests.integration.simulated_pod import Pod, open_pod

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def pod(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Pod]:
    """The small pod with the PDUs' outlets read every 2 s instead of 10: a
    silent PDU's points are then all stale after 6 s instead of 30."""

    def faster(text: str) -> str:
        assert "slow_poll_s = 10.0" in text
        return text.replace("slow_poll_s = 10.0", "slow_poll_s = 2.0")

    async with open_pod(tmp_path, mosquitto, faster) as opened:
        yield opened


async def _scrape(pod: Pod) -> bytes:
    server = pod.daemon.metrics.server
    assert server is not None, "the pod's config turns /metrics on"
    async with asyncio.timeout(10):
        await server.bound.wait()
    address = pod.daemon.config.metrics.address
    assert address is not None
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: pod\r\n\r\n")
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return body


def _samples(text: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"series twice: {key}"
            samples[key] = sample.value
    return samples


async def _promtool(text: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/bootstrap")
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate(text)
    assert proc.returncode == 0 and not out.strip(), out.decode()


async def test_promtool_accepts_the_pods_metrics_also_with_a_device_offline(pod: Pod) -> None:
    text = await _scrape(pod)
    await _promtool(text)
    samples = _samples(text)
    assert samples[("megapod_mqtt_connected", frozenset({("pod", "pod-safety")}))] == 1.0
    await pod.inject("silent", "pdu-r2a")

    def stale() -> bool:
        record = pod.daemon.store.device("pdu-r2a")
        return record.state is DeviceState.OFFLINE and all(
            p.quality.value != "good" for p in record.points.values()
        )

    await wait_until(stale, timeout_s=15)
    text = await _scrape(pod)
    await _promtool(text)
    samples = _samples(text)
    offline = [
        v for (name, labels), v in samples.items()
        if name == "megapod_device_state" and ("device", "pdu-r2a") in labels
        and ("state", "offline") in labels
    ]  # fmt: skip
    assert offline == [1.0]
    values = [
        name for name, labels in samples
        if ("device", "pdu-r2a") in labels and name.startswith("megapod_pdu_")
    ]  # fmt: skip
    assert values == [], "a silent PDU's stale points are not exported as values"
    not_good = [
        labels for name, labels in samples
        if name == "megapod_point_not_good" and ("device", "pdu-r2a") in labels
    ]  # fmt: skip
    assert len(not_good) == len(pod.daemon.store.device("pdu-r2a").points)
    await pod.clear("silent", "pdu-r2a")


async def _retained_states(broker: MosquittoBroker, count: int) -> dict[str, Any]:
    states: dict[str, Any] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe("megapod/v1/pod-safety/devices/+/state", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if message.retain:
                    states[str(message.topic).split("/")[4]] = json.loads(message.payload)
                if len(states) == count:
                    return states
    raise AssertionError("unreachable")


async def _status(pod: Pod) -> dict[str, dict[str, Any]]:
    code, out, err = await megapodctl("--socket", pod.sock, "status", "--json")
    assert code == 0, err
    return {d["id"]: d for d in json.loads(out)["devices"]}


async def test_metrics_megapodctl_and_mqtt_give_the_same_readings(
    pod: Pod, mosquitto: MosquittoBroker
) -> None:
    devices = len(list(pod.daemon.store.devices()))
    await _scrape(pod)  # the server is up
    compared: dict[str, int] = {}
    for _ in range(5):  # readings move on; a few windows give plenty unchanged
        before = await _status(pod)
        mqtt = await _retained_states(mosquitto, devices)
        samples = _samples(await _scrape(pod))
        after = await _status(pod)
        for device, status in before.items():
            for name, point in status["points"].items():
                later = after[device]["points"].get(name)
                published = mqtt[device]["points"].get(name)
                # The same reading in all four looks: no new one came in between.
                if later is None or published is None or point["quality"] != "good":
                    continue
                if not point["ts"] == later["ts"] == published["ts"]:
                    continue
                assert published["value"] == point["value"] == later["value"], (device, name)
                value = numeric(point["value"])
                if value is None:
                    continue
                metric = point_metric(status["kind"], name, point["unit"])
                labels = {("pod", "pod-safety"), ("device", device)}
                labels |= set(zip(metric.family.labels, metric.labels, strict=True))
                hits = [
                    v for (n, ls), v in samples.items()
                    if n == metric.family.name and labels <= ls
                ]  # fmt: skip
                assert hits == [metric.convert(value)], (device, name, point, hits)
                compared[status["kind"]] = compared.get(status["kind"], 0) + 1
    assert set(compared) == {"cdu", "pdu", "bmc"}, compared
    assert sum(compared.values()) >= 200, compared
