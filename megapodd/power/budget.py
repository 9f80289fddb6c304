"""The power budget as a pure computation: measurements in, power caps out.

Given the pod's measured phase power and current (the PDUs' 1 s readings), each
server's latest power reading and what it is fed by, this decides the DCMI power
cap of every server:

- A phase over its limit (`phase_limit_pct` of its breaker), or the pod over its
  budget, sheds the excess down to `TARGET` of the limit: lowest priority first,
  in proportion to what each server can give (its level above `min_cap_w`)
  within a priority, never below `min_cap_w`. A phase is shed from its own
  servers only.
- A cap just written takes a while to show in the readings (the BMC acts within
  2 s, the PDU is read every second): until `SETTLE_S` after a change, the
  change's expected effect is added to the measurement, so the next step does
  not shed the same watts twice.
- A phase whose readings are stale (the PDU went silent) has its servers capped
  to their share of the phase limit at once (Thunderbolt's fallback), and counts
  at the sum of those caps in the pod's power.
- When the pod and a phase have had headroom (below `CALM` of their limit) for
  `release_s`, caps there are raised step by step and removed once the server
  no longer uses its cap, highest priority first, at most a tenth of the pod's
  servers raised per step, so released servers do not all ramp at once.

Nothing here reads a clock or a store: the caller hands in `now_s` with the
readings (megapodd/power/controller.py does, from the control tick).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from megapodd.control.numeric import check_setting

PhaseKey = tuple[str, int]  # (PDU id, phase 1-3)

# A phase or the pod over its limit is shed to this share of it ...
TARGET = 0.97
# ... and counts as having headroom below this share.
CALM = 0.94
# How long a cap change takes to show in the PDU readings: the BMC's correction
# (2 s, DEVICES.md) plus a PDU poll (1 s).
SETTLE_S = 3.0
# A released cap rises per step by this share of itself, by half the headroom
# spread over the step's servers, or by MIN_STEP_W, whichever is most ...
RELEASE_STEP = 0.10
MIN_STEP_W = 100.0
# ... and is removed once the server draws less than this share of it.
UNUSED = 0.90
# At most this share of the pod's servers change per release step (at least one).
STAGGER = 0.10
# Volts assumed for a phase whose voltage has not been read.
NOMINAL_V = 230.0
# Smaller moves are not written (a DCMI limit is whole watts; this avoids churn).
MIN_CHANGE_W = 10.0


@dataclass(frozen=True, slots=True)
class ServerSpec:
    id: str
    pdu: str
    phase: int
    priority: int = 0  # higher keeps power longer
    min_cap_w: float = 2000.0

    @property
    def feed(self) -> PhaseKey:
        return (self.pdu, self.phase)


@dataclass(frozen=True, slots=True)
class PhaseReading:
    """A PDU phase as measured; None where there is no fresh good reading."""

    current_a: float | None
    power_w: float | None
    voltage_v: float | None = None

    @property
    def good(self) -> bool:
        return self.current_a is not None and self.power_w is not None


@dataclass(frozen=True, slots=True)
class ServerReading:
    """A server's own power reading (outlet or DCMI) and who else caps it."""

    power_w: float | None = None
    mono_s: float = -math.inf  # when it was read
    # A higher owner (an interlock, a technician, the fleet) holds its power limit
    # at this: the budget's cap does not act while it does.
    held_w: float | None = None
    held_by: str = ""


@dataclass(frozen=True, slots=True)
class Measurement:
    now_s: float
    phases: Mapping[PhaseKey, PhaseReading]
    servers: Mapping[str, ServerReading] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cap:
    watts: float
    reason: str  # "pod budget", "phase pdu-r1a/2 limit", "pdu-r1a/2 readings stale"
    since_s: float  # capped since
    set_s: float  # last changed
    expected_delta_w: float = 0.0  # what the last change should do to the power readings
    lowered_s: float = -math.inf  # last lowered: a reading after it (settled) shows the cap

    @property
    def seen_after_s(self) -> float:
        """A server reading from this time on was taken under this cap or a lower one."""
        return self.lowered_s + SETTLE_S

    def pending(self, now_s: float) -> bool:
        return now_s < self.set_s + SETTLE_S


