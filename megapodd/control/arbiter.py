"""OutputArbiter: one owner decides each actuator value (invariant 1).

Priority: interlock > technician override at the pod (always with an expiry)
> fleet command (always with an expiry) > control loop / power budget >
configured default. A lower owner never replaces or ends a higher one's claim,
and every change of owner is an event.

The arbiter never touches a driver. Every write is an operation on the
device's supervisor queue (at the priority of the owner it serves), and the
operation writes whatever wins *when it runs*, not when it was queued: a
queued write can therefore never land after, and undo, a newer claim. Writes
are the OutputSpec's verified writes (read back, invariant 4); a background
write that fails is retried with backoff from the control tick and raised as
an event by the supervisor.

Discrete outputs (outlets, chassis power, rack isolation, lead pump) are
arbitrated like continuous ones. Besides standing claims they take momentary
actions (`act`: "outlet 3 on" from megapodctl) and one-shot pulses (a reboot):
both are refused while a higher owner holds the output, and end the standing
claims of their own owner and of lower ones. With no owner left a discrete
output stays as it was left: nothing is re-energised or reopened by itself.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from drivers.base import Quality
from drivers.errors import ValueRejected
from megapodd.backoff import Backoff
from megapodd.events import EventBus, Severity
from megapodd.outputs.catalog import OutputInstance, describe_outputs
from megapodd.outputs.spec import OutputSpec, OutputValue
from megapodd.store import StoredPoint
from megapodd.supervisor import Batch, OperationFn, OpPriority

T = TypeVar("T")

MAX_OVERRIDE_S = 8 * 3600.0


class Owner(enum.IntEnum):
    DEFAULT = 0
    LOOP = 1  # control loops and the power budget
    FLEET = 2  # commands from the fleet over MQTT
    OVERRIDE = 3  # a technician at the pod
    INTERLOCK = 4


# Claims that always end by themselves.
EXPIRING = frozenset({Owner.FLEET, Owner.OVERRIDE})

# The queue priority of a write made for each owner.
OP_PRIORITY: Mapping[Owner, OpPriority] = {
    Owner.INTERLOCK: OpPriority.INTERLOCK,
    Owner.OVERRIDE: OpPriority.TECHNICIAN,
    Owner.FLEET: OpPriority.FLEET,
    Owner.LOOP: OpPriority.LOOP,
    Owner.DEFAULT: OpPriority.LOOP,
}


class Door(Protocol):
    """What the arbiter needs of a device's supervisor."""

    @property
    def device_id(self) -> str: ...

    def submit(
        self,
        name: str,
        priority: OpPriority,
        fn: OperationFn[Any, T],
        *,
        key: str | None = None,
        background: bool = False,
        batch: Batch[Any] | None = None,
    ) -> asyncio.Future[T]: ...

    async def execute(
        self,
        name: str,
        priority: OpPriority,
        fn: OperationFn[Any, T],
        *,
        key: str | None = None,
        timeout_s: float | None = None,
        batch: Batch[Any] | None = None,
    ) -> T: ...

    def poll_now(self) -> None: ...


class OutputHeld(ValueRejected):
    """Refused: a higher owner holds the output. The message names it."""

    def __init__(self, message: str, holder: Claim) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Claim:
    owner: Owner
    value: OutputValue
    by: str  # who: "uid 1001", "mqtt", an interlock's id, a loop's id
    expires_mono_s: float | None = None

    def as_json(self, now_mono_s: float) -> dict[str, object]:
        expires_in = None if self.expires_mono_s is None else self.expires_mono_s - now_mono_s
        return {
            "owner": self.owner.name.lower(),
            "value": self.value,
            "by": self.by,
            "expires_in_s": None if expires_in is None else round(max(0.0, expires_in), 1),
        }


class _Step(enum.Enum):
    """What a write of an output does when it runs (OutputArbiter._plan)."""

    NOTHING = "nothing"  # the device already has the winner
    WRITE = "write"
    HAND_BACK = "hand_back"


# Told None when a write holds, or the error when one failed.
WriteDone = Callable[[BaseException | None], None]


@dataclass(slots=True)
class _Watcher:
    told: WriteDone
    failed: bool = False


