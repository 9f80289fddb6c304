"""The safety engine: rule instances that drive outputs to safe values.

Each instance (megapodd/safety/rules.py) is evaluated on every reading of the
points it watches, not only on the tick, so fault-to-action latency is one
poll period plus wire time. One that trips claims its outputs at the highest
priority (invariant 1), in stages: later stages run `after_s` later, only if
it is still tripped. A latching instance stays *latched* after its condition
clears, until an authorised local reset (invariant 3); a non-latching one
releases by itself once clear. A point with no good reading for the rule's
stale_after trips it unless the rule says hold (invariant 2). Readings from
BMCs must agree on two consecutive reads before an instance acts on them or
counts them as clear (invariant 8). Tripped and latched instances are saved
atomically and restored, with exactly the claims they held, before any output
is written; saving runs in the state writer's task, after the claims.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from drivers.base import PointValue, Quality
from drivers.errors import ValueRejected
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.events import EventBus, Severity
from megapodd.outputs.spec import OutputValue
from megapodd.safety.persist import AtomicFiles, State, StateWriter, load_state
from megapodd.safety.rules import OTHER_PUMP, RuleInstance, Step
from megapodd.selectors import number, point_matches
from megapodd.store import DeviceState, PointStore, StoredPoint

log = structlog.get_logger("megapodd.safety")


class RuleState(enum.StrEnum):
    NORMAL = "normal"
    TRIPPED = "tripped"  # the condition holds (or its input is stale)
    LATCHED = "latched"  # the condition cleared; outputs held until a local reset


class ResetRefused(Exception):
    """A reset that may not happen now; the message says why."""


@dataclass(slots=True)
class _Track:
    """One watched point of one instance: its runs of agreeing readings."""

    tripping: int = 0  # consecutive good readings showing the condition
    clear: int = 0  # consecutive good readings showing it gone
    value: float | None = None  # the last good value (numbers), for the rate
    mono_s: float | None = None
    shown: float | bool | None = None  # the last good reading, for people


@dataclass(slots=True)
class _Instance:
    spec: RuleInstance
    state: RuleState = RuleState.NORMAL
    since_ts: float = 0.0
    last_trip_ts: float | None = None
    reason: str = ""
    tracks: dict[tuple[str, str], _Track] = field(default_factory=dict)
    read_devices: set[str] = field(default_factory=set)  # the devices of `tracks`
    pending_since_s: float | None = None  # the condition holds; for_s not yet passed
    tripped_mono_s: float | None = None  # when the stages' clock started
    claims: dict[str, OutputValue] = field(default_factory=dict)
    steps_done: set[int] = field(default_factory=set)
    offline: int = 0  # devices offline now ("offline" rules)
    stale: int = 0  # watched points with no good reading for stale_after_s, now

    @property
    def holding(self) -> bool:
        return self.state is not RuleState.NORMAL


class InterlockEngine:
    def __init__(
        self,
        instances: Sequence[RuleInstance],
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
        self._instances: dict[str, _Instance] = {i.name: _Instance(i) for i in instances}
        self._by_device: dict[str, list[_Instance]] = {}
        for instance in self._instances.values():
            for device in instance.spec.devices:
                self._by_device.setdefault(device, []).append(instance)
        self._watchers: dict[tuple[str, str], list[_Instance]] = {}  # filled as points appear
        self._started_s: float | None = None
        self._reached: set[str] = set()  # devices that have been online since start
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Told whenever any instance changes state (the MQTT `interlocks` topic)."""
        self._listeners.append(listener)

    # -- start-up ------------------------------------------------------------

    def restore(self) -> None:
        """Take back tripped and latched instances from disk and claim what they
        held, before the arbiter writes anything."""
        try:
            saved = load_state(self._state_path)
        except (OSError, ValueError) as exc:
            # Keep the bad file for whoever investigates; it is replaced below.
            with contextlib.suppress(OSError):
                self._state_path.rename(self._state_path.with_name(self._state_path.name + ".bad"))
            message = (
                f"interlock state unreadable ({exc}); every interlock latched: each acts at "
                "once if its condition is there, and needs a reset after checking"
            )
            log.exception("interlock_state_unreadable", path=str(self._state_path))
            self._events.emit("interlock_state_unreadable", Severity.CRITICAL, "megapodd", message)
            # What was held is not known, and tripping every rule would cut power to
            # the whole pod over a bad file. Latched: a condition still there trips
            # again at its first reading, with its stages in order; one that is gone
            # needs a technician's reset; what the devices show (a rack still
            # isolated, outlets off) is never undone by the daemon.
            saved = {
                name: {"state": "latched", "reason": "state file unreadable", "steps": []}
                for name in self._instances
            }
        for name, entry in saved.items():
            instance = self._instances.get(name)
            if instance is None:
                self._events.emit(
                    "interlock_unknown",
                    Severity.WARNING,
                    "megapodd",
                    f"saved interlock {name!r} is not configured any more; dropped",
                    {"rule": name},
                )
                continue
            if entry.get("state") == RuleState.NORMAL:
                continue
            # Anything but a clean latched entry is taken as tripped (fail safe).
            latched = entry.get("state") == RuleState.LATCHED
            instance.state = RuleState.LATCHED if latched else RuleState.TRIPPED
            instance.since_ts = _number(entry.get("since")) or self._wall_clock()
            instance.last_trip_ts = _number(entry.get("last_trip"))
            instance.reason = str(entry.get("reason", "restored"))[:500]
            instance.tripped_mono_s = self._clock()
            instance.steps_done = self._restored_steps(instance, entry.get("steps"))
            for index in sorted(instance.steps_done):
                step = instance.spec.steps[index]
                value = self._restored_value(instance, entry.get("claims"), step)
                if value is not None:
                    instance.claims[step.output] = value
            for output in list(instance.claims):
                self._claim(output, "restored at start")
        self._save()

    def _restored_value(
        self, instance: _Instance, saved: object, step: Step
    ) -> OutputValue | None:
        """The value a restored step held: as saved if the output takes it,
        else as configured (a bad entry must not stop the daemon, invariant 9)."""
        value = _saved_value(saved, step)
        if value is None or value == step.value:
            return value
        try:
            return self._arbiter.output(step.output).spec.check(value, step.output)
        except ValueRejected as exc:
            fallback = None if step.value == OTHER_PUMP else step.value
            self._events.emit(
                "interlock_state_unreadable",
                Severity.CRITICAL,
                "megapodd",
                f"interlock {instance.spec.name}: saved {step.output} = {value!r} is not "
                f"valid ({exc}); holding {fallback if fallback is not None else 'nothing'}",
                {"rule": instance.spec.name, "output": step.output},
            )
            return fallback

    @staticmethod
    def _restored_steps(instance: _Instance, saved: object) -> set[int]:
        steps = instance.spec.steps
        if isinstance(saved, list):
            return {i for i in saved if isinstance(i, int) and 0 <= i < len(steps)}
        # An older file, or an unreadable one: every stage that runs at once, or
        # all of them for "all".
        return {i for i, s in enumerate(steps) if saved == "all" or s.after_s == 0}

    # -- evaluation ----------------------------------------------------------

    def on_readings(self, device_id: str, names: frozenset[str]) -> None:
        """Every reading of a device (a subscriber of the store, wired at the root)."""
        self._reached.add(device_id)  # it answered: from now on, offline means lost
        if device_id not in self._by_device:
            return
        touched: list[_Instance] = []
        for name in names:
            watchers = self._watchers.get((device_id, name))
            if watchers is None:
                watchers = [
                    i for i in self._by_device[device_id] if i.spec.watches(device_id, name)
                ]
                self._watchers[(device_id, name)] = watchers
            if not watchers:
                continue
            point = self._store.get(device_id, name)
            for instance in watchers:
                self._read(instance, device_id, name, point)
                if instance not in touched:
                    touched.append(instance)
        for instance in touched:
            self._evaluate(instance)

    def _read(
        self, instance: _Instance, device: str, name: str, point: StoredPoint | None
    ) -> None:
        track = instance.tracks.get((device, name))
        if track is None:
            track = instance.tracks[(device, name)] = _Track()
            instance.read_devices.add(device)
        rule = instance.spec.rule
        if point is None or point.quality is not Quality.GOOD:
            track.tripping = track.clear = 0  # agreeing reads must be consecutive good ones
            return
        value = point.value
        if not _fits(rule.trip_when, value):
            track.tripping = track.clear = 0
            if rule.on_stale == "trip" and instance.state is not RuleState.TRIPPED:
                kind = "a boolean" if rule.trip_when == "true" else "a number"
                self._trip(instance, f"{device}.{name} = {value!r} is not {kind}")
            return
        tripping, cleared = self._judge(rule.trip_when, rule.limit, rule.bit, rule.clear_margin,
                                        track, value, point.mono_s)
        track.tripping = track.tripping + 1 if tripping else 0
        track.clear = track.clear + 1 if cleared else 0
        track.shown = value if isinstance(value, bool) else number(value)

    @staticmethod
    def _judge(
        test: str,
        limit: float | None,
        bit: int | None,
        margin: float,
        track: _Track,
        value: PointValue,
        mono_s: float,
    ) -> tuple[bool, bool]:
        """(shows the condition, shows it gone) for one good reading."""
        if test == "true":
            return value is True, value is False
        if test == "stale":
            return False, True  # a good reading is the opposite of stale
        numeric = number(value)
        if numeric is None:
            return False, False
        if test == "bit":
            if bit is None:  # the config model requires one
                return False, False
            set_ = bool(int(numeric) >> bit & 1)
            return set_, not set_
        if limit is None:  # the config model requires one for these tests
            return False, False
        if test == "rises_faster_than":
            rate = None
            if track.value is not None and track.mono_s is not None and mono_s > track.mono_s:
                rate = (numeric - track.value) / (mono_s - track.mono_s)
            track.value, track.mono_s = numeric, mono_s
            if rate is None:
                return False, False
            return rate > limit, rate <= limit - margin
        if test == "above":
            return numeric > limit, numeric <= limit - margin
        return numeric < limit, numeric >= limit + margin

    def _holds(self, instance: _Instance) -> tuple[bool, bool]:
        """(the condition holds, it is clear) over every watched point, each
        confirmed by its own run of agreeing reads."""
        confirm = instance.spec.confirm_reads
        tracks = list(instance.tracks.values())
        if not tracks:
            return False, False
        tripping = sum(1 for t in tracks if t.tripping >= confirm)
        clear = sum(1 for t in tracks if t.clear >= confirm)
        mode = instance.spec.mode
        if mode == "all":
            return tripping == len(tracks), clear >= 1
        if mode == "count":
            needed = instance.spec.rule.count or 1
            return tripping >= needed, len(tracks) - clear < needed
        return tripping >= 1, clear == len(tracks)

    def _guard(self, instance: _Instance) -> bool:
        """`while`: some boolean point of the watched devices reads true."""
        pattern = instance.spec.rule.while_
        if pattern is None:
            return True
        for device in instance.spec.devices:
            for name, point in self._store.device(device).points.items():
                good = point.quality is Quality.GOOD
                if good and point.value is True and point_matches(pattern, name):
                    return True
        return False

    def _evaluate(self, instance: _Instance) -> None:
        holds, clear = self._holds(instance)
        now = self._clock()
        if instance.state is RuleState.TRIPPED:
            # A rule that trips on stale input is not clear while some input is
            # still stale (a BMC that never answered): it would trip and release
            # in turn, and the fans would swing with it.
            if clear and not (instance.stale and instance.spec.rule.on_stale == "trip"):
                self._cleared(instance)
            return
        if holds and self._guard(instance):
            if instance.pending_since_s is None:
                instance.pending_since_s = now
            if now - instance.pending_since_s >= instance.spec.rule.for_s:
                again = " again" if instance.state is RuleState.LATCHED else ""
                self._trip(instance, f"{self._condition_text(instance)}{again}")
        else:
            instance.pending_since_s = None

    def check_inputs(self) -> None:
        """From the control tick: stale inputs, offline devices, for_s delays
        that have passed, and later stages that are due."""
        now = self._clock()
        if self._started_s is None:
            self._started_s = now
        for instance in self._instances.values():
            rule = instance.spec.rule
            if rule.trip_when == "offline":
                self._check_offline(instance)
            else:
                was_stale = instance.stale
                self._check_stale(instance, now)
                if was_stale and not instance.stale and instance.state is RuleState.TRIPPED:
                    self._evaluate(instance)  # the last stale input is back: clear now?
                waiting = instance.pending_since_s is not None
                if waiting and instance.state is not RuleState.TRIPPED:
                    self._evaluate(instance)  # for_s may have passed since the last reading
            if instance.state is RuleState.TRIPPED:
                self._run_due_steps(instance, now)

    def _check_offline(self, instance: _Instance) -> None:
        devices = instance.spec.devices
        now = self._clock()
        started = self._started_s if self._started_s is not None else now
        for device in devices:
            if self._store.device(device).state is not DeviceState.OFFLINE:
                self._reached.add(device)
        # Every device starts offline ("not yet polled"): one never reached counts
        # as lost only once it has had stale_after_s to connect (a BMC's SDR walk).
        grace_over = now - started >= instance.spec.stale_after_s
        offline = [
            d
            for d in devices
            if self._store.device(d).state is DeviceState.OFFLINE
            and (d in self._reached or grace_over)
        ]
        mode = instance.spec.mode
        needed = {"any": 1, "all": len(devices), "count": instance.spec.rule.count or 1}[mode]
        holds = len(offline) >= needed
        instance.offline = len(offline)
        if instance.state is RuleState.TRIPPED and not holds:
            self._cleared(instance)
        elif instance.state is not RuleState.TRIPPED and holds:
            if instance.pending_since_s is None:
                instance.pending_since_s = self._clock()
            if self._clock() - instance.pending_since_s >= instance.spec.rule.for_s:
                self._trip(instance, f"{', '.join(offline)} offline")
        elif not holds:
            instance.pending_since_s = None

    def _check_stale(self, instance: _Instance, now: float) -> None:
        spec = instance.spec
        rule = spec.rule
        started = self._started_s if self._started_s is not None else now
        stale: list[str] = []
        read = instance.read_devices
        # Runs on every tick for every watched point: no allocation unless something is stale.
        if len(read) < len(spec.devices) and now - started >= spec.stale_after_s:
            stale += [f"{d}.{spec.pattern} (never read)" for d in spec.devices if d not in read]
        device = self._store.device
        if any(device(d).not_good for d in read):  # else every watched point is good
            get = self._store.get
            for d, name in instance.tracks:
                point = get(d, name)
                if point is None or point.quality is Quality.GOOD:
                    continue
                if now - max(point.mono_s, started) >= spec.stale_after_s:
                    stale.append(f"{d}.{name}")
        instance.stale = len(stale)
        if rule.trip_when == "stale":
            if stale and instance.state is not RuleState.TRIPPED:
                self._trip(instance, f"no good reading of {stale[0]} for {spec.stale_after_s:g} s")
            elif not stale and instance.state is RuleState.TRIPPED:
                self._cleared(instance)
            return
        if stale and rule.on_stale == "trip" and instance.state is not RuleState.TRIPPED:
            self._trip(
                instance,
                f"no good reading of {stale[0]} for {spec.stale_after_s:g} s"
                + (f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""),
            )

    def _condition_text(self, instance: _Instance) -> str:
        """The condition and what it saw: the largest reading of an `above`
        rule, the smallest of a `below` one."""
        shown = [t.shown for t in instance.tracks.values() if t.shown is not None]
        numbers = [v for v in shown if not isinstance(v, bool)]
        seen = ""
        if numbers:
            pick = min if instance.spec.rule.trip_when == "below" else max
            seen = f" (reads {pick(numbers):g})"
        return f"{instance.spec.describe()}{seen}"

    # -- state changes -------------------------------------------------------

    def _trip(self, instance: _Instance, reason: str) -> None:
        spec = instance.spec
        again = instance.state is RuleState.LATCHED
        instance.pending_since_s = None
        for track in instance.tracks.values():
            track.tripping = track.clear = 0
        instance.last_trip_ts = self._wall_clock()
        if instance.state is not RuleState.TRIPPED or instance.tripped_mono_s is None:
            # A new incident, also from latched: its stages run on their own
            # schedule from now (the lag pump gets its seconds again, servers
            # their soft shutdown first), never all at once because the first
            # trip was long ago. What the first trip holds stays held.
            instance.tripped_mono_s = self._clock()
            if again:
                instance.steps_done.clear()
        self._set(instance, RuleState.TRIPPED, reason)
        self._events.emit(
            "interlock_tripped",
            Severity(spec.rule.severity),
            spec.matched or (spec.devices[0] if spec.devices else "megapodd"),
            f"interlock {spec.name} tripped: {reason}",
            {
                "rule": spec.name,
                "reason": reason,
                "actions": spec.stages(),
                "alarm": spec.alarm,
            },
        )
        self._run_due_steps(instance, self._clock())

    def _cleared(self, instance: _Instance) -> None:
        spec = instance.spec
        for track in instance.tracks.values():
            track.tripping = track.clear = 0
        if spec.rule.latch:
            self._set(instance, RuleState.LATCHED, "cleared; latched until reset")
            self._events.emit(
                "interlock_cleared",
                Severity.WARNING,
                spec.matched or "megapodd",
                f"interlock {spec.name} cleared; latched until reset",
                {"rule": spec.name},
            )
            return
        self._set(instance, RuleState.NORMAL, "cleared; released by itself")
        self._release_all(instance, f"interlock {spec.name} cleared")
        self._events.emit(
            "interlock_released",
            Severity.INFO,
            spec.matched or "megapodd",
            f"interlock {spec.name} cleared and released its outputs (it does not latch)",
            {"rule": spec.name},
        )

    def _run_due_steps(self, instance: _Instance, now: float) -> None:
        if instance.tripped_mono_s is None:
            return
        elapsed = now - instance.tripped_mono_s
        ran = False
        for index, step in enumerate(instance.spec.steps):
            if index in instance.steps_done or step.after_s > elapsed + 1e-9:
                continue
            instance.steps_done.add(index)
            ran = True
            if step.only_if is not None and not self._reads(step.only_if):
                self._action_event(instance, step, "skipped", "not needed any more")
                continue
            value = self._resolve(step)
            if value is None:
                self._action_event(instance, step, "refused", "no pump to switch to")
                continue
            held = instance.claims.get(step.output)
            if held is not None and held != value:
                # A stage run again never makes what this rule holds less safe
                # (a server already off is not "soft shut down" again).
                value = self._arbiter.output(step.output).spec.safer(value, held)
            instance.claims[step.output] = value
            self._claim(step.output, f"interlock {instance.spec.name}", instance, step)
        if ran:
            self._save()

    def _reads(self, condition: tuple[str, str, PointValue]) -> bool:
        device, point, value = condition
        stored = self._store.get(device, point)
        # Unknown counts as "yes": a server whose power cannot be read is switched off.
        return stored is None or stored.quality is not Quality.GOOD or stored.value == value

    def _resolve(self, step: Step) -> OutputValue | None:
        if step.value != OTHER_PUMP:
            return step.value
        cdu = step.output.partition(".")[0]
        running = [
            n for n in (1, 2)
            if (p := self._store.get(cdu, f"pump{n}_running")) is not None and p.value is True
        ]
        if len(running) != 1:
            return "pump1" if not running else None
        return f"pump{3 - running[0]}"

    # -- reset -----------------------------------------------------------------

    def reset(self, name: str, by: str) -> list[str]:
        """An authorised local reset of a latched instance, or of every latched
        instance of a rule; returns what was reset."""
        targets = [self._instances[name]] if name in self._instances else [
            i for i in self._instances.values() if i.spec.rule.id == name
        ]
        if not targets:
            raise ResetRefused(f"no interlock {name!r}; interlocks: {', '.join(self._rule_ids())}")
        latched = [i for i in targets if i.state is RuleState.LATCHED]
        if not latched:
            tripped = [i for i in targets if i.state is RuleState.TRIPPED]
            if tripped:
                raise ResetRefused(
                    f"interlock {tripped[0].spec.name} is still tripped: {tripped[0].reason}"
                )
            raise ResetRefused(f"interlock {name} is not tripped")
        done: list[str] = []
        problems: list[str] = []
        for instance in latched:
            problem = self._not_clear_now(instance)
            if problem is not None:
                problems.append(problem)
                continue
            self._set(instance, RuleState.NORMAL, f"reset by {by}")
            self._release_all(instance, f"interlock {instance.spec.name} reset")
            self._events.emit(
                "interlock_reset",
                Severity.INFO,
                instance.spec.matched or "megapodctl",
                f"interlock {instance.spec.name} reset by {by}",
                {"rule": instance.spec.name, "by": by},
            )
            done.append(instance.spec.name)
        if not done:
            raise ResetRefused(problems[0])
        return done

    def _rule_ids(self) -> list[str]:
        return sorted({i.spec.rule.id for i in self._instances.values()})

    def _not_clear_now(self, instance: _Instance) -> str | None:
        """Why a reset may not happen: a current good reading must show the cause gone."""
        spec = instance.spec
        rule = spec.rule
        if rule.trip_when == "offline":
            offline = [
                d for d in spec.devices if self._store.device(d).state is not DeviceState.ONLINE
            ]
            return f"interlock {spec.name}: {offline[0]} is not online" if offline else None
        now = self._clock()
        seen = 0
        for device in spec.devices:
            for name, point in self._store.device(device).points.items():
                if not spec.watches(device, name):
                    continue
                seen += 1
                fresh = now - point.mono_s < spec.stale_after_s
                if point.quality is not Quality.GOOD or not fresh:
                    return (
                        f"interlock {spec.name}: no current good reading of {device}.{name} "
                        "shows the cause is gone"
                    )
                if not _fits(rule.trip_when, point.value):
                    return f"interlock {spec.name}: {device}.{name} = {point.value!r} now"
                if rule.trip_when == "rises_faster_than":
                    continue  # a rate needs two reads; the clear run already showed it
                _, cleared = self._judge(rule.trip_when, rule.limit, rule.bit, rule.clear_margin,
                                         _Track(), point.value, point.mono_s)
                if not cleared:
                    return f"interlock {spec.name}: {device}.{name} = {point.value!r} now"
        if seen == 0:
            return f"interlock {spec.name}: no current good reading shows the cause is gone"
        return None

    # -- reading -----------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        return {name: self._as_json(i) for name, i in self._instances.items()}

    def states(self) -> dict[str, dict[str, object]]:
        """Each instance's rule, state, last trip and claims: the cheap part of
        snapshot(), for the metrics of a pod with hundreds of instances."""
        return {
            name: {
                "rule": i.spec.rule.id,
                "state": i.state.value,
                "last_trip": i.last_trip_ts,
                "holding": dict(i.claims),
            }
            for name, i in self._instances.items()
        }

    def _as_json(self, instance: _Instance) -> dict[str, object]:
        spec, rule = instance.spec, instance.spec.rule
        return {
            "id": spec.name,
            "rule": rule.id,
            "state": instance.state.value,
            "since": instance.since_ts,
            "last_trip": instance.last_trip_ts,
            "reason": instance.reason,
            "watches": spec.describe(),
            "devices": list(spec.devices),
            "point": spec.pattern,
            "trip_when": rule.trip_when,
            "limit": rule.limit,
            "clear_margin": rule.clear_margin,
            "for_s": rule.for_s,
            "on_stale": rule.on_stale,
            "stale_after_s": spec.stale_after_s,
            "confirm_reads": spec.confirm_reads,
            "severity": rule.severity,
            "latch": rule.latch,
            "alarm": spec.alarm,
            "actions": spec.stages(),
            "holding": dict(instance.claims),
        }

    def instances(self) -> list[RuleInstance]:
        return [i.spec for i in self._instances.values()]

    # -- internals -------------------------------------------------------------

    def _set(self, instance: _Instance, state: RuleState, reason: str) -> None:
        if instance.state is not state:
            instance.since_ts = self._wall_clock()
        instance.state, instance.reason = state, reason
        if state is RuleState.NORMAL:
            instance.tripped_mono_s = None
            instance.steps_done.clear()
            instance.pending_since_s = None
        self._save()
        for listener in self._listeners:
            listener()

    def _claim(
        self,
        output: str,
        why: str,
        instance: _Instance | None = None,
        step: Step | None = None,
    ) -> None:
        """Claim `output` at interlock priority with the safest value any
        holding instance wants (two tripped rules on one output: the safer wins)."""
        holders = [i for i in self._instances.values() if i.holding and output in i.claims]
        if not holders:
            return
        spec = self._arbiter.output(output).spec
        value = functools.reduce(spec.safer, [i.claims[output] for i in holders])
        claim = Claim(Owner.INTERLOCK, value, ", ".join(i.spec.name for i in holders))
        on_done = None
        if instance is not None and step is not None:
            on_done = functools.partial(self._written, instance, step)
        self._arbiter.claim_in_background(output, claim, why, on_done=on_done)

    def _written(self, instance: _Instance, step: Step, error: BaseException | None) -> None:
        if error is None:
            self._action_event(instance, step, "done", "")
        else:
            self._action_event(instance, step, "failed", str(error) or type(error).__name__)

    def _action_event(self, instance: _Instance, step: Step, result: str, detail: str) -> None:
        severity = Severity.INFO if result in ("done", "skipped") else Severity.ALARM
        message = f"interlock {instance.spec.name}: {step.action}: {step.output} {result}"
        self._events.emit(
            "interlock_action",
            severity,
            step.output.partition(".")[0],
            message + (f" ({detail})" if detail else ""),
            {
                "rule": instance.spec.name,
                "action": step.action,
                "output": step.output,
                "value": step.value,
                "result": result,
                "detail": detail,
            },
        )

    def _release_all(self, instance: _Instance, why: str) -> None:
        outputs = list(instance.claims)
        instance.claims.clear()
        for output in outputs:
            holders = [i for i in self._instances.values() if i.holding and output in i.claims]
            if holders:
                self._claim(output, why)
            else:
                self._arbiter.release(output, Owner.INTERLOCK, why)

    def _state(self) -> State:
        return {
            name: {
                "state": i.state.value,
                "since": i.since_ts,
                "last_trip": i.last_trip_ts,
                "reason": i.reason,
                "steps": sorted(i.steps_done),
                "claims": dict(i.claims),
            }
            for name, i in self._instances.items()
            if i.holding
        }

    def _save(self) -> None:
        """Ask the state writer's task to save (never waits on the disk)."""
        self.state_writer.request()


def _number(value: object) -> float | None:
    """A saved number, or None for anything else (also one too large)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _saved_value(saved: object, step: Step) -> OutputValue | None:
    """The value a restored step held: as saved, else as configured."""
    if isinstance(saved, dict):
        value = saved.get(step.output)
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            return value
    if step.value == OTHER_PUMP:
        return None  # decided when it ran; not known any more
    return step.value


def _fits(test: str, value: PointValue) -> bool:
    """Whether the rule can judge this value at all."""
    if test == "true":
        return isinstance(value, bool)
    if test == "stale":
        return True
    return isinstance(value, int | float) and not isinstance(value, bool)
