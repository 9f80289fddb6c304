"""The power budget against the small simulated pod (issue 11's acceptance).

Real time, kept short: a release_s of 5 s and the workload steps the sim's
fault injection makes. The long random walk is bench/bench_power.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from megapodd.control.arbiter import Claim, Owner
from tests.daemon_helpers import megapodctl
from tests.helpers import MosquittoBroker, wait_until
from tests.integration.simulated_pod import Pod, open_pod
from tests.peers import snmpget_values

PEAK_W = 10_200.0
SERVERS = 8  # the small pod: 2 racks of 4, one PDU per rack
BUDGET_W = 0.8 * PEAK_W * SERVERS
RELEASE_S = 5.0
RACK1 = ["r1s01", "r1s02", "r1s03", "r1s04"]
RACK2 = ["r2s01", "r2s02", "r2s03", "r2s04"]
OID_PHASE_CURRENT = "1.3.6.1.4.1.318.1.1.26.6.3.1.5"  # tenths of A, phase p


def _budget_config(budget_w: float | None) -> Any:
    def edit(text: str) -> str:
        if budget_w is not None:
            text = re.sub(r"^budget_w = .*$", f"budget_w = {budget_w:.0f}", text, flags=re.M)
            text = text.replace("[power]\n", f"[power]\nmax_budget_w = {PEAK_W * SERVERS:.0f}\n")
        text = re.sub(r"^release_s = .*$", f"release_s = {RELEASE_S:g}", text, flags=re.M)
        # Rack 1 keeps its power longer.
        return re.sub(r'(rack = 1\npdu = "pdu-r1a")', r"\1\npriority = 50", text)

    return edit


def _caps(status: dict[str, Any]) -> dict[str, float | None]:
    return {s["id"]: s["power_limit_w"] for s in status["servers"]}


def _tripped(status: dict[str, Any]) -> list[str]:
    return [pdu for pdu, p in status["pdus"].items() if p["tripped_phases"]]


async def _snmp_phase_current_a(port: int, phase: int, scratch: Path) -> float:
    """A phase's current as net-snmp's snmpget reads it off the simulated PDU."""
    [tenths] = await snmpget_values(port, [f"{OID_PHASE_CURRENT}.{phase}"], scratch)
    return int(tenths) / 10.0


@pytest.mark.timeout(180)
async def test_the_budget_holds_a_step_to_full_load_low_priority_first_and_lets_go(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Acceptance 1 and 4: budget at 80 % of peak, 30 -> 100 % -> 30 %; then an
    interlock's power_cap and a technician's override over the budget's cap."""
    async with open_pod(tmp_path, mosquitto, _budget_config(BUDGET_W)) as pod:
        await pod.inject("workload", "all", "30")
        await asyncio.sleep(2.0)
        loop = asyncio.get_running_loop()
        await pod.inject_at("workload", "all", "100")
        stepped = loop.time()
        trace: list[tuple[float, float]] = []
        status: dict[str, Any] = {}
        while loop.time() - stepped < 16.0:
            status = await pod.status_now()
            trace.append((loop.time() - stepped, status["total_power_w"]))
            assert not _tripped(status)
            await asyncio.sleep(0.25)
        late = [w for t, w in trace if t >= 10.0]
        assert late and max(late) <= BUDGET_W * 1.02, trace
        caps = _caps(status)
        # Rack 2 (priority 0) gives first; rack 1 (priority 50) keeps its power.
        assert all(caps[s] is not None for s in RACK2), (caps, trace)
        assert all(caps[s] is None for s in RACK1), caps
        power = await _power(pod)
        assert power["budget_w"] == BUDGET_W
        assert {c["server"] for c in power["caps"]} == set(RACK2)
        assert all(c["reason"] == "pod budget" and c["owner"] == "loop" for c in power["caps"])
        assert pod.events("power_capping")[0].data["state"] == "started"

        # Acceptance 4: an override and an interlock's power_cap win over the budget.
        await _precedence(pod, caps)

        await pod.inject_at("workload", "all", "30")
        dropped = loop.time()
        await wait_until(
            lambda: _no_caps(pod), timeout_s=RELEASE_S + 30.0, interval_s=0.5
        )
        released_after = loop.time() - dropped
        assert released_after >= RELEASE_S
        status = await pod.status_now()
        assert not _tripped(status)
        assert pod.events("power_capping")[-1].data["state"] == "ended"


async def _no_caps(pod: Pod) -> bool:
    return all(cap is None for cap in _caps(await pod.status_now()).values())


