"""The power budget as it runs: readings from the store, the budget computation
(megapodd/power/budget.py), caps claimed through the arbiter at loop priority.

A duty of the control tick. Every tick it checks the PDUs' phase readings for
freshness (cheap); every `PERIOD_S`, or at once when a phase's readings have
just gone stale, it runs one budget step and claims or releases each changed
server's `power_limit_w`. Caps are loop claims: an interlock's `power_cap`, a
technician's override and a fleet claim on the same output win (invariant 1),
and while one does, the budget counts that server at the holder's value and
sheds elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from drivers.base import Quality
from drivers.errors import ValueRejected
from megapodd.config import Config
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.events import EventBus, Severity
from megapodd.power.budget import (
    Decision,
    Measurement,
    PhaseKey,
    PhaseReading,
    PowerBudget,
    ServerReading,
    ServerSpec,
)
from megapodd.selectors import number, phase_of_outlet
from megapodd.store import PointStore, StoredPoint

PERIOD_S = 1.0  # the PDUs' phase readings come every second
# A phase over its limit or the pod over its budget in a reading is acted on
# at the next tick, not at the next period, at most this often.
URGENT_S = 0.25
# A phase reading older than this many of its PDU's fast polls is stale: the
# fallback caps then come within 2 s of the PDU going silent (1.5 polls of 1 s,
# seen within a tick, written within a few BMC exchanges).
STALE_POLLS = 1.5
# At start the budget waits for every phase's first reading, this long at most
# (connecting to a PDU takes a few polls); a phase never read is then stale.
START_GRACE_S = 15.0
# How often the retained `power` topic is refreshed while nothing changes.
PUBLISH_EVERY_S = 10.0
OUTPUT = "power_limit_w"
BY = "power budget"


class BudgetRefused(ValueRejected):
    """A run-time budget outside the configured bounds (the message has them)."""


@dataclass(frozen=True, slots=True)
class _Phase:
    key: PhaseKey
    breaker_a: float
    limit_a: float
    stale_after_s: float
    # The phase's point names, worked out once: the phases are read on every tick.
    current: str
    power: str
    voltage: str


class PowerController:
    def __init__(
        self,
        config: Config,
        store: PointStore,
        arbiter: OutputArbiter,
        events: EventBus,
        clock: Callable[[], float],
    ) -> None:
        power = config.power
        if power is None:
            raise ValueError("the power controller needs a [power] section")
        self._store = store
        self._arbiter = arbiter
        self._events = events
        self._clock = clock
        self.phase_limit_pct = power.phase_limit_pct
        self.release_s = power.release_s
        self.max_budget_w = power.budget_ceiling_w
        self._phases = [
            _Phase(
                (pdu.id, p),
                pdu.breaker_a,
                pdu.breaker_a * power.phase_limit_pct / 100.0,
                STALE_POLLS * pdu.fast_poll_s,
                f"phase{p}_current_a",
                f"phase{p}_power_w",
                f"phase{p}_voltage_v",
            )
            for pdu in config.pdu
            for p in (1, 2, 3)
        ]
        self._servers = [
            ServerSpec(b.id, b.pdu, phase_of_outlet(b.outlet), b.priority, b.min_cap_w)
            for b in config.bmc
            if b.pdu is not None and b.outlet is not None
        ]
        self._outlets = {
            b.id: (b.pdu, b.outlet)
            for b in config.bmc
            if b.pdu is not None and b.outlet is not None
        }
        self.budget = PowerBudget(
            self._servers,
            {phase.key: phase.limit_a for phase in self._phases},
            power.budget_w,
            power.release_s,
        )
        self.last: Decision | None = None
        self._last_step_s = -math.inf
        self._stale: frozenset[PhaseKey] = frozenset()
        self._published_s = -math.inf
        self._started_s: float | None = None
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Told when caps change, and every PUBLISH_EVERY_S (the `power` topic)."""
        self._listeners.append(listener)

    # -- the tick ------------------------------------------------------------

    def tick(self) -> None:
        now = self._clock()
        if self._started_s is None:
            self._started_s = now
        phases = self._read_phases(now)
        stale = frozenset(key for key, reading in phases.items() if not reading.good)
        if stale and now - self._started_s < START_GRACE_S and self._never_read(stale):
            return  # starting: no cap before the PDUs have been read once
        newly_stale = stale - self._stale
        since = now - self._last_step_s
        urgent = since >= URGENT_S and (newly_stale or self._over(phases))
        if since < PERIOD_S and not urgent:
            return
        self._last_step_s = now
        decision = self.budget.step(Measurement(now, phases, self._read_servers()))
        self._apply(decision)
        self._announce(decision, stale)
        stale_changed = stale != self._stale
        self._stale = stale
        self.last = decision
        if decision.changed or stale_changed or now - self._published_s >= PUBLISH_EVERY_S:
            self._publish(now)

    def _over(self, phases: dict[PhaseKey, PhaseReading]) -> bool:
        """A fresh reading over a phase limit or, summed, over the budget: the
        step comes now. (Cheap; the step itself decides what to do.)"""
        limits = self.budget.phase_limits_a
        if any(
            r.current_a is not None and r.current_a > limits[key] for key, r in phases.items()
        ):
            return True
        budget = self.budget.budget_w
        if budget is None:
            return False
        return sum(r.power_w or 0.0 for r in phases.values()) > budget

    def _never_read(self, phases: frozenset[PhaseKey]) -> bool:
        return any(self._store.get(pdu, f"phase{p}_current_a") is None for pdu, p in phases)

    def _publish(self, now: float) -> None:
        self._published_s = now
        for listener in self._listeners:
            listener()

    def _fresh(self, point: StoredPoint | None, now: float, stale_after_s: float) -> float | None:
        if point is None or point.quality is not Quality.GOOD:
            return None
        if now - point.mono_s > stale_after_s:
            return None
        return number(point.value)

    def _read_phases(self, now: float) -> dict[PhaseKey, PhaseReading]:
        result: dict[PhaseKey, PhaseReading] = {}
        for phase in self._phases:
            points = self._store.device(phase.key[0]).points
            after = phase.stale_after_s
            result[phase.key] = PhaseReading(
                self._fresh(points.get(phase.current), now, after),
                self._fresh(points.get(phase.power), now, after),
                self._fresh(points.get(phase.voltage), now, math.inf),
            )
        return result

    def _read_servers(self) -> dict[str, ServerReading]:
        """Each server's newest good power reading (its outlet's or its BMC's),
        and the claim of a higher owner on its power limit."""
        result: dict[str, ServerReading] = {}
        for server in self._servers:
            pdu, outlet = self._outlets[server.id]
            candidates = [
                self._store.get(pdu, f"outlet_{outlet:02d}_power_w"),
                self._store.get(server.id, "power_w"),
            ]
            good = [
                (p.mono_s, value)
                for p in candidates
                if p is not None
                and p.quality is Quality.GOOD
                and (value := number(p.value)) is not None
            ]
            mono_s, watts = max(good) if good else (-math.inf, None)
            held = self._holder(server.id)
            held_w = float(held.value) if held is not None else None
            result[server.id] = ServerReading(
                watts, mono_s, held_w, _describe(held) if held is not None else ""
            )
        return result

    def _holder(self, server: str) -> Claim | None:
        output = self._arbiter.outputs.get(f"{server}.{OUTPUT}")
        if output is None:
            return None
        return output.held_above(Owner.LOOP)

    def _apply(self, decision: Decision) -> None:
        for sid in sorted(decision.changed):
            name = f"{sid}.{OUTPUT}"
            cap = decision.caps.get(sid)
            if cap is None:
                self._arbiter.release(name, Owner.LOOP, f"{BY}: released")
            else:
                claim = Claim(Owner.LOOP, float(cap.watts), BY)
                self._arbiter.claim_in_background(name, claim, cap.reason, force=False)

    def _announce(self, decision: Decision, stale: frozenset[PhaseKey]) -> None:
        before = self.last.caps if self.last is not None else {}
        data_base: dict[str, object] = {
            "budget_w": decision.budget_w,
            "pod_power_w": round(decision.pod_power_w),
            "servers": len(decision.caps),
        }
        if decision.caps and not before:
            reasons = sorted({c.reason for c in decision.caps.values()})
            self._events.emit(
                "power_capping",
                Severity.WARNING,
                "megapodd",
                f"power budget: capping {len(decision.caps)} server(s) ({', '.join(reasons)}); "
                f"pod at {decision.pod_power_w / 1000:.1f} kW"
                + (f" of {decision.budget_w / 1000:.1f} kW" if decision.budget_w else ""),
                {**data_base, "state": "started", "reasons": reasons},
            )
        elif before and not decision.caps:
            self._events.emit(
                "power_capping",
                Severity.INFO,
                "megapodd",
                "power budget: every cap released",
                {**data_base, "state": "ended", "reasons": []},
            )
        if decision.unmet_w > 0 and (self.last is None or self.last.unmet_w == 0):
            self._events.emit(
                "power_capping",
                Severity.ALARM,
                "megapodd",
                f"power budget: {decision.unmet_w:.0f} W over with every server it may cap "
                "at its min_cap_w",
                {**data_base, "state": "unmet", "reasons": [f"{decision.unmet_w:.0f} W unmet"]},
            )
        for key in sorted(stale - self._stale):
            self._events.emit(
                "power_capping",
                Severity.ALARM,
                key[0],
                f"power budget: no fresh readings of {key[0]} phase {key[1]}: its servers are "
                "capped to their share of the phase limit",
                {**data_base, "state": "telemetry_lost", "reasons": [f"{key[0]}/{key[1]}"]},
            )
        for key in sorted(self._stale - stale):
            self._events.emit(
                "power_capping",
                Severity.INFO,
                key[0],
                f"power budget: {key[0]} phase {key[1]} reads again; its caps are released "
                f"after {self.release_s:g} s of headroom",
                {**data_base, "state": "telemetry_back", "reasons": [f"{key[0]}/{key[1]}"]},
            )

    # -- the budget at run time ----------------------------------------------

    def bounds_w(self) -> tuple[float, float | None]:
        return self.budget.min_budget_w, self.max_budget_w

    def set_budget(self, watts: float, by: str) -> float:
        """A run-time budget within [sum of min_cap_w, max_budget_w]."""
        low, high = self.bounds_w()
        if high is None:
            raise BudgetRefused(
                "this pod has no budget_w in [power]: a run-time budget needs one (and "
                "max_budget_w, its upper bound)"
            )
        if (
            isinstance(watts, bool)
            or not isinstance(watts, int | float)
            or not (math.isfinite(watts) and low <= watts <= high)
        ):
            shown = f"{watts:g}" if isinstance(watts, int | float) else repr(watts)
            raise BudgetRefused(
                f"budget {shown} W is outside {low:.0f}–{high:.0f} W (the servers' min_cap_w "
                "sum to the lower bound; [power] max_budget_w is the upper)"
            )
        previous = self.budget.budget_w
        self.budget.set_budget(float(watts))
        self._last_step_s = -math.inf  # act on it at the next tick
        self._events.emit(
            "power_budget_changed",
            Severity.INFO,
            "megapodd",
            f"power budget {previous or 0:.0f} W -> {watts:.0f} W (by {by})",
            {"budget_w": float(watts), "previous_w": previous, "by": by},
        )
        self._publish(self._clock())
        return float(watts)

    # -- what the fleet and megapodctl see -------------------------------------

    def snapshot(self) -> dict[str, object]:
        decision = self.last
        low, high = self.bounds_w()
        phases: list[dict[str, object]] = []
        status = {(p.pdu, p.phase): p for p in decision.phases} if decision else {}
        for phase in self._phases:
            seen = status.get(phase.key)
            current = seen.current_a if seen is not None else None
            phases.append(
                {
                    "pdu": phase.key[0],
                    "phase": phase.key[1],
                    "current_a": _round(current, 1),
                    "limit_a": round(phase.limit_a, 1),
                    "breaker_a": phase.breaker_a,
                    "load_pct": _round(seen.load_pct if seen is not None else None, 1),
                    "power_w": _round(seen.power_w if seen is not None else None, 0),
                    "stale": seen.stale if seen is not None else True,
                }
            )
        caps: list[dict[str, object]] = []
        now = self._clock()
        priorities = {s.id: s.priority for s in self._servers}
        for server in self._servers:
            held = self._holder(server.id)
            own = decision.caps.get(server.id) if decision is not None else None
            if held is not None:
                caps.append(
                    {
                        "server": server.id,
                        "cap_w": float(held.value),
                        "owner": held.owner.name.lower(),
                        "reason": _describe(held),
                        "priority": priorities[server.id],
                        "since_s": None,
                        "budget_cap_w": float(own.watts) if own is not None else None,
                    }
                )
            elif own is not None:
                caps.append(
                    {
                        "server": server.id,
                        "cap_w": float(own.watts),
                        "owner": "loop",
                        "reason": own.reason,
                        "priority": priorities[server.id],
                        "since_s": round(max(0.0, now - own.since_s), 1),
                        "budget_cap_w": float(own.watts),
                    }
                )
        budget = self.budget.budget_w
        pod = decision.pod_power_w if decision is not None else None
        headroom = budget - pod if budget is not None and pod is not None else None
        return {
            "budget_w": budget,
            "min_budget_w": low,
            "max_budget_w": high,
            "pod_power_w": _round(pod, 0),
            "headroom_w": _round(headroom, 0),
            "phase_limit_pct": self.phase_limit_pct,
            "release_s": self.release_s,
            "phases": phases,
            "caps": caps,
        }


def _describe(claim: Claim) -> str:
    if claim.owner is Owner.INTERLOCK:
        return f"interlock {claim.by}"
    return f"{claim.owner.name.lower()} by {claim.by}"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