@dataclass(frozen=True, slots=True)
class PhaseStatus:
    pdu: str
    phase: int
    current_a: float | None  # projected (pending cap changes included); None: stale
    limit_a: float
    power_w: float  # projected; for a stale phase, the bound its caps give
    stale: bool

    @property
    def load_pct(self) -> float | None:
        if self.current_a is None or self.limit_a <= 0:
            return None
        return 100.0 * self.current_a / self.limit_a


@dataclass(frozen=True, slots=True)
class Decision:
    """One step's outcome: what the pod looks like and which caps changed."""

    now_s: float
    budget_w: float | None
    pod_power_w: float  # measured (stale phases at their caps' bound)
    projected_w: float  # with the pending cap changes' effect
    phases: tuple[PhaseStatus, ...]
    caps: Mapping[str, Cap]
    changed: frozenset[str]  # servers whose cap was set, moved or removed
    shed_w: float = 0.0  # watts shed this step
    unmet_w: float = 0.0  # excess that even every server at min_cap_w cannot cover
    stale: tuple[PhaseKey, ...] = ()

    @property
    def headroom_w(self) -> float | None:
        return None if self.budget_w is None else self.budget_w - self.projected_w


@dataclass(slots=True)
class _Quiet:
    """How long a constraint (the pod, a phase) has had headroom."""

    since_s: float | None = None
    releasing: bool = False

    def update(self, now_s: float, over: bool, calm: bool, release_s: float) -> None:
        if over:
            self.since_s = None
        elif calm:
            if self.since_s is None:
                self.since_s = now_s
        elif not self.releasing:
            self.since_s = None  # near the limit and not yet releasing: wait for headroom
        self.releasing = self.since_s is not None and now_s - self.since_s >= release_s


class BudgetError(ValueError):
    """Settings that cannot make a budget (the message names the setting)."""