@dataclass(slots=True)
class Output:
    name: str  # "<device>.<output>", e.g. "cdu1.pump_speed_pct", "pdu-r1a.outlet_3"
    device_id: str
    spec: OutputSpec[Any]
    index: int | None
    door: Door
    claims: dict[Owner, Claim] = field(default_factory=dict)
    written: OutputValue | None = None  # last value confirmed on the device (None: unknown)
    handed_back: bool = False  # the device controls itself (hand_back ran)
    force_write: bool = False  # the next sync writes even a value that seems written
    retry_at_s: float | None = None  # a background write failed: try again then
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, max_s=30.0))
    # Told how the pending background write ends: once on the first failure, once
    # when it finally holds.
    watchers: list[_Watcher] = field(default_factory=list)
    written_mono_s: float = float("-inf")  # when `written` was confirmed
    # A feedback reading (its time) that contradicted `written`: a second one
    # in a row has the state written again.
    contradicted_mono_s: float | None = None

    def winner(self) -> Claim | None:
        return self.claims[max(self.claims)] if self.claims else None

    def held_above(self, owner: Owner) -> Claim | None:
        """The claim that outranks `owner`, if any."""
        winner = self.winner()
        return winner if winner is not None and winner.owner > owner else None


def _held_message(output: Output, holder: Claim) -> str:
    who = f"interlock {holder.by}" if holder.owner is Owner.INTERLOCK else holder.by
    return (
        f"{output.name} is held at {holder.value} by {who} "
        f"({holder.owner.name.lower()}); try again once it is released"
    )


