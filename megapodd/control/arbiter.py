"""OutputArbiter: one owner decides each actuator value (invariant 1).

Priority: interlock > technician override (always with an expiry) > control
loop > configured default. Every change of owner is an event. Writes are the
drivers' verified writes (read back, invariant 4); a background write that
fails is retried with backoff from the control tick and raised as an event.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers.errors import ValueRejected
from megapodd.backoff import Backoff
from megapodd.events import EventBus, Severity

# Writes one value and confirms it (the driver reads it back).
Writer = Callable[[float], Awaitable[None]]
# Hands the actuator back to the device's own control when nobody claims it.
Unowned = Callable[[], Awaitable[None]]
# Runs a write on the device's own link, between polls (DeviceSupervisor.submit).
Submit = Callable[[str, Callable[[], Awaitable[None]]], None]

MAX_OVERRIDE_S = 8 * 3600.0


class Owner(enum.IntEnum):
    DEFAULT = 0
    LOOP = 1
    OVERRIDE = 2
    INTERLOCK = 3


@dataclass(frozen=True, slots=True)
class Claim:
    owner: Owner
    value: float
    by: str
    expires_mono_s: float | None = None

    def as_json(self, now_mono_s: float) -> dict[str, object]:
        expires_in = None if self.expires_mono_s is None else self.expires_mono_s - now_mono_s
        return {
            "owner": self.owner.name.lower(),
            "value": self.value,
            "by": self.by,
            "expires_in_s": None if expires_in is None else round(max(0.0, expires_in), 1),
        }


@dataclass(slots=True)
class Output:
    name: str  # "<device>.<output>", e.g. "cdu1.pump_speed_pct"
    device_id: str
    writer: Writer
    submit: Submit
    on_unowned: Unowned | None = None
    claims: dict[Owner, Claim] = field(default_factory=dict)
    written: float | None = None  # last value confirmed on the device
    handed_back: bool = False  # on_unowned ran: the device controls itself
    retry_at_s: float | None = None  # a background write failed: try again then
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, max_s=30.0))

    def winner(self) -> Claim | None:
        return self.claims[max(self.claims)] if self.claims else None


class OutputArbiter:
    def __init__(self, events: EventBus, clock: Callable[[], float]) -> None:
        self._events = events
        self._clock = clock
        self.outputs: dict[str, Output] = {}

    def add_output(
        self,
        name: str,
        device_id: str,
        writer: Writer,
        submit: Submit,
        default: float | None,
        on_unowned: Unowned | None = None,
    ) -> None:
        output = Output(name, device_id, writer, submit, on_unowned)
        if default is not None:
            output.claims[Owner.DEFAULT] = Claim(Owner.DEFAULT, default, "config")
        self.outputs[name] = output

    async def claim(self, name: str, claim: Claim) -> Claim | None:
        """Set a claim; if it wins, write it now and wait for the confirmation.

        A failed write withdraws the claim (nothing was changed) and raises.
        Returns the winning claim, which may belong to a higher owner."""
        output = self.outputs[name]
        if claim.owner is Owner.OVERRIDE:
            if claim.expires_mono_s is None:
                raise ValueError("an override always has an expiry")
            if claim.expires_mono_s - self._clock() > MAX_OVERRIDE_S:
                raise ValueError(f"an override may last at most {MAX_OVERRIDE_S / 3600:.0f} h")
        before = output.winner()
        replaced = output.claims.get(claim.owner)
        output.claims[claim.owner] = claim
        after = output.winner()
        if after is not claim:
            return after  # held by a higher owner; takes effect when that releases
        try:
            await output.writer(claim.value)
        except BaseException as exc:
            # The claim did not take.
            if output.claims.get(claim.owner) is claim:  # not replaced meanwhile
                if replaced is None:
                    del output.claims[claim.owner]
                else:
                    output.claims[claim.owner] = replaced
            if not isinstance(exc, ValueRejected):
                # Something may have reached the device: a write in several
                # steps (pump speed, then mode) can half happen. Bring the
                # device back to whoever wins now.
                output.written = None
                self._sync_in_background(output)
            raise
        if output.winner() is not claim:
            # Someone else (an interlock trip, an expiry) won while we wrote:
            # the device must follow them, not us.
            output.written = None
            self._sync_in_background(output)
            return output.winner()
        output.written = claim.value
        output.handed_back = False
        output.retry_at_s = None
        self._announce(output, before, after, "claimed")
        return after

    def claim_in_background(self, name: str, claim: Claim, reason: str) -> Claim | None:
        """Set a claim without waiting for the device: the write is queued on
        the device's link and retried until it holds (interlocks use this: a
        trip must never wait on, or fail with, one slow device)."""
        if claim.owner is Owner.OVERRIDE:
            raise ValueError("overrides are claimed with claim(), which confirms them")
        output = self.outputs[name]
        before = output.winner()
        output.claims[claim.owner] = claim
        after = output.winner()
        self._announce(output, before, after, reason)
        self._sync_in_background(output)
        return after

    def release(self, name: str, owner: Owner, reason: str) -> Claim | None:
        """Withdraw an owner's claim; the next owner's value is written in the background."""
        output = self.outputs[name]
        before = output.winner()
        if output.claims.pop(owner, None) is None:
            return before
        after = output.winner()
        self._announce(output, before, after, reason)
        self._sync_in_background(output)
        return after

    def start(self) -> None:
        """At daemon start: bring every output to its winner, and hand the ones
        nobody claims back to the device's own control. Overrides live in
        memory, so one that was running when the daemon stopped ends here."""
        for output in self.outputs.values():
            self._sync_in_background(output)

    def tick(self) -> None:
        """Expire overrides and retry failed background writes (from the control tick)."""
        now = self._clock()
        for output in self.outputs.values():
            override = output.claims.get(Owner.OVERRIDE)
            expires = override.expires_mono_s if override is not None else None
            if expires is not None and now >= expires:
                self.release(output.name, Owner.OVERRIDE, "override expired")
            if output.retry_at_s is not None and now >= output.retry_at_s:
                output.retry_at_s = None
                self._sync_in_background(output)

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        result: dict[str, object] = {}
        for name, output in sorted(self.outputs.items()):
            winner = output.winner()
            result[name] = {
                "owner": winner.owner.name.lower() if winner else None,
                "value": winner.value if winner else None,
                "written": output.written,
                "claims": [c.as_json(now) for _, c in sorted(output.claims.items(), reverse=True)],
            }
        return result

    def _sync_in_background(self, output: Output) -> None:
        """Bring the device to whatever the winner is when the write runs (not
        when it was queued), so a queued write can never undo a newer claim."""

        async def sync() -> None:
            done = False
            try:
                winner = output.winner()
                if winner is not None:
                    if winner.value != output.written or output.handed_back:
                        await output.writer(winner.value)
                        output.written, output.handed_back = winner.value, False
                elif output.on_unowned is not None and not output.handed_back:
                    await output.on_unowned()
                    output.written, output.handed_back = None, True
                done = True
                output.backoff.reset()
            finally:
                if not done:  # refused, lost or timed out: try again from the tick
                    output.retry_at_s = self._clock() + output.backoff.next_delay_s()

        output.submit(f"sync:{output.name}", sync)

    def _announce(
        self, output: Output, before: Claim | None, after: Claim | None, why: str
    ) -> None:
        if before is not None and after is not None and before.owner is after.owner:
            if before.value != after.value:
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
        frm = before.owner.name.lower() if before else "none"
        to = after.owner.name.lower() if after else "none"
        value = after.value if after else output.written
        message = f"{output.name}: owner {frm} -> {to} ({why}); value {value}"
        if after is None:
            message += " (back to the device's own control)" if output.on_unowned else " stays"
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
