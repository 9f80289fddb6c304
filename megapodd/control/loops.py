"""The control loops as they run: inputs from the store, controllers from
megapodd/control/, outputs claimed through the arbiter at loop priority.

Run from the control tick. Each loop computes when its period is due; every
tick it also checks its input, so a loop whose input turns bad (out of range,
wrong type, NaN) drives its failsafe within a tick or two, and one with no
good reading for `stale_after_s` as soon as that time has passed (invariant
2). It leaves failsafe after three consecutive good readings and ramps back
(slew-limited; the move to failsafe never is). While a higher owner holds its
output (an interlock, an override, the fleet), the loop tracks that value
and keeps its own claim at it, so it resumes from there without a bump. The
largest demand of a zone's loops drives the zone's output.

A loop over one point goes to failsafe on its first bad reading; a loop over
many (the hottest GPU of the pod) uses each member's last good reading until
that one is stale: one corrupted frame of one BMC must not send the pumps to
full.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from drivers.base import Quality
from megapodd.control.arbiter import Claim, OutputArbiter, Owner
from megapodd.control.cascade import ZoneConfig, decide
from megapodd.control.curve import CurveConfig, CurveController
from megapodd.control.filters import LowPass
from megapodd.control.loop_specs import LoopSpec, Source, ZoneSpec
from megapodd.control.numeric import ControllerInputError, clamp, slew
from megapodd.control.pid import Direction, FailsafeReturn, Pid, PidConfig, PidMode
from megapodd.events import EventBus, Severity
from megapodd.selectors import aggregate, number, point_matches
from megapodd.store import PointStore

log = structlog.get_logger("megapodd.loops")

# Good readings in a row before a loop leaves failsafe.
RECOVER_READINGS = 3
# An actuator whose feedback stays this far (share of its range) from the
# commanded value for this long is an alarm (real CDUs check every 15 min, or never).
FEEDBACK_GAP = 0.10
FEEDBACK_HOLD_S = 30.0
# How often the retained `loops` topic is refreshed while nothing changes mode.
PUBLISH_EVERY_S = 10.0
# A per-device loop family is spread over this many points of its period (a
# 2 s fan zone: one point per 100 ms tick).
PHASES = 20


class LoopMode(enum.StrEnum):
    AUTO = "auto"
    FAILSAFE = "failsafe"
    OVERRIDDEN = "overridden"  # a technician's or the fleet's claim holds the output
    HELD = "held"  # an interlock holds the output


class SetpointRefused(ValueError):
    """A setpoint change that may not happen; the message says why."""


@dataclass(frozen=True, slots=True)
class _Value:
    """A source read: its value, or why there is none."""

    value: float | None
    problem: str | None
    oldest_s: float = -math.inf  # when its stalest member was read
    missing: bool = False  # never read yet (not a fault until stale_after_s from start)


@dataclass(slots=True)
class _Reading:
    """What the loops know of one point."""

    value: float | None = None  # the last good value
    mono_s: float = -math.inf  # when it was read
    bad: bool = False  # the latest reading was not good
    readings: int = 0  # good readings so far


@dataclass(slots=True)
class _Loop:
    spec: LoopSpec
    setpoint: float | None
    pid: Pid | None = None
    curve: CurveController | None = None
    filter: LowPass | None = None
    mode: LoopMode = LoopMode.AUTO
    reason: str = ""
    due_s: float = 0.0
    phase_s: float = 0.0  # where in its period it computes (_spread_phases)
    oldest_good_s: float = -math.inf  # the stalest member at the last full read
    recover_from: int = 0  # good readings counted when failsafe began
    fault: str | None = None  # a bad reading or a boost seen since the last tick
    pv: float | None = None
    output: float | None = None  # what the loop asks for now
    claimed: float | None = None  # what its claim says
    ff: float = 0.0
    feedback_since_s: float | None = None
    feedback_alarm: bool = False

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(slots=True)
class _Zone:
    spec: ZoneSpec
    members: list[_Loop] = field(default_factory=list)
    claimed: float | None = None
    winner: str = ""


class LoopEngine:
    def __init__(
        self,
        loops: Sequence[LoopSpec],
        zones: Sequence[ZoneSpec],
        store: PointStore,
        arbiter: OutputArbiter,
        events: EventBus,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._arbiter = arbiter
        self._events = events
        self._clock = clock
        self._wall_clock = wall_clock
        self._loops = {spec.id: _make_loop(spec) for spec in loops}
        _spread_phases(self._loops.values())
        self._zones = {z.id: _Zone(z, [self._loops[m] for m in z.members]) for z in zones}
        self._readings: dict[tuple[str, str], _Reading] = {}
        self._watchers: dict[tuple[str, str], list[_Loop]] = {}
        self._by_device: dict[str, list[_Loop]] = {}
        for loop in self._loops.values():
            for device in _devices(loop.spec):
                self._by_device.setdefault(device, []).append(loop)
        self._listeners: list[Callable[[], None]] = []
        self._published_s = -math.inf
        self._started_s: float | None = None

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Told when a loop changes mode, and every PUBLISH_EVERY_S (the `loops` topic)."""
        self._listeners.append(listener)

    # -- readings (a subscriber of the store) ------------------------------

    def on_readings(self, device_id: str, names: frozenset[str]) -> None:
        loops = self._by_device.get(device_id)
        if not loops:
            return
        record = self._store.device(device_id)
        for name in names:
            key = (device_id, name)
            watchers = self._watchers.get(key)
            if watchers is None:
                watchers = [loop for loop in loops if _watches(loop.spec, device_id, name)]
                self._watchers[key] = watchers
            if not watchers:
                continue
            point = record.points.get(name)
            reading = self._readings.get(key)
            if reading is None:
                reading = self._readings[key] = _Reading()
            value = number(point.value) if point is not None else None
            if point is None or point.quality is not Quality.GOOD or value is None:
                reading.bad = True
            else:
                reading.value, reading.mono_s, reading.bad = value, point.mono_s, False
                reading.readings += 1
            for loop in watchers:
                self._noticed(loop, device_id, name, reading)

    def _noticed(self, loop: _Loop, device: str, name: str, reading: _Reading) -> None:
        spec = loop.spec
        if reading.bad and spec.source.aggregate is None and _in(spec.source, device, name):
            loop.fault = f"{device}.{name}: no good reading (bad, out of range or not a number)"
        boost = spec.boost
        below = spec.boost_below
        low = reading.value is not None and not reading.bad and (
            below is not None and reading.value < below
        )
        if boost is not None and low and _in(boost, device, name):
            loop.fault = f"{device}.{name} = {reading.value:g}, below {below:g}"

    # -- the tick ------------------------------------------------------------

    def tick(self) -> None:
        now = self._clock()
        if self._started_s is None:
            self._started_s = now
            for loop in self._loops.values():
                loop.due_s = now + loop.phase_s
        changed = False
        for loop in self._loops.values():
            # Most loops have nothing to do in most ticks (a fan zone computes
            # every 2 s): the same test _step begins with, without the call.
            if (
                loop.fault is None
                and now < loop.due_s
                and now - loop.oldest_good_s <= loop.spec.stale_after_s
                and loop.mode is not LoopMode.FAILSAFE
            ):
                continue
            changed |= self._step(loop, now)
        for zone in self._zones.values():
            self._drive_zone(zone)
        for loop in self._loops.values():
            if loop.spec.zone is None or loop.mode is LoopMode.FAILSAFE:
                self._check_feedback(loop, now)
        if changed or now - self._published_s >= PUBLISH_EVERY_S:
            self._published_s = now
            for listener in self._listeners:
                listener()

    def _step(self, loop: _Loop, now: float) -> bool:
        """One tick of one loop; True if its mode changed."""
        spec = loop.spec
        previous = loop.mode
        if self._started_s is None:
            self._started_s = now
        problem, loop.fault = loop.fault, None
        due = now >= loop.due_s or loop.mode is LoopMode.FAILSAFE
        read: _Value | None = None
        # Every tick a cheap check (the stalest member at the last read); a full
        # read when it may have gone stale or the period is due.
        if problem is None and (due or now - loop.oldest_good_s > spec.stale_after_s):
            read = self._full_read(loop, now)
            if read.problem is not None:
                if read.missing and now - self._started_s < spec.stale_after_s:
                    return False  # nothing read yet since start: wait for it
                problem = read.problem
        if problem is not None:
            self._failsafe(loop, now, problem)
            return loop.mode is not previous
        if loop.mode is LoopMode.FAILSAFE and not self._recovered(loop):
            return False
        if read is None or read.value is None or not due:
            return False
        loop.due_s = now + spec.config.period_s
        loop.oldest_good_s = read.oldest_s
        self._compute(loop, now, read.value)
        return loop.mode is not previous

    def _full_read(self, loop: _Loop, now: float) -> _Value:
        """The input and the boost condition, with every member checked."""
        spec = loop.spec
        read = self._read(spec.source, now, spec.stale_after_s)
        if read.problem is not None or spec.boost is None or spec.boost_below is None:
            return read
        boost = self._read(spec.boost, now, spec.stale_after_s)
        if boost.problem is not None:
            return _Value(None, f"boost input: {boost.problem}", missing=boost.missing)
        if boost.value is not None and boost.value < spec.boost_below:
            return _Value(
                None, f"{spec.boost.describe()} = {boost.value:g}, below {spec.boost_below:g}"
            )
        return _Value(read.value, None, oldest_s=min(read.oldest_s, boost.oldest_s))

    def _read(self, source: Source, now: float, stale_after_s: float) -> _Value:
        """The source's value, or why there is none."""
        values: list[float] = []
        oldest = math.inf
        for device in source.devices:
            names = self._store.matching(device, source.pattern)
            if not names:
                return _Value(None, f"{device}.{source.pattern}: never read", missing=True)
            for name in names:
                reading = self._readings.get((device, name))
                if reading is None or reading.value is None:
                    return _Value(None, f"{device}.{name}: no good reading yet", missing=True)
                if source.aggregate is None and reading.bad:
                    return _Value(None, f"{device}.{name}: no good reading (bad)")
                if now - reading.mono_s > stale_after_s:
                    return _Value(None, f"{device}.{name}: no good reading for {stale_after_s:g} s")
                oldest = min(oldest, reading.mono_s)
                values.append(reading.value)
        if source.aggregate is None:
            return _Value(values[0], None, oldest_s=oldest)
        if source.aggregate == "sum":
            return _Value(sum(values), None, oldest_s=oldest)
        return _Value(aggregate(values, source.aggregate), None, oldest_s=oldest)

    def _recovered(self, loop: _Loop) -> bool:
        """In failsafe: three good readings of the input since it began?"""
        counts = [
            r.readings
            for (device, name), r in self._readings.items()
            if _in(loop.spec.source, device, name)
        ]
        fresh = min(counts, default=0) - loop.recover_from
        if fresh < RECOVER_READINGS:
            return False
        self._set_mode(loop, LoopMode.AUTO, "3 good readings: back from failsafe, ramping")
        self._events.emit(
            "loop_recovered",
            Severity.INFO,
            loop.spec.output.partition(".")[0],
            f"loop {loop.id}: input good again; leaving failsafe, ramping from "
            f"{loop.spec.failsafe:g}",
            {"loop": loop.id},
        )
        return True

    # -- computing -----------------------------------------------------------

    def _compute(self, loop: _Loop, now: float, value: float) -> None:
        spec = loop.spec
        holder = self._holder(spec.output)
        applied = self._applied(loop)
        if holder is not None:
            mode = LoopMode.HELD if holder.owner is Owner.INTERLOCK else LoopMode.OVERRIDDEN
            self._set_mode(loop, mode, f"held at {holder.value} by {holder.by}")
            held = float(holder.value)
            if loop.pid is not None:
                loop.pid.track(now, held, value)
            loop.pv, loop.output = value, held
            self._claim(loop, held, force=True)  # resumes from here when released
            return
        if loop.mode in (LoopMode.HELD, LoopMode.OVERRIDDEN):
            self._set_mode(loop, LoopMode.AUTO, "released: resuming from the held value")
        pv = loop.filter.update(now, value) if loop.filter is not None else value
        loop.pv = pv
        try:
            output = self._controller_output(loop, now, pv, applied)
        except ControllerInputError as exc:
            self._failsafe(loop, now, str(exc))
            return
        loop.output = output
        if spec.zone is None:
            self._claim(loop, output, force=False)

    def _controller_output(
        self, loop: _Loop, now: float, pv: float, applied: float | None
    ) -> float:
        spec = loop.spec
        config = spec.config
        if loop.pid is not None:
            assert loop.setpoint is not None  # noqa: S101 - a pid loop always has one
            loop.ff = self._feed_forward(loop, now)
            return loop.pid.update(now, pv, loop.setpoint, feed_forward=loop.ff, applied=applied)
        if loop.curve is not None:
            target = loop.curve.update(pv)
        else:
            target = (config.gain or 0.0) * pv + config.bias
        target = clamp(target, spec.out_min, spec.out_max)
        if applied is None:
            return target
        step_s = config.period_s
        return slew(target, applied, step_s, spec.slew_up_per_s, spec.slew_down_per_s)

    def _feed_forward(self, loop: _Loop, now: float) -> float:
        ff = loop.spec.feed_forward
        if ff is None:
            return 0.0
        read = self._read(ff.source, now, loop.spec.stale_after_s * 4)
        problem = read.problem
        if problem is None and read.value is not None:
            if loop.reason == "feed-forward held":
                loop.reason = ""
            return ff.gain * read.value + ff.bias
        if ff.on_bad == "failsafe":
            raise ControllerInputError(f"feed-forward input: {problem}")
        if loop.reason != "feed-forward held":
            self._events.emit(
                "loop_feed_forward_held",
                Severity.WARNING,
                loop.spec.output.partition(".")[0],
                f"loop {loop.id}: feed-forward input has no good reading ({problem}); "
                f"holding its last value {loop.ff:g}",
                {"loop": loop.id},
            )
            loop.reason = "feed-forward held"
        return loop.ff

    def _holder(self, output: str) -> Claim | None:
        winner = self._arbiter.output(output).winner()
        return winner if winner is not None and winner.owner > Owner.LOOP else None

    def _applied(self, loop: _Loop) -> float | None:
        """What is on the actuator: the arbiter's confirmed write, else our
        claim, else (at start) what the device's feedback shows, so that the
        first output starts from where the actuator is."""
        name = loop.spec.output
        written = self._arbiter.output(name).written
        if isinstance(written, int | float):
            return float(written)
        if loop.claimed is not None:
            return loop.claimed
        pattern = loop.spec.spec.feedback_point
        if pattern is None:
            return None
        device = name.partition(".")[0]
        values = self._good_numbers(device, pattern)
        return max(values) if values else None

    def _good_numbers(self, device: str, pattern: str) -> list[float]:
        """The good numeric readings of a device's points that match a glob."""
        points = self._store.device(device).points
        return [
            v
            for point_name in self._store.matching(device, pattern)
            if (p := points[point_name]).quality is Quality.GOOD
            and (v := number(p.value)) is not None
        ]

    def _claim(self, loop: _Loop, value: float, force: bool) -> None:
        deadband = loop.spec.config.deadband
        if not force and loop.claimed is not None and abs(value - loop.claimed) < deadband:
            return
        if loop.claimed == value and not force:
            return
        loop.claimed = value
        self._arbiter.claim_in_background(
            loop.spec.output, Claim(Owner.LOOP, value, f"loop {loop.id}"), f"loop {loop.id}",
            force=False,
        )  # fmt: skip

    # -- failsafe ------------------------------------------------------------

    def _failsafe(self, loop: _Loop, now: float, why: str) -> None:
        spec = loop.spec
        counts = [
            r.readings for (d, n), r in self._readings.items() if _in(spec.source, d, n)
        ]
        loop.recover_from = max(counts, default=0)
        if loop.mode is not LoopMode.FAILSAFE:
            self._set_mode(loop, LoopMode.FAILSAFE, why)
            self._events.emit(
                "loop_failsafe",
                Severity.WARNING,
                spec.output.partition(".")[0],
                f"loop {loop.id}: {why}; {spec.output} to its failsafe {spec.failsafe:g}",
                {"loop": loop.id, "reason": why, "failsafe": spec.failsafe},
            )
            if loop.curve is not None:
                loop.curve.reset(spec.failsafe)
            if loop.filter is not None:
                loop.filter.reset()
        else:
            loop.reason = why
        if loop.pid is not None:
            # Every tick, not only on entry: the slew limit of the first update
            # back counts from the controller's last update, and a whole
            # failsafe's worth of slew would be a step.
            loop.pid.failsafe(now, spec.failsafe)
        loop.output = spec.failsafe
        holder = self._holder(spec.output)
        if spec.zone is None:
            # Not slew limited, whatever the loop's slew: a move to safety.
            self._claim(loop, spec.failsafe, force=holder is None and loop.claimed != spec.failsafe)

    # -- zones ---------------------------------------------------------------

    def _drive_zone(self, zone: _Zone) -> None:
        spec = zone.spec
        if any(m.mode is LoopMode.FAILSAFE for m in zone.members):
            value = spec.failsafe
            zone.winner = "failsafe"
        else:
            demands = {m.id: m.output for m in zone.members if m.output is not None}
            if len(demands) < len(zone.members):
                return  # not every member has computed yet
            decision = decide(ZoneConfig(spec.floor, spec.ceiling), demands)
            value, zone.winner = decision.output, decision.winner
            applied = self._arbiter.output(spec.output).written
            if isinstance(applied, int | float) and zone.claimed is not None:
                value = slew(value, float(applied), 0.1, spec.slew_up_per_s, spec.slew_down_per_s)
        deadband = min(m.spec.config.deadband for m in zone.members)
        if zone.claimed is not None and abs(value - zone.claimed) < max(deadband, 1e-9):
            return
        zone.claimed = value
        self._arbiter.claim_in_background(
            spec.output, Claim(Owner.LOOP, value, f"zone {spec.id}"), f"zone {spec.id}",
            force=False,
        )  # fmt: skip
        for member in zone.members:
            member.claimed = value

    # -- actuator feedback ---------------------------------------------------

    def _check_feedback(self, loop: _Loop, now: float) -> None:
        spec = loop.spec.spec
        pattern = spec.feedback_point
        output = self._arbiter.output(loop.spec.output)
        written = output.written
        if pattern is None or spec.low is None or spec.high is None:
            return
        if not isinstance(written, int | float):
            return
        device = loop.spec.output.partition(".")[0]
        values = self._good_numbers(device, pattern)
        if not values:
            return
        gap = abs(max(values) - float(written))
        if gap <= FEEDBACK_GAP * (spec.high - spec.low):
            if loop.feedback_alarm:
                self._events.emit(
                    "actuator_ok",
                    Severity.INFO,
                    device,
                    f"{loop.spec.output}: feedback follows the command again",
                    {"output": loop.spec.output},
                )
            loop.feedback_since_s, loop.feedback_alarm = None, False
            return
        if loop.feedback_since_s is None:
            loop.feedback_since_s = now
        if not loop.feedback_alarm and now - loop.feedback_since_s >= FEEDBACK_HOLD_S:
            loop.feedback_alarm = True
            self._events.emit(
                "actuator_mismatch",
                Severity.ALARM,
                device,
                f"{loop.spec.output}: commanded {float(written):g}, feedback "
                f"{pattern} reads {max(values):g} for {FEEDBACK_HOLD_S:g} s",
                {"output": loop.spec.output, "commanded": written, "feedback": max(values)},
            )

    # -- commands and state --------------------------------------------------

    def set_setpoint(self, loop_id: str, value: float) -> list[str]:
        """A new setpoint, within the loop's configured limits; the loops changed."""
        targets = [self._loops[loop_id]] if loop_id in self._loops else [
            loop for loop in self._loops.values() if loop.spec.config.id == loop_id
        ]
        if not targets:
            raise SetpointRefused(f"no loop {loop_id!r}; loops: {', '.join(self.ids())}")
        config = targets[0].spec.config
        if config.controller != "pid":
            raise SetpointRefused(f"loop {loop_id} is a {config.controller} loop: no setpoint")
        low, high = config.setpoint_min, config.setpoint_max
        if low is None or high is None:
            raise SetpointRefused(
                f"loop {loop_id} has no setpoint_min/setpoint_max in the config: "
                "its setpoint cannot be changed at run time"
            )
        if not math.isfinite(value) or not low <= value <= high:
            raise SetpointRefused(f"setpoint {value:g} is outside {low:g}–{high:g} of {loop_id}")
        for loop in targets:
            loop.setpoint = value
        for listener in self._listeners:
            listener()
        return [loop.id for loop in targets]

    def ids(self) -> list[str]:
        return sorted({loop.spec.config.id for loop in self._loops.values()})

    def snapshot(self) -> dict[str, object]:
        return {loop.id: self._as_json(loop) for loop in self._loops.values()}

    def _as_json(self, loop: _Loop) -> dict[str, object]:
        spec = loop.spec
        winner = self._arbiter.output(spec.output).winner()
        terms = loop.pid.last if loop.pid is not None else None
        return {
            "id": loop.id,
            "controller": spec.config.controller,
            "mode": loop.mode.value,
            "reason": loop.reason,
            "input": spec.source.describe(),
            "setpoint": loop.setpoint,
            "process_value": _rounded(loop.pv),
            "output": _rounded(loop.output),
            "target": spec.output,
            "zone": spec.zone,
            "owner": winner.owner.name.lower() if winner is not None else None,
            "written": self._arbiter.output(spec.output).written,
            "failsafe": spec.failsafe,
            "p": _rounded(terms.p if terms is not None else None),
            "i": _rounded(terms.i if terms is not None else None),
            "d": _rounded(terms.d if terms is not None else None),
            "ff": _rounded(loop.ff if spec.feed_forward is not None else None),
        }

    def _set_mode(self, loop: _Loop, mode: LoopMode, reason: str) -> None:
        if loop.mode is not mode:
            log.info("loop_mode", loop=loop.id, mode=mode.value, reason=reason)
        loop.mode, loop.reason = mode, reason