async def _power(pod: Pod) -> dict[str, Any]:
    import json

    code, out, err = await megapodctl("--socket", pod.sock, "power", "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


async def _precedence(pod: Pod, caps: dict[str, float | None]) -> None:
    arbiter = pod.daemon.arbiter
    server = "r2s01"
    budget_cap = caps[server]
    assert budget_cap is not None
    # A technician's override above the budget's cap wins (acceptance 4) ...
    code, _out, err = await megapodctl(
        "--socket", pod.sock, "override", server, "power_limit_w", "9000", "--for", "60s"
    )
    assert code == 0, err
    await wait_until(lambda: _sim_cap(pod, server, 9000), timeout_s=5.0)
    output = arbiter.outputs[f"{server}.power_limit_w"]
    assert output.claims[Owner.LOOP].by == "power budget"  # still there, below
    power = await _power(pod)
    [entry] = [c for c in power["caps"] if c["server"] == server]
    assert entry["owner"] == "override" and entry["cap_w"] == 9000.0
    # ... and an interlock's power_cap wins over both.
    arbiter.claim_in_background(
        f"{server}.power_limit_w", Claim(Owner.INTERLOCK, 3000.0, "gpu-hot"), "test interlock"
    )
    await wait_until(lambda: _sim_cap(pod, server, 3000), timeout_s=5.0)
    arbiter.release(f"{server}.power_limit_w", Owner.INTERLOCK, "cleared")
    await wait_until(lambda: _sim_cap(pod, server, 9000), timeout_s=5.0)
    code, _out, err = await megapodctl("--socket", pod.sock, "release", server, "power_limit_w")
    assert code == 0, err
    # The budget's own cap comes back once they have let go.
    await wait_until(
        lambda: output.winner() is not None and output.winner().owner is Owner.LOOP,  # type: ignore[union-attr]
        timeout_s=5.0,
    )


async def _sim_cap(pod: Pod, server: str, watts: float) -> bool:
    return _caps(await pod.status_now())[server] == watts


@pytest.mark.timeout(180)
async def test_an_oversubscribed_phase_is_held_below_its_breaker_and_silence_caps_its_rack(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Acceptance 2 and 3, with breakers sized for peak / 1.3."""
    async with open_pod(
        tmp_path, mosquitto, _budget_config(None), sim_args=("--oversubscribe", "1.3")
    ) as pod:
        status = await pod.status_now()
        breaker_a = status["pdus"]["pdu-r1a"]["breaker_a"]
        assert breaker_a == 86.0  # 2 servers x 10.2 kW / 1.3 / 230 V / 0.8, to the ampere
        await pod.inject("workload", "all", "30")
        await asyncio.sleep(2.0)
        # Rack 1 ramps to 100 % (a job starting): pdu-r1a phase 1 feeds two servers,
        # 20.4 kW = 89 A at peak, over its 86 A breaker without the budget.
        for pct in ("45", "60", "75", "90", "100"):
            await pod.inject("workload", "1", pct)
            await asyncio.sleep(1.5)
        worst = 0.0
        for _ in range(16):
            status = await pod.status_now()
            assert not _tripped(status), status["pdus"]
            worst = max(worst, *status["pdus"]["pdu-r1a"]["phase_current_a"])
            await asyncio.sleep(0.5)
        assert worst < breaker_a
        snmp = await _snmp_phase_current_a(pod.pdu_port("pdu-r1a"), 1, tmp_path)
        assert snmp < breaker_a
        assert snmp <= 0.8 * breaker_a * 1.02
        caps = _caps(status)
        on_phase_1 = {"r1s01", "r1s04"}  # outlets 1 and 4
        assert {s for s, c in caps.items() if c is not None} == on_phase_1, caps
        power = await _power(pod)
        assert power["budget_w"] is not None and power["pod_power_w"] < power["budget_w"]

        # Acceptance 3: pdu-r1a goes silent -> rack 1's servers capped within 2 s.
        await pod.inject("workload", "1", "30")
        loop = asyncio.get_running_loop()
        await pod.inject_at("silent", "pdu-r1a")
        silenced = loop.time()
        await wait_until(
            lambda: _all_capped(pod, RACK1), timeout_s=5.0, interval_s=0.1
        )
        assert loop.time() - silenced <= 2.0
        assert any(e.data["state"] == "telemetry_lost" for e in pod.events("power_capping"))
        await pod.clear("silent", "pdu-r1a")
        await wait_until(lambda: _none_capped(pod, RACK1), timeout_s=RELEASE_S + 30.0)


async def _all_capped(pod: Pod, servers: list[str]) -> bool:
    caps = _caps(await pod.status_now())
    return all(caps[s] is not None for s in servers)


async def _none_capped(pod: Pod, servers: list[str]) -> bool:
    caps = _caps(await pod.status_now())
    return all(caps[s] is None for s in servers)

