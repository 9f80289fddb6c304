"""The pod's default safety rules, as `megapod-sim run --write-config` writes
them into the daemon config. docs/safety.md gives each rule's reason and the
published figure behind its limit; keep the two in step.

Written as TOML text by hand, like the rest of the config (config_writer.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sim_devices.physics import constants as k
from sim_devices.profiles import CDU_ID, PodLayout

# GPU tray coolant supply accepted up to 45 °C (GB300 tray, POD-NUMBERS.md).
SUPPLY_HIGH_C = 45.0
# 5 K beyond what any tray accepts: the GPUs lose their cooling margin fast.
SUPPLY_CRITICAL_C = 50.0
# Hopper SXM: max operating 87 °C, shutdown 92 °C (POD-NUMBERS.md).
GPU_MAX_OPERATING_C = 87.0
GPU_SHUTDOWN_C = 92.0
# A capped server still runs, at 60 % of its 10.2 kW peak (DGX H100).
GPU_HOT_CAP_W = 6_000.0
# The CDU's own reservoir-low alarm level (its status bit b5); below the
# critical level the pump is close to drawing air (the simulator cavitates at 5 %).
RESERVOIR_LOW_PCT = 20.0
RESERVOIR_CRITICAL_PCT = 10.0
# Loss of flow: under a tenth of the design flow (1.5 L/min per kW, POD-NUMBERS.md)
# while a pump runs; the pump floor (20 %) alone gives twice that.
LOSS_OF_FLOW_FRACTION = 0.10
# Phase current: power caps above 90 % of the breaker rating, load shed above 100 %.
PHASE_CAP_FRACTION = 0.90
PHASE_SHED_FRACTION = 1.00
# Caps that bring a phase back to 80 % of its breaker (continuous rating).
PHASE_TARGET_FRACTION = 0.80
PHASE_VOLTAGE_V = 230.0
# How long a server gets for its OS to shut down before power is cut (the
# simulator's soft shutdown takes 30 s).
SOFT_SHUTDOWN_S = 60.0
# After a pod-wide soft shutdown, every outlet goes off this much later.
OUTLETS_OFF_AFTER_S = 120.0


@dataclass(frozen=True, slots=True)
class PduRating:
    pdu: str
    breaker_a: float
    servers_per_phase: int


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _rule(rule_id: str, lines: Sequence[str], actions: Sequence[str]) -> list[str]:
    out = ["", "[[interlock]]", f"id = {_s(rule_id)}", *lines]
    if actions:
        out += ["actions = [", *(f"    {a}," for a in actions), "]"]
    return out


def _pod_shutdown(after_s: float) -> list[str]:
    """Every server soft, hard after a minute if still on, then every outlet."""
    return [
        f'{{do = "server_shutdown", servers = "all", after_s = {after_s:g}, '
        f"hard_after_s = {SOFT_SHUTDOWN_S:g}}}",
        f'{{do = "outlets_off", outlets = "all", after_s = {after_s + OUTLETS_OFF_AFTER_S:g}}}',
    ]


def default_rules(layout: PodLayout, ratings: Sequence[PduRating]) -> list[str]:
    """The TOML lines of the default rule set for this pod."""
    cdu = _s(CDU_ID)
    lines: list[str] = ["", "# -- Default safety rules (docs/safety.md) --"]
    for rack in range(1, layout.racks + 1):
        isolate = [
            f'{{do = "isolate_rack", rack = {rack}}}',
            f'{{do = "outlets_off", rack = {rack}}}',
        ]
        lines += _rule(
            f"leak-tray-r{rack}",
            [f"device = {cdu}", 'point = "leak_zones"', 'trip_when = "bit"', f"bit = {rack - 1}",
             'on_stale = "hold"'],
            isolate,
        )
        lines += _rule(
            f"leak-server-r{rack}",
            [f'devices = "bmc:rack={rack}"', 'point = "leak"', 'aggregate = "any"',
             'trip_when = "true"', 'on_stale = "hold"'],
            isolate,
        )
    lines += _rule(
        "reservoir-low",
        [f"device = {cdu}", 'point = "reservoir_level_pct"', 'trip_when = "below"',
         f"limit = {RESERVOIR_LOW_PCT:g}", "clear_margin = 5.0", 'severity = "alarm"',
         'on_stale = "hold"'],
        ['{do = "alarm"}'],
    )
    lines += _rule(
        "reservoir-critical",
        [f"device = {cdu}", 'point = "reservoir_level_pct"', 'trip_when = "below"',
         f"limit = {RESERVOIR_CRITICAL_PCT:g}", "clear_margin = 5.0", 'on_stale = "hold"'],
        _pod_shutdown(0.0),
    )
    lines += _rule(
        "supply-high",
        [f"device = {cdu}", 'point = "supply_temp_c"', 'trip_when = "above"',
         f"limit = {SUPPLY_HIGH_C:g}", "clear_margin = 2.0", 'severity = "alarm"'],
        ['{do = "pumps_max"}', '{do = "fans_max", servers = "all"}'],
    )
    lines += _rule(
        "supply-critical",
        [f"device = {cdu}", 'point = "supply_temp_c"', 'trip_when = "above"',
         f"limit = {SUPPLY_CRITICAL_C:g}", "clear_margin = 5.0", "for_s = 30", 'on_stale = "hold"'],
        _pod_shutdown(0.0),
    )
    design_flow_lpm = k.DESIGN_FLOW_LPM_PER_KW * layout.server_count * k.SERVER_PEAK_W / 1000.0
    lines += _rule(
        "flow-lost",
        [f"device = {cdu}", 'point = "flow_lpm"', 'trip_when = "below"',
         f"limit = {LOSS_OF_FLOW_FRACTION * design_flow_lpm:.1f}", 'while = "pump*_running"',
         'on_stale = "hold"'],
        ['{do = "lead_pump", pump = "other"}', *_pod_shutdown(5.0)],
    )
    # The CDU ignores the daemon (panel in local mode) or ran out of heartbeats
    # (failsafe speed active): both say the pod's control is not ours right now.
    for rule_id, point in (("cdu-local-mode", "local_mode"),
                           ("cdu-watchdog-expired", "watchdog_expired")):
        lines += _rule(
            rule_id,
            [f"device = {cdu}", f"point = {_s(point)}", 'trip_when = "true"', "latch = false",
             'severity = "alarm"', 'on_stale = "hold"'],
            ['{do = "alarm"}'],
        )
    # flow-lost's guard cannot see two failed pumps (neither runs): this can.
    lines += _rule(
        "pumps-failed",
        [f"device = {cdu}", 'point = "pump*_fault"', 'aggregate = "all"', 'trip_when = "true"',
         'on_stale = "hold"'],
        _pod_shutdown(0.0),
    )
    lines += _rule(
        "gpu-hot",
        ['devices = "bmc"', 'point = "gpu*_temp_c"', 'aggregate = "max"', 'scope = "each"',
         'trip_when = "above"', f"limit = {GPU_MAX_OPERATING_C:g}", "clear_margin = 3.0",
         "latch = false", 'severity = "alarm"', 'on_stale = "hold"'],
        [f'{{do = "power_cap", servers = "matched", watts = {GPU_HOT_CAP_W:g}}}'],
    )
    lines += _rule(
        "gpu-shutdown",
        ['devices = "bmc"', 'point = "gpu*_temp_c"', 'aggregate = "max"', 'scope = "each"',
         'trip_when = "above"', f"limit = {GPU_SHUTDOWN_C:g}", "clear_margin = 10.0",
         'on_stale = "hold"'],
        [f'{{do = "server_shutdown", servers = "matched", hard_after_s = {SOFT_SHUTDOWN_S:g}}}'],
    )
    for rating in ratings:
        cap_w = min(
            k.SERVER_PEAK_W,
            PHASE_TARGET_FRACTION * rating.breaker_a * PHASE_VOLTAGE_V
            / max(1, rating.servers_per_phase),
        )
        phase = [f"device = {_s(rating.pdu)}", 'point = "phase*_current_a"', 'scope = "each_point"',
                 'trip_when = "above"', 'on_stale = "hold"']
        lines += _rule(
            f"phase-high-{rating.pdu}",
            [*phase, f"limit = {PHASE_CAP_FRACTION * rating.breaker_a:.1f}", "clear_margin = 5.0",
             "latch = false", 'severity = "alarm"'],
            [f'{{do = "power_cap", servers = "phase", watts = {cap_w:.0f}}}'],
        )
        lines += _rule(
            f"phase-overload-{rating.pdu}",
            [*phase, f"limit = {PHASE_SHED_FRACTION * rating.breaker_a:.1f}"],
            ['{do = "outlets_off", outlets = "phase_lowest_priority"}'],
        )
    lost = ['trip_when = "offline"', 'severity = "alarm"']
    lines += _rule("cdu-lost", [f"device = {cdu}", *lost, "latch = false"], ['{do = "alarm"}'])
    pdus_lost = ['devices = "pdu"', 'scope = "each"', *lost, "latch = false"]
    lines += _rule("pdu-lost", pdus_lost, ['{do = "alarm"}'])
    # Latching: the fan write can only land once the line answers again, and the
    # fans then stay at full until someone has looked at why the BMC was lost.
    lines += _rule(
        "bmc-lost",
        ['devices = "bmc"', 'scope = "each"', *lost],
        ['{do = "alarm"}', '{do = "fans_max", servers = "matched"}'],
    )
    return lines