def _make_loop(spec: LoopSpec) -> _Loop:
    config = spec.config
    loop = _Loop(spec, config.setpoint)
    if config.controller == "pid":
        loop.pid = Pid(
            PidConfig(
                kp=config.kp,
                ki=config.ki,
                kd=config.kd,
                d_filter_tau_s=config.d_filter_s,
                out_min=spec.out_min,
                out_max=spec.out_max,
                slew_up_per_s=spec.slew_up_per_s,
                slew_down_per_s=spec.slew_down_per_s,
                direction=Direction(config.direction),
                failsafe_return=FailsafeReturn(config.failsafe_return),
            )
        )
    elif config.controller == "curve":
        loop.curve = CurveController(CurveConfig.of(config.curve, config.hysteresis))
    if config.input_filter_s > 0:
        loop.filter = LowPass(config.input_filter_s)
    return loop


def _spread_phases(loops: Iterable[_Loop]) -> None:
    """The loops of one per-device `[[loop]]` (scope "each": a fan zone per
    server) compute at PHASES points of their period instead of all in one
    tick: their work, and the writes to 144 BMCs that follow it, would
    otherwise come as one burst every period (bench/results/loops.md)."""
    families: dict[str, list[_Loop]] = {}
    for loop in loops:
        if loop.spec.config.scope == "each":
            families.setdefault(loop.spec.config.id, []).append(loop)
    for members in families.values():
        for index, loop in enumerate(members):
            loop.phase_s = (index % PHASES) / PHASES * loop.spec.config.period_s


def _devices(spec: LoopSpec) -> set[str]:
    devices = set(spec.source.devices)
    for source in (spec.feed_forward.source if spec.feed_forward else None, spec.boost):
        if source is not None:
            devices |= set(source.devices)
    return devices


def _in(source: Source, device: str, name: str) -> bool:
    return device in source.devices and point_matches(source.pattern, name)


def _watches(spec: LoopSpec, device: str, name: str) -> bool:
    sources = [spec.source, spec.boost, spec.feed_forward.source if spec.feed_forward else None]
    return any(s is not None and _in(s, device, name) for s in sources)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


__all__ = ["LoopEngine", "LoopMode", "PidMode", "SetpointRefused"]
