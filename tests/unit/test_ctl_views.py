"""megapodctl's tables and live-view frame with hostile text from megapodd:
device reasons, event messages and ids holding "[...]" (rich markup) are
shown as they are, never read as styles or failing; and at 80 columns no
line is wider and no cell is cut short."""

from __future__ import annotations

import io
import time
from typing import Any

from rich.console import Console, RenderableType

from megapodd.ctl.views.devices import (
    device_points_table,
    devices_table,
    points_table,
    status_table,
)
from megapodd.ctl.views.events import events_table
from megapodd.ctl.views.interlocks import interlocks_table
from megapodd.ctl.views.loops import loops_table
from megapodd.ctl.views.outputs import outputs_table
from megapodd.ctl.views.text import literal
from megapodd.ctl.watch.model import build_frame
from megapodd.ctl.watch.render import render

HOSTILE = "link lost: [Errno 111] refused [/] [b]x[/b]"
NOW = time.time()


def _point(value: object, unit: str = "", quality: str = "good") -> dict[str, Any]:
    return {"value": value, "unit": unit, "quality": quality, "ts": NOW - 1}


def _answers() -> dict[str, Any]:
    cdu = {
        "id": "cdu1",
        "kind": "cdu",
        "state": "stale",
        "reason": HOSTILE,
        "points": {
            "supply_temp_c": _point(29.5, "C"),
            "return_temp_c": _point(35.0, "C"),
            "flow_lpm": _point(80.0, "lpm"),
            "leak_zones": _point(1),
            "leak": _point(True),
            "pump1_speed_pct": _point(55.0, "%"),
            "pump1_running": _point(True),
            "firmware_version": _point("[2.7]"),
        },
        "link": {"polls_ok": 3, "timeouts": 2},
    }
    server = {
        "id": "r1s01",
        "kind": "bmc",
        "state": "online",
        "reason": "polling",
        "points": {"gpu1_temp_c": _point(71.5, "C"), "chassis_power": _point("on")},
        "link": {},
    }
    pdu = {
        "id": "pdu-r1a",
        "kind": "pdu",
        "state": "offline",
        "reason": HOSTILE,
        "points": {"power_w": _point(None, "W", "bad"), "outlet_01_state": _point("off")},
        "link": {"polls_failed": 4},
    }
    instance = {
        "id": "leak[1]",
        "rule": "leak[1]",
        "state": "tripped",
        "since": NOW,
        "reason": HOSTILE,
        "watches": "cdu1.leak_zones has bit 0 set",
        "latch": True,
        "actions": [
            {
                "after_s": 0.0,
                "action": "isolate [rack]",
                "value": "closed",
                "outputs": "cdu1 rack_1_isolation",
            }
        ],
    }
    loop = {
        "id": "fan[zone]@r1s01",
        "mode": "failsafe",
        "reason": HOSTILE,
        "input": "x[/]",
        "setpoint": None,
        "process_value": None,
        "output": 100.0,
        "target": "r1s01.fan",
        "owner": "loop",
        "p": None,
        "i": None,
        "d": None,
        "ff": None,
    }
    return {
        "status": {
            "pod": {
                "id": "pod[7]",
                "version": "0.1.0",
                "mqtt": {"connected": False, "pending_events": 3},
            },
            "devices": [cdu, server, pdu],
        },
        "devices": [
            {
                "id": "cdu1",
                "kind": "cdu",
                "state": "stale",
                "reason": HOSTILE,
                "rack": None,
                "points": 8,
                "not_good": 0,
                "link": {"timeouts": 2},
            },
            {
                "id": "pdu-r1a",
                "kind": "pdu",
                "state": "offline",
                "reason": HOSTILE,
                "rack": 1,
                "outlets": 24,
                "points": 2,
                "not_good": 1,
                "link": {},
            },
            {
                "id": "r1s01",
                "kind": "bmc",
                "state": "online",
                "reason": "",
                "rack": 1,
                "pdu": "pdu-r1a",
                "outlet": 1,
                "points": 2,
                "not_good": 0,
                "link": {},
            },
        ],
        "points": [{"device": "cdu1", "point": "firmware_version", **_point("[2.7]")}],
        "events": [
            {
                "seq": 7,
                "ts": NOW,
                "severity": "alarm",
                "source": "[src]",
                "message": HOSTILE,
                "boot_id": "b",
            }
        ],
        "interlocks": {"leak[1]": instance},
        "loops": {"fan[zone]@r1s01": loop},
        "outputs": {
            "cdu1.pump_speed_pct": {
                "owner": "override",
                "value": 80.0,
                "written": 75.0,
                "unit": "%",
                "claims": [
                    {"owner": "override", "value": 80.0, "by": "uid [0]", "expires_in_s": 12.0}
                ],
            },
        },
    }