class OutputArbiter:
    def __init__(self, events: EventBus, clock: Callable[[], float]) -> None:
        self._events = events
        self._clock = clock
        self.outputs: dict[str, Output] = {}

    def add(self, instance: OutputInstance, door: Door, default: OutputValue | None = None) -> None:
        output = Output(instance.name, instance.device_id, instance.spec, instance.index, door)
        if default is not None:
            value = instance.spec.check(default, instance.name)
            output.claims[Owner.DEFAULT] = Claim(Owner.DEFAULT, value, "config")
        self.outputs[instance.name] = output

    def output(self, name: str) -> Output:
        """The output called `name`, or ValueRejected listing the known ones."""
        output = self.outputs.get(name)
        if output is None:
            device = name.partition(".")[0]
            offered = [
                OutputInstance(o.device_id, o.spec, o.index)
                for o in self.outputs.values()
                if o.device_id == device
            ]
            if not offered:
                raise ValueRejected(f"no output {name!r}: no device {device!r} with outputs")
            raise ValueRejected(f"no output {name!r}; {device} has {describe_outputs(offered)}")
        return output

    # -- standing claims ---------------------------------------------------

    def _checked(self, output: Output, claim: Claim) -> Claim:
        value = output.spec.check(claim.value, output.name)
        if claim.owner in EXPIRING:
            if claim.expires_mono_s is None:
                raise ValueRejected(f"an {claim.owner.name.lower()} claim always has an expiry")
            if claim.expires_mono_s - self._clock() > MAX_OVERRIDE_S:
                raise ValueRejected(
                    f"an override may last at most {MAX_OVERRIDE_S / 3600:.0f} h"
                )
        return replace(claim, value=value)

    async def claim(self, name: str, claim: Claim) -> Claim | None:
        """Set a claim; if it wins, write it now and wait for the confirmation.

        A failed write withdraws the claim and raises; the device is then
        brought back to whoever wins. Returns the winning claim, which may
        belong to a higher owner (the new claim then takes effect when that
        one releases)."""
        output = self.output(name)
        claim = self._checked(output, claim)
        before = output.winner()
        replaced = output.claims.get(claim.owner)
        output.claims[claim.owner] = claim
        if output.winner() is not claim:
            return output.winner()  # held by a higher owner
        # Said now, as it happens: a trip during the write announces itself.
        self._announce(output, before, claim, "claimed")
        # Loops re-claim every period: an unchanged value costs no write.
        force = claim.owner > Owner.LOOP or not output.spec.continuous
        output.force_write |= force
        try:
            await output.door.execute(
                f"write {name}",
                OP_PRIORITY[claim.owner],
                self._write_winner(output),
                key=f"sync:{name}",
                batch=self._batch(output),
            )
        except BaseException:
            if output.claims.get(claim.owner) is claim:  # the claim did not take
                if replaced is None:
                    del output.claims[claim.owner]
                else:
                    output.claims[claim.owner] = replaced
                if output.winner() is not claim:
                    self._announce(output, claim, output.winner(), "write failed")
            self._sync(output, force=True)  # a write in several steps may half happen
            raise
        return output.winner()

    def claim_in_background(
        self,
        name: str,
        claim: Claim,
        reason: str,
        on_done: WriteDone | None = None,
        force: bool = True,
    ) -> Claim | None:
        """Set a claim without waiting for the device: the write is queued on
        the device's supervisor and retried until it holds (interlocks use
        this: a trip must never wait on, or fail with, one slow device).
        `on_done` hears how the write ends: a first failure, and its success.
        `force=False`: skip the write if the device already has this value
        (a loop re-claiming each period)."""
        output = self.output(name)
        claim = self._checked(output, claim)
        if on_done is not None:
            output.watchers.append(_Watcher(on_done))
        before = output.winner()
        output.claims[claim.owner] = claim
        after = output.winner()
        if after is not claim:
            return after  # held by a higher owner: the device stays as it is
        self._announce(output, before, after, reason)
        self._sync(output, force=force)
        return after

    def release(self, name: str, owner: Owner, reason: str) -> Claim | None:
        """Withdraw an owner's claim; the next owner's value is written in the background."""
        output = self.output(name)
        before = output.winner()
        ended = output.claims.pop(owner, None)
        if ended is None:
            return before
        if owner is Owner.INTERLOCK and not output.spec.continuous:
            self._drop_less_safe(output, ended, reason)
        after = output.winner()
        if after is before:
            return after  # a lower claim ended: nothing changes on the device
        self._announce(output, before, after, reason)
        self._sync(output, force=True)
        return after

    def _drop_less_safe(self, output: Output, ended: Claim, reason: str) -> None:
        """An interlock let go of a switched output: lower claims that would
        switch it back on or reopen it end too; someone acts on purpose."""
        spec = output.spec
        for owner, claim in list(output.claims.items()):
            if spec.rank(claim.value) < spec.rank(ended.value):
                del output.claims[owner]
                self._events.emit(
                    "output_owner_changed",
                    Severity.INFO,
                    output.device_id,
                    f"{output.name}: {owner.name.lower()} claim {claim.value} ended with "
                    f"the interlock ({reason}); nothing is switched back by itself",
                    {
                        "output": output.name,
                        "from": owner.name.lower(),
                        "to": "none",
                        "value": ended.value,
                        "by": claim.by,
                        "reason": reason,
                    },
                )

    # -- momentary actions on discrete outputs -----------------------------

    async def act(self, name: str, value: object, owner: Owner, by: str) -> OutputValue:
        """Set a discrete output now without a standing claim ("outlet 3 on").

        Refused while a higher owner holds it; ends the standing claims of
        `owner` and of lower owners (acting at the pod replaces them)."""
        output = self.output(name)
        if output.spec.continuous:
            raise ValueRejected(f"{name} is continuous: use an override")
        state = output.spec.check(value, name)
        self._refuse_if_held(output, owner)

        async def operation(driver: Any) -> OutputValue:
            self._refuse_if_held(output, owner)  # a trip may have come first
            self._end_claims_up_to(output, owner, f"{state} by {by}")
            output.written = None  # unknown until confirmed
            await output.spec.write(driver, state, output.index)
            output.written, output.handed_back = state, False
            output.written_mono_s = self._clock()
            return state

        result = await output.door.execute(f"{state} {name}", OP_PRIORITY[owner], operation)
        output.door.poll_now()  # the store shows the new state at once
        return result

    async def pulse(self, name: str, operation_name: str, owner: Owner, by: str) -> str:
        """A one-shot operation (outlet reboot, power cycle): refused while a
        higher owner holds the output, sent once, never retried."""
        output = self.output(name)
        spec = output.spec
        pulse_op = spec.pulse
        if pulse_op is None:
            raise ValueRejected(f"{name} has no one-shot operations")
        which = spec.check_pulse(operation_name, name)
        self._refuse_if_held(output, owner)

        async def operation(driver: Any) -> str:
            self._refuse_if_held(output, owner)
            self._end_claims_up_to(output, owner, f"{which} by {by}")
            output.written = None
            await pulse_op(driver, which, output.index)
            output.written = spec.states[0]  # a reboot or a cycle ends powered
            output.written_mono_s = self._clock()
            return which

        result = await output.door.execute(f"{which} {name}", OP_PRIORITY[owner], operation)
        output.door.poll_now()
        return result

    def _refuse_if_held(self, output: Output, owner: Owner) -> None:
        holder = output.held_above(owner)
        if holder is not None:
            raise OutputHeld(_held_message(output, holder), holder)

    def _end_claims_up_to(self, output: Output, owner: Owner, why: str) -> None:
        for ended in [o for o in output.claims if o <= owner]:
            before = output.winner()
            del output.claims[ended]
            self._announce(output, before, output.winner(), why)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """At daemon start: bring every output to its winner, and hand the ones
        nobody claims back to the device's own control. Overrides live in
        memory, so one that was running when the daemon stopped ends here."""
        for output in self.outputs.values():
            if output.claims or output.spec.hand_back is not None:
                self._sync(output, force=True)

    def device_connected(self, device_id: str) -> None:
        """A device (re)connected: it may have restarted and lost what it was
        told (a CDU power cycle reopens every rack; a BMC reset drops its power
        cap), so every claimed output of it is written again, before its first
        poll and in the order of the owners' priority."""
        for output in self.outputs.values():
            if output.device_id == device_id and output.claims:
                self._sync(output, force=True)

    def check_feedback(self, read: Callable[[str, str], StoredPoint | None]) -> None:
        """Write a held discrete state again when the device no longer shows it
        (two feedback readings in a row, newer than the confirmed write), and
        say so: an outlet switched on at the PDU's panel while an interlock
        holds it off, a rack valve reopened by the CDU."""
        for output in self.outputs.values():
            spec, winner = output.spec, output.winner()
            if (
                winner is None
                or spec.observe is None
                or winner.value in spec.unobservable
                or output.written != winner.value
                or output.retry_at_s is not None
                or output.force_write
            ):
                output.contradicted_mono_s = None
                continue
            point = spec.feedback(output.index)
            reading = read(output.device_id, point) if point is not None else None
            if (
                reading is None
                or reading.quality is not Quality.GOOD
                or reading.mono_s <= output.written_mono_s
            ):
                continue
            shown = spec.observe(reading.value, output.index)
            if shown is None or shown == winner.value:
                output.contradicted_mono_s = None
                continue
            if output.contradicted_mono_s is None:
                output.contradicted_mono_s = reading.mono_s
                continue
            if reading.mono_s == output.contradicted_mono_s:
                continue  # the same reading again: wait for the next poll
            output.contradicted_mono_s = None
            # Only towards safety: an outlet the PDU's breaker switched off is
            # not switched on again by itself (nothing is re-energised by itself).
            rewrite = spec.rank(winner.value) >= spec.rank(shown)
            held = f"held {winner.value} by {winner.by} ({winner.owner.name.lower()})"
            interlock = winner.owner is Owner.INTERLOCK
            if rewrite:
                severity = Severity.CRITICAL if interlock else Severity.WARNING
                message = f"{output.name}: the device shows {shown}, {held}; writing it again"
            else:
                severity = Severity.WARNING
                message = f"{output.name}: the device shows {shown}, {held}; left {shown}"
            self._events.emit(
                "output_mismatch",
                severity,
                output.device_id,
                message,
                {
                    "output": output.name,
                    "shown": shown,
                    "value": winner.value,
                    "owner": winner.owner.name.lower(),
                    "by": winner.by,
                    "written_again": rewrite,
                },
            )
            if rewrite:
                self._sync(output, force=True)
            else:
                output.written = shown

    def tick(self) -> None:
        """Expire overrides and fleet claims; retry failed background writes."""
        now = self._clock()
        for output in self.outputs.values():
            # Most outputs (~1,500 on a full pod) have no claim and no retry: next.
            if not output.claims and output.retry_at_s is None:
                continue
            for owner in EXPIRING:
                claim = output.claims.get(owner)
                expires = claim.expires_mono_s if claim is not None else None
                if expires is not None and now >= expires:
                    self.release(output.name, owner, f"{owner.name.lower()} expired")
            if output.retry_at_s is not None and now >= output.retry_at_s:
                output.retry_at_s = None
                self._sync(output, force=True)

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        result: dict[str, object] = {}
        for name, output in sorted(self.outputs.items()):
            winner = output.winner()
            result[name] = {
                "owner": winner.owner.name.lower() if winner else None,
                "value": winner.value if winner else None,
                "written": output.written,
                "unit": output.spec.unit,
                "values": output.spec.describe_values(),
                "claims": [c.as_json(now) for _, c in sorted(output.claims.items(), reverse=True)],
            }
        return result

    # -- writing -----------------------------------------------------------

    def _write_winner(self, output: Output) -> OperationFn[Any, Claim | None]:
        """The operation that brings the device to whoever wins when it runs."""

        async def write(driver: Any) -> Claim | None:
            winner, step = self._plan(output)
            spec = output.spec
            if step is _Step.HAND_BACK and spec.hand_back is not None:
                await spec.hand_back(driver, output.index)
                output.handed_back = True
            elif step is _Step.WRITE and winner is not None:
                try:
                    await spec.write(driver, winner.value, output.index)
                except BaseException:
                    output.force_write = True
                    raise
                self._committed(output, winner)
            return winner

        return write

    async def _write_batch(self, driver: Any, outputs: Sequence[Output]) -> list[Claim | None]:
        """Bring several outputs of one device and spec to their winners in one
        write (spec.write_many): each is planned as `_write_winner` would, then
        all are written at once, then each is committed."""
        write_many = outputs[0].spec.write_many if outputs else None
        if write_many is None:
            raise RuntimeError("a batch of outputs without write_many")
        plans = [(output, *self._plan(output)) for output in outputs]
        writes = [(o, w) for o, w, step in plans if step is _Step.WRITE and w is not None]
        try:
            for output, _, step in plans:
                hand_back = output.spec.hand_back
                if step is _Step.HAND_BACK and hand_back is not None:
                    await hand_back(driver, output.index)
                    output.handed_back = True
            if writes:
                await write_many(driver, [(w.value, o.index) for o, w in writes])
        except BaseException:
            for output, _ in writes:
                output.force_write = True
            raise
        for output, winner in writes:
            self._committed(output, winner)
        return [winner for _, winner, _ in plans]

    def _plan(self, output: Output) -> tuple[Claim | None, _Step]:
        """What a write of `output` does, decided as it runs (the winner now);
        what it will write reads as unknown until confirmed."""
        winner = output.winner()
        force, output.force_write = output.force_write, False
        if winner is None:
            if output.spec.hand_back is not None and (force or not output.handed_back):
                output.written = None
                return None, _Step.HAND_BACK
            return None, _Step.NOTHING
        if force or output.handed_back or winner.value != output.written:
            output.written = None  # unknown until confirmed: a step may half happen
            return winner, _Step.WRITE
        return winner, _Step.NOTHING

    def _committed(self, output: Output, winner: Claim) -> None:
        output.written, output.handed_back = winner.value, False
        output.written_mono_s = self._clock()

    def _batch(self, output: Output) -> Batch[Any] | None:
        """Writes of one spec's outputs of one device may go together."""
        if output.spec.write_many is None:
            return None
        return Batch(f"write:{output.device_id}:{output.spec.name}", output, self._write_batch)

    def _sync(self, output: Output, force: bool) -> None:
        """Queue "bring the device to the winner" in the background, retried
        from the tick with backoff until it holds."""
        output.force_write |= force
        winner = output.winner()
        priority = OP_PRIORITY[winner.owner] if winner is not None else OpPriority.LOOP
        future = output.door.submit(
            f"sync {output.name}",
            priority,
            self._write_winner(output),
            key=f"sync:{output.name}",
            background=True,
            batch=self._batch(output),
        )
        future.add_done_callback(functools.partial(self._synced, output))

    def _synced(self, output: Output, done: asyncio.Future[Claim | None]) -> None:
        if done.cancelled():
            return  # the daemon is stopping
        error = done.exception()
        if error is not None:
            # Refused, lost or timed out: try again from the tick.
            output.force_write = True
            output.retry_at_s = self._clock() + output.backoff.next_delay_s()
            for watcher in output.watchers:
                if not watcher.failed:
                    watcher.failed = True
                    watcher.told(error)
            return
        output.backoff.reset()
        watchers, output.watchers = output.watchers, []
        for watcher in watchers:
            watcher.told(None)

    def _announce(
        self, output: Output, before: Claim | None, after: Claim | None, why: str
    ) -> None:
        if before is not None and after is not None and before.owner is after.owner:
            # A loop moves its output every period: only owners above it make events.
            if before.value != after.value and after.owner > Owner.LOOP:
                self._events.emit(
                    "output_changed",
                    Severity.INFO,
                    output.device_id,
                    f"{output.name} = {after.value} ({after.owner.name.lower()}, by {after.by})",
                    {
                        "output": output.name,
                        "value": after.value,
                        "owner": after.owner.name.lower(),
                    },
                )
            return
        if before is None and after is None:
            return
        frm = before.owner.name.lower() if before else "none"
        to = after.owner.name.lower() if after else "none"
        value = after.value if after else output.written
        message = f"{output.name}: owner {frm} -> {to} ({why}); value {value}"
        if after is None:
            back = output.spec.hand_back is not None
            message += " (back to the device's own control)" if back else " stays"
        self._events.emit(
            "output_owner_changed",
            Severity.INFO,
            output.device_id,
            message,
            {
                "output": output.name,
                "from": frm,
                "to": to,
                "value": value,
                "by": after.by if after else None,
                "reason": why,
            },
        )
