"""Delivery within limits: the device bandwidth budget (changes coalesced,
never lost; urgent news not held back) and the fleet command limits (rate,
size, queue; a reply for every refusal, a count where none can go)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Point, Quality
from megapodd.commands.caller import Caller, Role
from megapodd.commands.dispatch import Command
from megapodd.commands.requests import ReleaseRequest
from megapodd.mqtt.budget import BURST_S, DeviceBudget
from megapodd.mqtt.command_limits import MAX_COMMAND_BYTES, RateLimit
from megapodd.mqtt.command_subscription import CommandSubscription, _Request
from megapodd.mqtt.telemetry import RETAINED_MIN_INTERVAL_S, Telemetry
from megapodd.store import DeviceState, PointStore


def test_a_budget_allows_any_message_out_of_debt_and_averages_to_its_rate() -> None:
    budget = DeviceBudget(1000)
    assert budget.allows("d", 0.0)
    budget.spend("d", int(1000 * BURST_S) + 3000, 0.0)  # the saved burst and 3 s more
    assert budget.ready_at_s("d", 0.0) == pytest.approx(3.0)
    assert not budget.allows("d", 2.9)
    assert budget.allows("d", 3.0)
    assert DeviceBudget(0).allows("d", 0.0)  # no limit
    assert DeviceBudget(0).ready_at_s("d", 5.0) == 5.0


class _Client:
    """Records what would go to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, topic: str, payload: bytes, **_kwargs: Any) -> None:
        self.sent.append((topic, json.loads(payload)))

    def states(self) -> list[dict[str, Any]]:
        return [p for t, p in self.sent if t.endswith("/state")]


@pytest.mark.looptime
async def test_changes_past_the_budget_are_coalesced_and_urgent_news_is_not(
    tmp_path: Path,
) -> None:
    store = PointStore()
    store.add_device("cdu1", "cdu")
    telemetry = Telemetry(store, lambda s: f"p/{s}", tmp_path, 3600.0, 100, 500)
    store.changes.add("mqtt", telemetry.on_change)
    client, stopping = _Client(), asyncio.Event()
    loop = asyncio.get_running_loop()
    telemetry.new_session()
    task = asyncio.create_task(telemetry.publish_until(client, stopping))  # type: ignore[arg-type]
    try:
        store.set_state("cdu1", DeviceState.ONLINE, "polling")
        for step in range(200):  # a reading moving past its deadband every 0.1 s for 20 s
            store.update("cdu1", {"t_c": Point(30.0 + step, "C")}, ts=0.0, mono_s=loop.time())
            await asyncio.sleep(0.1)
        states = client.states()
        size = len(json.dumps(states[-1], separators=(",", ":"))) + len("p/devices/cdu1/state")
        # Within the budget: the saved burst plus 500 B/s over the 20 s.
        assert len(states) <= (500 * BURST_S + 500 * 20) / size + 1
        coalesced = telemetry.stats.devices["cdu1"].coalesced
        assert coalesced > 100  # most updates rode on a later message
        assert telemetry.stats.devices["cdu1"].messages == len(states)
        await asyncio.sleep(size / 500 + 1)
        # Nothing is lost: the newest value goes out once the budget allows.
        assert client.states()[-1]["points"]["t_c"]["value"] == 229.0
        # A quality change is news: it goes at once, in debt or not.
        before = len(client.states())
        store.update("cdu1", {"t_c": Point(None, "C", Quality.BAD)}, ts=0.0, mono_s=loop.time())
        await asyncio.sleep(0.1)
        assert len(client.states()) == before + 1
        assert client.states()[-1]["points"]["t_c"]["quality"] == "bad"
    finally:
        stopping.set()
        telemetry.wake()
        await task


