"""Every read command of the real megapodctl against a daemon on the simulated
pod, as a table (80 columns, nothing cut) and as JSON (what the daemon
holds), with the exit codes of the ways they fail; events --follow; bash
completion with ids from the daemon; config check as megapodd checks."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ctl_helpers import MEGAPODCTL, cli_env, ctl, words
from tests.integration.simulated_pod import Pod

pytestmark = pytest.mark.integration

DEVICES = [
    "cdu1", "pdu-r1a", "pdu-r2a",
    "r1s01", "r1s02", "r1s03", "r1s04", "r2s01", "r2s02", "r2s03", "r2s04",
]  # fmt: skip


async def test_every_read_command_against_the_simulated_pod(pod: Pod, tmp_path: Path) -> None:
    """One pod for all of them (each part below says what it checks)."""
    await _tables_and_json(pod)
    await _failures(pod, tmp_path)
    await _follow(pod)
    await _completion(pod, tmp_path)
    await _config_check(pod, tmp_path)


async def _tables_and_json(pod: Pod) -> None:
    sock = pod.sock
    store = {r.id: r for r in pod.daemon.store.devices()}
    assert sorted(store) == sorted(DEVICES)

    status = (await ctl(sock, "status")).table()
    assert "pod pod-safety" in status and "MQTT connected" in status
    for device in DEVICES:
        assert f"│ {device} " in status
    answer = (await ctl(sock, "status", "--json")).json()
    assert [d["id"] for d in answer["devices"]] == [r.id for r in store.values()]

    cdu = (await ctl(sock, "status", "cdu1")).table()
    assert "cdu1 (cdu) — online" in cdu and "supply_temp_c" in cdu and "link: polls_ok" in cdu
    [one] = (await ctl(sock, "status", "cdu1", "--json")).json()["devices"]
    assert set(one["points"]) == set(store["cdu1"].points)

    devices = (await ctl(sock, "devices")).table()
    assert "pdu-r1a outlet 3" in words(devices)  # r1s03's cabling
    listed = (await ctl(sock, "devices", "--json")).json()
    by_id = {d["id"]: d for d in listed}
    assert list(by_id) == DEVICES
    assert (by_id["r2s04"]["rack"], by_id["r2s04"]["pdu"], by_id["r2s04"]["outlet"]) == (
        2, "pdu-r2a", 4,
    )  # fmt: skip
    assert by_id["pdu-r1a"]["rack"] == 1 and by_id["cdu1"]["rack"] is None
    assert by_id["r1s01"]["points"] == len(store["r1s01"].points)

    gpus = (await ctl(sock, "points", "r1s01", "--match", "gpu*_temp_c")).table()
    assert "points of r1s01 matching gpu*_temp_c" in gpus
    rows = (await ctl(sock, "points", "r1s01", "--match", "gpu*_temp_c", "--json")).json()
    assert [p["point"] for p in rows] == [f"gpu{n}_temp_c" for n in range(1, 9)]
    assert {p["device"] for p in rows} == {"r1s01"}
    inlets = (await ctl(sock, "points", "--match", "r2*.inlet_temp_c", "--json")).json()
    assert [(p["device"], p["point"]) for p in inlets] == [
        (f"r2s0{n}", "inlet_temp_c") for n in range(1, 5)
    ]
    everything = (await ctl(sock, "points", "--json")).json()
    assert len(everything) == sum(len(r.points) for r in store.values())
    none = await ctl(sock, "points", "cdu1", "--match", "no_such_*")
    assert "no point matches 'no_such_*'" in none.table()

    events = (await ctl(sock, "events", "-n", "5")).table()
    newest = list(pod.daemon.events.recent)[-5:]
    assert all(f"│ {e.seq} " in events for e in newest)
    got = (await ctl(sock, "events", "-n", "5", "--json")).json()
    assert [e["seq"] for e in got] == [e.seq for e in newest]
    online = (await ctl(sock, "events", "--since", "10m", "--json")).json()
    assert {e["type"] for e in online} >= {"device_online"}
    assert (await ctl(sock, "events", "--severity", "critical", "--json")).json() == []
    assert (
        (await ctl(sock, "events", "--severity", "critical"))
        .table()
        .startswith("no events of severity critical or worse")
    )

    interlocks = (await ctl(sock, "interlocks")).table()
    assert "leak-tray-r1" in interlocks and "gpu-hot ×8" in interlocks
    assert "gpu-hot@r1s01" not in interlocks  # normal instances only with --all
    assert "gpu-hot@r1s01" in (await ctl(sock, "interlocks", "--all")).table()
    rules = (await ctl(sock, "interlocks", "--json")).json()
    assert set(rules) == set(pod.daemon.interlocks.snapshot())

    loops = (await ctl(sock, "loops")).table()
    assert "supply-temp" in loops and "fan-zone ×8" in loops
    assert "cdu1.facility_valve_pct" in loops  # whole, not folded
    assert set((await ctl(sock, "loops", "--json")).json()) == set(pod.daemon.loops.snapshot())

    outputs = (await ctl(sock, "outputs")).table()
    assert "cdu1.facility_valve_pct" in outputs and "by loop supply-temp" in words(outputs)
    assert "pdu-r1a.outlet_1 " not in outputs  # unclaimed: only with --all
    assert "pdu-r1a.outlet_24" in (await ctl(sock, "outputs", "--all")).table()
    claimed = (await ctl(sock, "outputs", "--json")).json()
    assert set(claimed) == set(pod.daemon.arbiter.outputs)

    version = (await ctl(sock, "version")).table().splitlines()
    assert version[1] == "megapodd 0.1.0 (pod pod-safety)"
    assert (await ctl(sock, "version", "--json")).json()["pod"] == "pod-safety"

    # One plain frame of the live view (not a terminal), and JSON frames.
    frame = (await ctl(sock, "watch", "--count", "1")).table()
    assert "pod pod-safety" in frame and "no alarms" in frame and "newest events" in frame
    frames = (await ctl(sock, "watch", "--count", "2", "--interval", "0.2s", "--json")).out
    assert [json.loads(line)["pod_id"] for line in frames.splitlines()] == ["pod-safety"] * 2


async def _failures(pod: Pod, tmp_path: Path) -> None:
    """Each way a read fails: its exit code and one line."""
    sock = pod.sock
    (await ctl(sock, "status", "nodev")).refused(1, "no device 'nodev'; devices: cdu1, pdu-r1a")
    (await ctl(sock, "points", "r9s01", "--json")).refused(1, "no device 'r9s01'")
    (await ctl(sock, "events", "--since", "yesterday")).refused(2, "not a duration or time")
    (await ctl(sock, "events", "--severity", "bad")).refused(2, "invalid choice: 'bad'")
    (await ctl(sock, "events", "-n", "0")).refused(1, "'count' must be an integer from 1 to 500")
    (await ctl(sock, "frobnicate")).refused(2, "invalid choice: 'frobnicate'")
    (await ctl(sock, "watch", "--interval", "0")).refused(2, "duration must be more than 0")
    gone = str(tmp_path / "nowhere.sock")
    for args in (("status",), ("watch",), ("interlocks", "--json"), ("events", "--follow")):
        (await ctl(gone, *args)).refused(3, f"megapodd is not running at {gone}", "--socket")
    # The daemon's own version needs no daemon: exit 0, and it says so.
    version = await ctl(gone, "version")
    assert version.code == 0 and "megapodd: unknown (megapodd is not running" in version.out


async def _follow(pod: Pod) -> None:
    """events --follow prints each new event once, in order, until Ctrl-C (exit 0)."""
    proc = await asyncio.create_subprocess_exec(
        MEGAPODCTL, "--socket", pod.sock, "events", "--follow", "--json", "-n", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            first = json.loads(await proc.stdout.readline())
            assert first["seq"] == pod.daemon.events.recent[-1].seq
            # A refused action is an audited event: it must come through.
            refused = await ctl(pod.sock, "outlet", "pdu-zz", "1", "on")
            assert refused.code == 1
            seen: list[dict[str, Any]] = []
            while not any(e["type"] == "command_rejected" for e in seen):
                seen.append(json.loads(await proc.stdout.readline()))
            assert [e["seq"] for e in seen] == list(range(first["seq"] + 1, seen[-1]["seq"] + 1))
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
            assert await proc.stderr.read() == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _completion(pod: Pod, tmp_path: Path) -> None:
    """The generated script completes commands, options and the daemon's ids."""
    script = await ctl(pod.sock, "completion", "bash")
    assert script.code == 0 and "complete -F _megapodctl megapodctl" in script.out
    (tmp_path / "completion.bash").write_text(script.out)
    # As bash calls it on a tab press: COMP_WORDS/COMP_CWORD, answer in COMPREPLY.
    probe = f"""
source {tmp_path / "completion.bash"}
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()
      _megapodctl; echo "${{COMPREPLY[*]}}"; }}
t {MEGAPODCTL} ""
t {MEGAPODCTL} --socket {pod.sock} status ""
t {MEGAPODCTL} --socket {pod.sock} outlet ""
t {MEGAPODCTL} --socket {pod.sock} outlet pdu-r1a 3 ""
t {MEGAPODCTL} --socket {pod.sock} server r2
t {MEGAPODCTL} --socket {pod.sock} --timeout 5s reset leak-t
t {MEGAPODCTL} --socket {pod.sock} override --for 10m cdu1.p
t {MEGAPODCTL} --socket {pod.sock} loop s
t {MEGAPODCTL} --socket {pod.sock} loop supply-temp ""
t {MEGAPODCTL} --socket {pod.sock} events --severity a
t {MEGAPODCTL} --socket {pod.sock} events --f
t {MEGAPODCTL} --socket {tmp_path / "none.sock"} status ""
"""
    proc = await asyncio.create_subprocess_exec(
        "bash", "--norc", "-c", probe, stdout=asyncio.subprocess.PIPE, env=cli_env()
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    lines = out.decode().splitlines()
    assert lines[0].split()[:3] == ["status", "watch", "devices"] and "config" in lines[0]
    assert lines[1].split() == DEVICES
    assert lines[2:5] == ["pdu-r1a pdu-r2a", "on off reboot", "r2s01 r2s02 r2s03 r2s04"]
    assert lines[5:8] == ["leak-tray-r1 leak-tray-r2", "cdu1.pump_speed_pct", "supply-temp"]
    assert lines[8:11] == ["setpoint", "alarm", "--follow"]
    assert lines[11] == ""  # no daemon: nothing offered, no error printed
    outputs = (await ctl(pod.sock, "completion", "words", "outputs")).out.split()
    assert outputs == sorted(pod.daemon.arbiter.outputs)


async def _config_check(pod: Pod, tmp_path: Path) -> None:
    """config check: megapodd --check-config's verdict and words."""
    good = str(pod.tmp / "pod.toml")
    ok = await ctl(pod.sock, "config", "check", good)
    assert (ok.code, ok.out) == (0, f"{good}: OK\n")
    assert (await ctl(pod.sock, "config", "check", good, "--json")).json() == {
        "file": good, "valid": True, "problems": [], "rules": None,
    }  # fmt: skip
    explained = await ctl(pod.sock, "config", "check", good, "--explain")
    assert explained.code == 0 and "leak-tray-r1" in explained.out

    bad = tmp_path / "bad.toml"
    bad.write_text('[pod]\nid = "Bad Id"\n[api]\nsocket = 3\nextra = 1\n')
    mine = await ctl(pod.sock, "config", "check", str(bad))
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "megapodd"), "--check-config", str(bad),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, theirs = await proc.communicate()
    assert (mine.code, proc.returncode) == (1, 2)  # megapodctl: failed; megapodd: config error
    assert mine.err == theirs.decode() and "problem(s)" in mine.err
    report = (await ctl(pod.sock, "config", "check", str(bad), "--json")).out
    assert json.loads(report)["valid"] is False
    assert len(json.loads(report)["problems"]) == len(mine.err.splitlines()) - 1
    (await ctl(pod.sock, "config")).refused(2, "the following arguments are required")
