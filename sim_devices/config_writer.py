"""The megapodd config that points at every device of a simulated pod.

Written by hand rather than with a TOML library: the shape is fixed and small,
and strings go through one escaping function that yields valid TOML basic
strings (JSON string escapes are a subset TOML accepts).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sim_devices.control_loops import default_loops
from sim_devices.physics import constants as k
from sim_devices.profiles import (
    CDU_ID,
    PodLayout,
    PortPlan,
    SimPaths,
    breaker_rating_a,
    check_oversubscribe,
    feed_w,
)
from sim_devices.safety_rules import PHASE_VOLTAGE_V, PduRating, default_rules

_POD_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # the daemon's DeviceId rule

# Poll periods from DESIGN.md "Timing": CDU safety block fast, PDU phases 1 s,
# outlet tables 10 s, BMC temperatures 2 s.
CDU_POLL_S = 0.25
PDU_FAST_POLL_S = 1.0
PDU_SLOW_POLL_S = 10.0
BMC_POLL_S = 2.0
BMC_BAUD = 115_200
# The budget holds each phase at 80 % of its breaker (continuous load) and
# raises caps after a minute of headroom.
POWER_PHASE_LIMIT_PCT = 80.0
POWER_RELEASE_S = 60.0


class ConfigWriteError(ValueError):
    """A value that cannot go into the daemon config (named in the message)."""


@dataclass(frozen=True, slots=True)
class DaemonConfigSpec:
    """Everything the written config depends on."""

    layout: PodLayout
    ports: PortPlan
    paths: SimPaths
    pod_id: str = "pod-sim"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    host: str = "127.0.0.1"
    metrics_listen: str = "127.0.0.1:9108"  # the daemon's /metrics; "" = off
    oversubscribe: float = 1.0  # breakers and feed sized for peak / this

    def __post_init__(self) -> None:
        check_oversubscribe(self.oversubscribe)
        if not _POD_ID_RE.match(self.pod_id):
            raise ConfigWriteError(
                f"pod id {self.pod_id!r} must be lower-case letters, digits, '-' or '_' "
                "(at most 63, starting with a letter or digit)"
            )
        if not self.mqtt_url.startswith(("mqtt://", "mqtts://")):
            raise ConfigWriteError(
                f"MQTT URL must start mqtt:// or mqtts://, got {self.mqtt_url!r}"
            )


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def pdu_ratings(layout: PodLayout, oversubscribe: float = 1.0) -> list[PduRating]:
    """Each PDU's phase breaker, and the most servers any of its phases feeds."""
    breaker_a = breaker_rating_a(layout, k.SERVER_PEAK_W, PHASE_VOLTAGE_V, oversubscribe)
    per_phase: dict[tuple[str, int], int] = {}
    for server in layout.server_ids():
        plug = layout.plug(server)
        per_phase[plug.pdu_id, plug.phase] = per_phase.get((plug.pdu_id, plug.phase), 0) + 1
    busiest = {pdu: max(n for (p, _), n in per_phase.items() if p == pdu) for pdu, _ in per_phase}
    return [PduRating(pdu, breaker_a, busiest.get(pdu, 0)) for pdu in layout.pdu_ids()]


def render_config(spec: DaemonConfigSpec) -> str:
    """The config file's text."""
    layout, ports, paths = spec.layout, spec.ports, spec.paths
    ratings = {r.pdu: r for r in pdu_ratings(layout, spec.oversubscribe)}
    lines = [
        "# Written by megapod-sim: every device of the simulated pod.",
        f"# Layout: {layout.racks} racks x {layout.servers_per_rack} servers, "
        f"{layout.pdus_per_rack} PDU(s) per rack of {layout.outlets_per_pdu} outlets.",
        "",
        "[pod]",
        f"id = {_s(spec.pod_id)}",
        "",
        "[mqtt]",
        f"url = {_s(spec.mqtt_url)}",
        'topic_prefix = "megapod/v1"',
        "",
        "[api]",
        f"socket = {_s(str(paths.daemon_socket))}",
        "",
        "[state]",
        f"dir = {_s(str(paths.daemon_state_dir))}",
        "",
        "[metrics]",
        f"listen = {_s(spec.metrics_listen)}",
        "",
        "[[cdu]]",
        f"id = {_s(CDU_ID)}",
        f"url = {_s(f'modbus+tcp://{spec.host}:{ports.cdu_port}')}",
        "unit = 1",
        f"poll_s = {CDU_POLL_S}",
        "",
        "# The pod's power budget: its feed (docs/power.md).",
        "[power]",
        f"budget_w = {feed_w(layout, k.SERVER_PEAK_W, spec.oversubscribe):.0f}",
        f"phase_limit_pct = {POWER_PHASE_LIMIT_PCT:g}",
        f"release_s = {POWER_RELEASE_S:g}",
    ]
    for pdu in layout.pdu_ids():
        lines += [
            "",
            "[[pdu]]",
            f"id = {_s(pdu)}",
            f"host = {_s(spec.host)}",
            f"port = {ports.pdu_port(pdu)}",
            'version = "2c"',
            'community = "public"',
            'write_community = "private"',
            f"outlets = {layout.outlets_per_pdu}",
            f"rack = {layout.rack_of_pdu(pdu)}",
            f"breaker_a = {ratings[pdu].breaker_a:g}",
            f"fast_poll_s = {PDU_FAST_POLL_S}",
            f"slow_poll_s = {PDU_SLOW_POLL_S}",
        ]
    for server in layout.server_ids():
        plug = layout.plug(server)
        port = (
            f"socket://{spec.host}:{ports.bmc_port(server)}"
            if ports.bmc_tcp
            else str(paths.pty_link(server))
        )
        lines += [
            "",
            "[[bmc]]",
            f"id = {_s(server.name)}",
            f"port = {_s(port)}",
            f"baud = {BMC_BAUD}",
            f"rack = {server.rack}",
            f"pdu = {_s(plug.pdu_id)}",
            f"outlet = {plug.outlet}",
            f"poll_s = {BMC_POLL_S}",
        ]
    lines += default_rules(layout, list(ratings.values()))
    lines += default_loops(layout)
    return "\n".join(lines) + "\n"


def write_config(path: Path, text: str) -> None:
    """Write atomically (temp file, fsync, rename) so a reader never sees half."""
    path = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