def _text(renderable: RenderableType) -> str:
    console = Console(width=80, file=io.StringIO(), color_system=None, legacy_windows=False)
    with console.capture() as captured:
        console.print(renderable)
    text = captured.get()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    return text


def _shows(text: str, what: str = HOSTILE) -> bool:
    """Every word of `what` is in the text as it is (a cell wraps between words)."""
    return all(word in text for word in what.split())


def _flat(text: str) -> str:
    """The text with borders, padding and line breaks gone (wrapped cells rejoin)."""
    for border in "│┃":
        text = text.replace(border, " ")
    return "".join(text.split())


def test_every_table_shows_megapodds_text_as_it_is() -> None:
    answers = literal(_answers())
    status = _text(status_table(answers["status"]))
    assert _shows(status) and "pod[7]" in status and "DISCONNECTED" in status
    assert "[2.7]" not in status  # not a key reading: only in `status cdu1` and points
    assert _shows(_text(devices_table(answers["devices"])))
    assert "[2.7]" in _text(points_table(answers["points"], "points"))
    events = _text(events_table(answers["events"]))
    assert _shows(events) and "[src]" in events
    interlocks = _text(interlocks_table(answers["interlocks"], everything=False))
    assert _shows(interlocks) and "isolate [rack]" in interlocks and "leak[1]" in interlocks
    loops = _text(loops_table(answers["loops"]))
    assert _shows(loops) and "fan[zone]@r1s01" in loops and "x[/]" in loops
    outputs = _flat(_text(outputs_table(answers["outputs"], everything=False)))
    assert "byuid[0]" in outputs and "(device:75.0%)" in outputs


def test_the_live_frame_shows_megapodds_text_as_it_is() -> None:
    raw = _answers()  # the frame's model takes megapodd's answers as they came
    frame = build_frame(
        raw["status"], raw["devices"], raw["interlocks"], raw["loops"], raw["events"], NOW
    )
    console = Console(width=80, file=io.StringIO(), color_system=None)
    for height in (None, 24, 12):
        text = _text(render(frame, console, height))
        flat = _flat(text)
        assert "podpod[7]" in flat and "MQTTDISCONNECTED(3eventsqueued)" in flat
        assert "● leak[1] tripped since" in text and "LEAK in zone 1" in text
        assert _shows(text, f"cdu1 stale: {HOSTILE}")  # its reason, as it came
        assert "pdu-r1a outlet 1 off" in text
    assert _shows(_text(render(frame, console)), f"[src]: {HOSTILE}")  # the event


def test_a_points_quality_says_why_it_is_bad_or_unconfirmed() -> None:
    points = {
        "power_w": {**_point(None, "W", "bad"), "reason": "21474836470 W above 43 kW"},
        "gpu1_temp_c": {**_point(61.0, "C"), "unconfirmed": True},
        "gpu2_temp_c": _point(60.5, "C"),
    }
    device = {"id": "r1s01", "kind": "bmc", "state": "online", "points": points}
    text = _flat(_text(device_points_table(literal(device))))
    assert "bad:21474836470Wabove43kW" in text
    assert "good(newerreadunconfirmed)" in text
    assert "60.5" in text and "good" in text
