"""Interlocks: event-driven rules that drive outputs to safe values.

Each rule watches one point. Evaluated on every reading of it (not only on the
tick), so fault-to-action latency is one poll period plus wire time. A rule
that trips claims its outputs at the highest priority (invariant 1) and stays
*latched* after its condition clears, until an authorised local reset
(invariant 3). A point with no good reading for the rule's stale_after trips it
unless the rule says hold (invariant 2). Readings from BMCs must agree on two
consecutive reads before a rule acts on them (invariant 8). Tripped and latched
rules are saved atomically and restored before any output is written; the
saving happens in the state writer's task, after the outputs are claimed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from drivers.base import DeviceKind, PointValue, Quality
from megapodd.config import InterlockConfig
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.events import EventBus, Severity
from megapodd.safety.persist import AtomicFiles, State, StateWriter, load_state
from megapodd.store import PointStore

log = structlog.get_logger("megapodd.safety")

# Without a configured stale_after_s, at least this long without a good reading.
DEFAULT_STALE_AFTER_S = 5.0

# Terminal Mode carries no checksum: two reads must agree (invariant 8).
BMC_MIN_CONFIRM_READS = 2


class RuleState(enum.StrEnum):
    NORMAL = "normal"
    TRIPPED = "tripped"  # the condition holds (or its input is stale)
    LATCHED = "latched"  # the condition cleared; outputs held until a local reset


class ResetRefused(Exception):
    """A reset that may not happen now; the message says why."""


@dataclass(slots=True)
class _Rule:
    config: InterlockConfig
    confirm_reads: int
    stale_after_s: float
    state: RuleState = RuleState.NORMAL
    since_ts: float = 0.0
    last_trip_ts: float | None = None
    reason: str = ""
    agreeing: int = 0  # consecutive good readings showing the condition

    def as_json(self) -> dict[str, object]:
        c = self.config
        return {
            "id": c.id,
            "state": self.state.value,
            "since": self.since_ts,
            "last_trip": self.last_trip_ts,
            "reason": self.reason,
            "device": c.device,
            "point": c.point,
            "trip_when": c.trip_when,
            "limit": c.limit,
            "clear_margin": c.clear_margin,
            "on_stale": c.on_stale,
            "stale_after_s": self.stale_after_s,
            "confirm_reads": self.confirm_reads,
            "actions": [{"output": a.output, "value": a.value} for a in c.actions],
        }


class InterlockEngine:
    def __init__(
        self,
        rules: Sequence[InterlockConfig],
        device_kinds: Mapping[str, DeviceKind],
        slowest_poll_s: Mapping[str, float],
        store: PointStore,
        arbiter: OutputArbiter,
        events: EventBus,
        state_path: Path,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
        files: AtomicFiles | None = None,
    ) -> None:
        self._store = store
        self._arbiter = arbiter
        self._events = events
        self._state_path = state_path
        self.state_writer = StateWriter(state_path, self._state, events, files)
        self._clock = clock
        self._wall_clock = wall_clock
        self._rules: dict[str, _Rule] = {}
        self._by_point: dict[tuple[str, str], list[_Rule]] = {}
        for config in rules:
            confirm = config.confirm_reads
            if device_kinds.get(config.device) is DeviceKind.BMC:
                confirm = max(confirm, BMC_MIN_CONFIRM_READS)
            # By default, three of the device's slowest polls: a point read in
            # the slow group must not look stale between two normal reads.
            stale_after = config.stale_after_s or max(
                DEFAULT_STALE_AFTER_S, 3 * slowest_poll_s.get(config.device, 0.0)
            )
            rule = _Rule(config, confirm, stale_after)
            self._rules[config.id] = rule
            self._by_point.setdefault((config.device, config.point), []).append(rule)
        self._started_s: float | None = None
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Told whenever any rule changes state (the MQTT `interlocks` topic)."""
        self._listeners.append(listener)

    # -- start-up ------------------------------------------------------------

    def restore(self) -> None:
        """Take back tripped and latched rules from disk and claim their
        outputs, before the arbiter writes anything."""
        try:
            saved = load_state(self._state_path)
        except (OSError, ValueError) as exc:
            # Keep the bad file for whoever investigates; it is replaced below.
            with contextlib.suppress(OSError):
                self._state_path.rename(self._state_path.with_name(self._state_path.name + ".bad"))
            # Safety state is not guessed: every rule latches until reset.
            message = f"interlock state unreadable ({exc}); every interlock tripped"
            log.exception("interlock_state_unreadable", path=str(self._state_path))
            self._events.emit("interlock_state_unreadable", Severity.CRITICAL, "megapodd", message)
            # Tripped, not latched: only a clear reading may latch it, then a reset.
            saved = {
                rule_id: {"state": "tripped", "reason": "state file unreadable"}
                for rule_id in self._rules
            }
        for rule_id, entry in saved.items():
            rule = self._rules.get(rule_id)
            if rule is None:
                self._events.emit(
                    "interlock_unknown",
                    Severity.WARNING,
                    "megapodd",
                    f"saved interlock {rule_id!r} is not configured any more; dropped",
                    {"rule": rule_id},
                )
                continue
            state = entry.get("state")
            if state == RuleState.NORMAL:
                continue
            # Anything but a clean latched entry is taken as tripped (fail safe).
            rule.state = RuleState.LATCHED if state == RuleState.LATCHED else RuleState.TRIPPED
            rule.since_ts = _number(entry.get("since"), None) or self._wall_clock()
            rule.last_trip_ts = _number(entry.get("last_trip"), None)
            rule.reason = str(entry.get("reason", "restored"))[:500]
            self._claim_outputs(rule, "restored at start")
        self._save()

    # -- evaluation ----------------------------------------------------------

    def on_readings(self, device_id: str, names: frozenset[str]) -> None:
        """Every reading of a device (a subscriber of the store, wired at the root)."""
        for name in names:
            for rule in self._by_point.get((device_id, name), ()):
                point = self._store.get(device_id, name)
                if point is None or point.quality is not Quality.GOOD:
                    rule.agreeing = 0  # agreeing reads must be consecutive good ones
                elif not _fits(rule.config, point.value):
                    self._wrong_type(rule, point.value)
                else:
                    self._evaluate(rule, point.value)

    def check_inputs(self) -> None:
        """From the control tick: trip rules whose input has no good reading."""
        now = self._clock()
        if self._started_s is None:
            self._started_s = now
        for rule in self._rules.values():
            c = rule.config
            point = self._store.get(c.device, c.point)
            last_good = point.mono_s if point is not None else float("-inf")
            # Nothing was read yet: count from start, not from the beginning of time.
            silent_s = now - max(last_good, self._started_s)
            good_now = point is not None and point.quality is Quality.GOOD
            if good_now or silent_s < rule.stale_after_s or c.on_stale == "hold":
                continue
            if rule.state is not RuleState.TRIPPED:
                self._trip(rule, f"no good reading of {c.device}.{c.point} for {silent_s:.1f} s")

    def _wrong_type(self, rule: _Rule, value: PointValue) -> None:
        """A reading the rule cannot judge is no reading: fail safe, loudly."""
        c = rule.config
        rule.agreeing = 0
        if c.on_stale == "trip" and rule.state is not RuleState.TRIPPED:
            kind = "a boolean" if c.trip_when == "true" else "a number"
            self._trip(rule, f"{c.device}.{c.point} = {value!r} is not {kind}")

    def _evaluate(self, rule: _Rule, value: PointValue) -> None:
        c = rule.config
        if rule.state is RuleState.NORMAL:
            self._count(rule, _tripping(c, value))
            if rule.agreeing >= rule.confirm_reads:
                self._trip(rule, f"{c.device}.{c.point} = {value} ({_condition(c)})")
        elif rule.state is RuleState.TRIPPED:
            # Clearing needs as many agreeing reads as tripping does.
            self._count(rule, _cleared(c, value))
            if rule.agreeing >= rule.confirm_reads:
                rule.agreeing = 0
                self._set(rule, RuleState.LATCHED, f"cleared: {c.device}.{c.point} = {value}")
                self._events.emit(
                    "interlock_cleared",
                    Severity.WARNING,
                    c.device,
                    f"interlock {c.id} cleared ({c.point} = {value}); latched until reset",
                    {"rule": c.id, "value": value},
                )
        else:  # latched: the condition may come back
            self._count(rule, _tripping(c, value))
            if rule.agreeing >= rule.confirm_reads:
                self._trip(rule, f"{c.device}.{c.point} = {value} again ({_condition(c)})")

    @staticmethod
    def _count(rule: _Rule, agrees: bool) -> None:
        rule.agreeing = rule.agreeing + 1 if agrees else 0

    def _trip(self, rule: _Rule, reason: str) -> None:
        c = rule.config
        first = rule.state is RuleState.NORMAL
        rule.agreeing = 0
        rule.last_trip_ts = self._wall_clock()
        self._set(rule, RuleState.TRIPPED, reason)
        self._events.emit(
            "interlock_tripped",
            Severity.CRITICAL,
            c.device,
            f"interlock {c.id} tripped: {reason}",
            {"rule": c.id, "reason": reason, "actions": [a.output for a in c.actions]},
        )
        if first:
            self._claim_outputs(rule, f"interlock {c.id}")

    # -- reset ---------------------------------------------------------------

    def reset(self, rule_id: str, by: str) -> None:
        """An authorised local reset: only a latched rule (its condition clear)."""
        rule = self._rules.get(rule_id)
        if rule is None:
            raise ResetRefused(f"no interlock {rule_id!r}; interlocks: {', '.join(self._rules)}")
        if rule.state is RuleState.NORMAL:
            raise ResetRefused(f"interlock {rule_id} is not tripped")
        if rule.state is RuleState.TRIPPED:
            raise ResetRefused(f"interlock {rule_id} is still tripped: {rule.reason}")
        c = rule.config
        point = self._store.get(c.device, c.point)
        fresh = point is not None and self._clock() - point.mono_s < rule.stale_after_s
        if point is None or point.quality is not Quality.GOOD or not fresh:
            raise ResetRefused(
                f"interlock {rule_id}: no current good reading of {c.device}.{c.point} "
                "shows the cause is gone"
            )
        if not _fits(c, point.value) or not _cleared(c, point.value):
            raise ResetRefused(f"interlock {rule_id}: {c.device}.{c.point} = {point.value!r} now")
        self._set(rule, RuleState.NORMAL, f"reset by {by}")
        rule.agreeing = 0
        for action in rule.config.actions:
            self._release_output(action.output, rule)
        self._events.emit(
            "interlock_reset",
            Severity.INFO,
            rule.config.device,
            f"interlock {rule_id} reset by {by}",
            {"rule": rule_id, "by": by},
        )

    # -- reading ---------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        return {rule_id: rule.as_json() for rule_id, rule in self._rules.items()}

    # -- internals -------------------------------------------------------------

    def _set(self, rule: _Rule, state: RuleState, reason: str) -> None:
        if rule.state is not state:
            rule.since_ts = self._wall_clock()
        rule.state, rule.reason = state, reason
        self._save()
        for listener in self._listeners:
            listener()

    def _claim_outputs(self, rule: _Rule, why: str) -> None:
        for action in rule.config.actions:
            holders = [
                r
                for r in self._rules.values()
                if r.state is not RuleState.NORMAL
                and any(a.output == action.output for a in r.config.actions)
            ]
            # Two tripped rules on one output: the safer value wins.
            values = [
                a.value for r in holders for a in r.config.actions if a.output == action.output
            ]
            spec = self._arbiter.output(action.output).spec
            value = functools.reduce(spec.safer, values)
            claim = Claim(Owner.INTERLOCK, value, ", ".join(r.config.id for r in holders))
            self._arbiter.claim_in_background(action.output, claim, why)

    def _release_output(self, output: str, reset_rule: _Rule) -> None:
        holders = [
            r
            for r in self._rules.values()
            if r is not reset_rule
            and r.state is not RuleState.NORMAL
            and any(a.output == output for a in r.config.actions)
        ]
        if holders:
            self._claim_outputs(holders[0], f"interlock {reset_rule.config.id} reset")
        else:
            self._arbiter.release(
                output, Owner.INTERLOCK, f"interlock {reset_rule.config.id} reset"
            )

    def _state(self) -> State:
        return {
            rule_id: {
                "state": rule.state.value,
                "since": rule.since_ts,
                "last_trip": rule.last_trip_ts,
                "reason": rule.reason,
            }
            for rule_id, rule in self._rules.items()
            if rule.state is not RuleState.NORMAL
        }

    def _save(self) -> None:
        """Ask the state writer's task to save (never waits on the disk)."""
        self.state_writer.request()


def _number(value: object, default: float | None) -> float | None:
    """A saved number, or the default for anything else (also one too large)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    try:
        return float(value)
    except OverflowError:
        return default


def _fits(c: InterlockConfig, value: PointValue) -> bool:
    """Whether the rule can judge this value at all."""
    if c.trip_when == "true":
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _condition(c: InterlockConfig) -> str:
    return "is true" if c.trip_when == "true" else f"{c.trip_when} {c.limit}"


def _tripping(c: InterlockConfig, value: PointValue) -> bool:
    if c.trip_when == "true":
        return value is True
    if isinstance(value, bool) or not isinstance(value, int | float) or c.limit is None:
        return False
    return value > c.limit if c.trip_when == "above" else value < c.limit


def _cleared(c: InterlockConfig, value: PointValue) -> bool:
    if c.trip_when == "true":
        return value is False
    if isinstance(value, bool) or not isinstance(value, int | float) or c.limit is None:
        return False
    if c.trip_when == "above":
        return value <= c.limit - c.clear_margin
    return value >= c.limit + c.clear_margin