@pytest.mark.looptime
async def test_a_whole_pod_topic_goes_at_most_every_half_second_with_its_latest_state(
    tmp_path: Path,
) -> None:
    telemetry = Telemetry(PointStore(), lambda s: f"p/{s}", tmp_path, 3600.0, 100)
    state = {"changes": 0}
    telemetry.add_retained_topic("interlocks", lambda: dict(state))
    client, stopping = _Client(), asyncio.Event()
    telemetry.new_session()
    task = asyncio.create_task(telemetry.publish_until(client, stopping))  # type: ignore[arg-type]
    try:
        for _ in range(100):  # a trip: a change per action, 100 in a second
            state["changes"] += 1
            telemetry.topic_changed("interlocks")
            await asyncio.sleep(0.01)
        await asyncio.sleep(RETAINED_MIN_INTERVAL_S)
        sent = [p["interlocks"]["changes"] for t, p in client.sent if t == "p/interlocks"]
        assert 2 <= len(sent) <= 1 / RETAINED_MIN_INTERVAL_S + 2, sent
        assert sent[-1] == 100  # nothing lost: the latest state went out
    finally:
        stopping.set()
        telemetry.wake()
        await task


# -- fleet commands -----------------------------------------------------------------


def test_the_rate_limit_takes_a_burst_then_its_rate() -> None:
    limit = RateLimit(rate_per_s=2.0, burst=3)
    assert [limit.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not limit.take(0.4)
    assert limit.take(0.5)  # one token back after 0.5 s at 2/s


def _fleet(refusals: list[str]) -> CommandSubscription:
    async def release(_request: Any, _caller: Caller) -> object:
        return {"output": "cdu1.pump_speed_pct", "released": "fleet", "owner": None}

    commands = {"release": Command(release, ReleaseRequest, Role.ADMIN, "end", fleet=True)}
    return CommandSubscription(
        commands,
        lambda verb, _args, _caller, error: refusals.append(f"{verb}: {error}"),
        "megapod/v1",
        rate_per_s=1.0,
        burst=2,
    )


def _request(payload: bytes, reply_to: str | None = "fleet/r") -> _Request:
    return _Request("release", payload, reply_to, b"c1")


async def test_a_flood_is_refused_with_replies_and_audited_once() -> None:
    refusals: list[str] = []
    fleet = _fleet(refusals)
    queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=2)
    body = b'{"request_id":"r1","device":"cdu1","output":"pump_speed_pct"}'
    assert fleet.admit(_request(body), queue) is None
    assert fleet.admit(_request(body), queue) is None
    answers = [fleet.admit(_request(body), queue) for _ in range(5)]
    assert all(a is not None for a in answers)
    first = answers[0]
    assert first is not None and first.topic == "fleet/r" and first.correlation == b"c1"
    reply = json.loads(first.payload)
    assert reply["ok"] is False and reply["error"].startswith("rate limited: at most 2 commands")
    assert len(refusals) == 1  # the flood is one audit event; the rest are counted
    assert fleet.stats.refusals == {"rate": 5}
    assert queue.qsize() == 2


async def test_an_oversized_or_retained_command_is_refused_with_a_reply() -> None:
    refusals: list[str] = []
    fleet = _fleet(refusals)
    queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=2)
    big = _request(b"{" + b" " * MAX_COMMAND_BYTES + b"}")
    answer = fleet.admit(big, queue)
    assert answer is not None
    assert json.loads(answer.payload)["error"] == (
        f"request is {MAX_COMMAND_BYTES + 2} bytes; at most {MAX_COMMAND_BYTES}"
    )
    answer = fleet.admit(_request(b"{}"), queue, retained=True)
    assert answer is not None and "retained" in json.loads(answer.payload)["error"]
    assert fleet.stats.refusals == {"size": 1, "retained": 1}
    assert len(refusals) == 2 and queue.empty()


async def test_a_refusal_without_a_usable_reply_topic_is_counted() -> None:
    refusals: list[str] = []
    fleet = _fleet(refusals)
    queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=2)
    assert fleet.admit(_request(b"{}", reply_to="fleet/#"), queue) is None
    assert fleet.admit(_request(b"{}", reply_to="megapod/v1/other/cmd/x"), queue) is None
    assert fleet.admit(_request(b"{" + b" " * MAX_COMMAND_BYTES, reply_to=None), queue) is None
    assert fleet.stats.unanswered == 3
    assert fleet.stats.refusals == {"reply_topic": 2, "size": 1}
    assert len(refusals) == 3