class PowerBudget:
    def __init__(
        self,
        servers: Sequence[ServerSpec],
        phase_limits_a: Mapping[PhaseKey, float],
        budget_w: float | None,
        release_s: float,
    ) -> None:
        check_setting(release_s, "release_s")
        for key, limit in phase_limits_a.items():
            check_setting(limit, f"phase {key[0]}/{key[1]} limit", positive=True)
        self.servers = {s.id: s for s in servers}
        missing = {s.feed for s in servers} - set(phase_limits_a)
        if missing:
            raise BudgetError(f"servers on phases without a limit: {sorted(missing)}")
        self.phase_limits_a = dict(phase_limits_a)
        self.release_s = release_s
        self.budget_w: float | None = None
        self.set_budget(budget_w)
        self.caps: dict[str, Cap] = {}
        self._on_phase: dict[PhaseKey, list[ServerSpec]] = {k: [] for k in phase_limits_a}
        for server in servers:
            self._on_phase[server.feed].append(server)
        self._pod_quiet = _Quiet()
        self._phase_quiet = {key: _Quiet() for key in phase_limits_a}
        self._last_good_w: dict[PhaseKey, float] = {}
        self._volts: dict[PhaseKey, float] = {}
        self._stagger = max(1, math.ceil(STAGGER * len(servers)))

    @property
    def min_budget_w(self) -> float:
        return sum(s.min_cap_w for s in self.servers.values())

    def set_budget(self, budget_w: float | None) -> None:
        if budget_w is not None:
            check_setting(budget_w, "budget_w", positive=True)
        self.budget_w = budget_w

    # -- one step ------------------------------------------------------------

    def step(self, m: Measurement) -> Decision:
        now = m.now_s
        before = dict(self.caps)
        stale = self._fallback(m)
        power, current, volts = self._projected(m, stale)
        measured_w = self._measured_pod_w(m, stale)
        levels = self._levels(m, power, stale)
        pod_w = sum(power.values())
        shed = 0.0
        unmet = 0.0
        over_phases: set[PhaseKey] = set()
        # Phases first: each is shed from its own servers.
        for key, servers in self._on_phase.items():
            amps = current.get(key)
            limit = self.phase_limits_a[key]
            if amps is None or amps <= limit:
                continue
            over_phases.add(key)
            need = (amps - TARGET * limit) * volts[key]
            done, left = self._shed(need, servers, levels, m, f"phase {key[0]}/{key[1]} limit")
            shed += done
            unmet += left
            pod_w -= done
            current[key] = amps - done / volts[key]
            power[key] -= done
        over_pod = self.budget_w is not None and pod_w > self.budget_w
        if self.budget_w is not None and over_pod:
            need = pod_w - TARGET * self.budget_w
            done, left = self._shed_pod(need, levels, m, power, current, volts)
            shed += done
            unmet += left
            pod_w -= done
        budget = self.budget_w
        self._pod_quiet.update(
            now,
            over_pod,
            budget is None or pod_w <= CALM * budget,
            self.release_s,
        )
        for key, quiet in self._phase_quiet.items():
            amps = current.get(key)
            limit = self.phase_limits_a[key]
            if amps is None:  # stale: no headroom known
                quiet.since_s, quiet.releasing = None, False
                continue
            quiet.update(now, key in over_phases, amps <= CALM * limit, self.release_s)
        if shed == 0.0 and self._pod_quiet.releasing:
            pod_w += self._release(m, pod_w, current, volts)
        changed = frozenset(
            sid
            for sid in set(before) | set(self.caps)
            if before.get(sid) is None
            or self.caps.get(sid) is None
            or before[sid].watts != self.caps[sid].watts
        )
        phases = tuple(
            PhaseStatus(
                key[0],
                key[1],
                current.get(key),
                self.phase_limits_a[key],
                power[key],
                key in stale,
            )
            for key in self.phase_limits_a
        )
        return Decision(
            now,
            self.budget_w,
            measured_w,
            pod_w,
            phases,
            dict(self.caps),
            changed,
            shed,
            unmet,
            tuple(sorted(stale)),
        )

    # -- pieces --------------------------------------------------------------

    def _fallback(self, m: Measurement) -> set[PhaseKey]:
        """Stale phases: cap their servers to their share of the phase limit."""
        stale: set[PhaseKey] = set()
        for key, servers in self._on_phase.items():
            reading = m.phases.get(key)
            if reading is not None and reading.good:
                continue
            stale.add(key)
            if not servers:
                continue
            volts = self._volts.get(key, NOMINAL_V)
            share = self.phase_limits_a[key] * volts / len(servers)
            for server in servers:
                cap = self.caps.get(server.id)
                watts = max(server.min_cap_w, math.floor(share))
                if cap is None or cap.watts > watts:
                    since = cap.since_s if cap is not None else m.now_s
                    reason = f"{key[0]}/{key[1]} readings stale"
                    self.caps[server.id] = Cap(watts, reason, since, m.now_s, 0.0, m.now_s)
        return stale

    def _projected(
        self, m: Measurement, stale: set[PhaseKey]
    ) -> tuple[dict[PhaseKey, float], dict[PhaseKey, float], dict[PhaseKey, float]]:
        """Each phase's power and current with pending cap changes' effect added."""
        now = m.now_s
        pending: dict[PhaseKey, float] = dict.fromkeys(self.phase_limits_a, 0.0)
        for sid, cap in self.caps.items():
            if cap.pending(now):
                pending[self.servers[sid].feed] += cap.expected_delta_w
        power: dict[PhaseKey, float] = {}
        current: dict[PhaseKey, float] = {}
        volts: dict[PhaseKey, float] = {}
        for key in self.phase_limits_a:
            reading = m.phases.get(key)
            if (
                key in stale
                or reading is None
                or reading.power_w is None
                or (reading.current_a is None)
            ):
                volts[key] = self._volts.get(key, NOMINAL_V)
                power[key] = self._stale_phase_w(key, m)
                continue
            v = reading.voltage_v
            if v is not None and v > 0:
                self._volts[key] = v
            volts[key] = self._volts.get(key, NOMINAL_V)
            self._last_good_w[key] = reading.power_w
            power[key] = max(0.0, reading.power_w + pending[key])
            current[key] = max(0.0, reading.current_a + pending[key] / volts[key])
        return power, current, volts

    def _stale_phase_w(self, key: PhaseKey, m: Measurement) -> float:
        servers = self._on_phase[key]
        if not servers:
            return self._last_good_w.get(key, 0.0)
        return sum(self._effective_cap(s.id, m) or 0.0 for s in servers)

    def _measured_pod_w(self, m: Measurement, stale: set[PhaseKey]) -> float:
        total = 0.0
        for key in self.phase_limits_a:
            reading = m.phases.get(key)
            if key in stale or reading is None or reading.power_w is None:
                total += self._stale_phase_w(key, m)
            else:
                total += reading.power_w
        return total

    def _effective_cap(self, sid: str, m: Measurement) -> float | None:
        """The cap the server obeys: the budget's, or a higher owner's that holds it."""
        reading = m.servers.get(sid)
        if reading is not None and reading.held_w is not None:
            return reading.held_w
        cap = self.caps.get(sid)
        return cap.watts if cap is not None else None

    def _levels(
        self, m: Measurement, power: Mapping[PhaseKey, float], stale: set[PhaseKey]
    ) -> dict[str, float]:
        """What each server draws (once pending changes settle), best estimate.

        A capped server draws its cap (less if its own fresh reading says so);
        the rest of a phase's power is split over its uncapped servers by their
        own readings (equally without them)."""
        levels: dict[str, float] = {}
        for key, servers in self._on_phase.items():
            rest = power[key]
            free: list[ServerSpec] = []
            for server in servers:
                cap = self._effective_cap(server.id, m)
                if cap is None:
                    free.append(server)
                    continue
                level = cap
                reading = m.servers.get(server.id)
                own = self.caps.get(server.id)
                fresh_after = own.seen_after_s if own is not None else -math.inf
                if (
                    reading is not None
                    and reading.power_w is not None
                    and reading.mono_s >= fresh_after
                ):
                    level = min(level, reading.power_w)
                levels[server.id] = level
                rest -= level
            if not free:
                continue
            rest = max(0.0, rest) if key not in stale else 0.0
            shares = _shares([m.servers.get(s.id) for s in free])
            for server, share in zip(free, shares, strict=True):
                levels[server.id] = rest * share
        return levels

    def _shed(
        self,
        need_w: float,
        servers: Iterable[ServerSpec],
        levels: dict[str, float],
        m: Measurement,
        reason: str,
    ) -> tuple[float, float]:
        """Lower caps by `need_w` in all: lowest priority first, in proportion to
        what each can give within a priority. Returns (shed, what could not be).

        A server whose limit a higher owner holds (an interlock, an override)
        sheds nothing now: its cap is the holder's. It still gets a budget cap
        below the holder's value, in the same proportion, which takes over the
        moment the holder lets go (no uncapped gap between the two)."""
        now = m.now_s
        by_priority: dict[int, list[ServerSpec]] = {}
        for server in servers:
            by_priority.setdefault(server.priority, []).append(server)
        remaining = need_w
        for priority in sorted(by_priority):
            if remaining < MIN_CHANGE_W:
                break
            group = by_priority[priority]
            held = {s.id for s in group if _held(m, s.id)}
            room = {s.id: max(0.0, levels[s.id] - s.min_cap_w) for s in group}
            free = sum(r for sid, r in room.items() if sid not in held)
            total = free if free >= MIN_CHANGE_W else sum(room.values())
            if total < MIN_CHANGE_W:
                continue
            fraction = min(1.0, remaining / total)
            for server in group:
                cut = room[server.id] * fraction
                if cut < MIN_CHANGE_W and fraction < 1.0:
                    continue
                new_w = max(server.min_cap_w, math.floor(levels[server.id] - cut))
                cut = levels[server.id] - new_w
                if cut <= 0.0:
                    continue
                old = self.caps.get(server.id)
                if server.id in held:
                    if old is None or old.watts > new_w:  # beneath the holder's, for later
                        since = old.since_s if old is not None else now
                        self.caps[server.id] = Cap(new_w, reason, since, now, 0.0, now)
                    continue
                pending = old.expected_delta_w if old is not None and old.pending(now) else 0.0
                since = old.since_s if old is not None else now
                self.caps[server.id] = Cap(new_w, reason, since, now, pending - cut, now)
                levels[server.id] = new_w
                remaining -= cut
        return need_w - max(0.0, remaining), max(0.0, remaining)

    def _shed_pod(
        self,
        need_w: float,
        levels: dict[str, float],
        m: Measurement,
        power: dict[PhaseKey, float],
        current: dict[PhaseKey, float],
        volts: Mapping[PhaseKey, float],
    ) -> tuple[float, float]:
        before = dict(levels)
        done, left = self._shed(need_w, self.servers.values(), levels, m, "pod budget")
        for sid, level in levels.items():
            cut = before[sid] - level
            if cut > 0:
                key = self.servers[sid].feed
                power[key] -= cut
                if key in current:
                    current[key] -= cut / volts[key]
        return done, left

    def _release(
        self,
        m: Measurement,
        pod_w: float,
        current: Mapping[PhaseKey, float],
        volts: Mapping[PhaseKey, float],
    ) -> float:
        """Raise or remove caps where the pod and the phase have had headroom
        for release_s; returns the watts the raises may add."""
        now = m.now_s
        budget = self.budget_w
        pod_room = math.inf if budget is None else TARGET * budget - pod_w
        phase_room = {
            key: (TARGET * self.phase_limits_a[key] - amps) * volts[key]
            for key, amps in current.items()
        }
        order = sorted(
            self.caps.items(),
            key=lambda item: (-self.servers[item[0]].priority, item[1].since_s, item[0]),
        )
        changes = 0
        added = 0.0
        for sid, cap in order:
            server = self.servers[sid]
            key = server.feed
            if key not in phase_room or not self._phase_quiet[key].releasing:
                continue
            reading = m.servers.get(sid, ServerReading())
            if reading.held_w is not None:
                continue  # held by a higher owner: ours acts once that one ends
            # Drawing well below its cap (read under it, or under a lower one
            # before a raise): the cap does nothing, and goes.
            seen = reading.power_w is not None and reading.mono_s >= cap.seen_after_s
            # Removing it moves nothing now, so it does not count against the stagger.
            if seen and reading.power_w is not None and reading.power_w < UNUSED * cap.watts:
                del self.caps[sid]
                continue
            if cap.pending(now) or changes >= self._stagger:
                continue  # the last raise is not in the readings yet; or enough this step
            # Half the room left, spread over this step's servers, or a tenth of
            # the cap: large moves while there is much headroom, small near the limit.
            room = min(pod_room, phase_room[key])
            step = min(max(RELEASE_STEP * cap.watts, MIN_STEP_W, room / 2 / self._stagger), room)
            if step < MIN_STEP_W:
                continue
            self.caps[sid] = replace(
                cap, watts=math.floor(cap.watts + step), set_s=now, expected_delta_w=step
            )
            pod_room -= step
            phase_room[key] -= step
            added += step
            changes += 1
        return added


def _held(m: Measurement, server: str) -> bool:
    reading = m.servers.get(server)
    return reading is not None and reading.held_w is not None


def _shares(readings: Sequence[ServerReading | None]) -> list[float]:
    """How a phase's power splits over servers: by their own readings; one
    without a reading counts as the mean of the others (all equal with none)."""
    known = [r.power_w for r in readings if r is not None and r.power_w is not None]
    mean = sum(known) / len(known) if known else 1.0
    weights = [
        max(0.0, r.power_w) if r is not None and r.power_w is not None else mean for r in readings
    ]
    total = sum(weights)
    if total <= 0:
        return [1.0 / len(readings)] * len(readings)
    return [w / total for w in weights]
