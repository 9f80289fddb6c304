"""OutputSpec: everything the daemon knows about one kind of actuator.

Config validation, range checks, "the safer value wins", the arbiter, the
safety engine, technician and fleet commands and the control loops all read
this one declaration; a new actuator is one entry in `catalog.py`.

A continuous output takes a number in [low, high] and has a safe direction
(more cooling is safer for pumps, valves and fans; less power for a power
limit). A discrete output takes one of its states, ranked from least to most
safe (an outlet `on` < `off`; a rack's isolation `open` < `closed`); states of
equal rank (the lead pump's `1` and `2`) are neither safer than the other.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from drivers.base import DeviceKind
from drivers.errors import ValueRejected

OutputValue = float | str
D = TypeVar("D")

# Writes one value to one instance of the output and confirms it (read back or
# protocol confirmation). Runs on the device's supervisor as one atomic operation.
Write = Callable[[D, OutputValue, int | None], Awaitable[None]]
# Writes several instances of the output at once, each (value, index), and
# confirms them all; raises if any did not get there. One supervisor operation.
WriteMany = Callable[[D, Sequence[tuple[OutputValue, int | None]]], Awaitable[None]]
# Gives the actuator back to the device's own control when nobody claims it.
HandBack = Callable[[D, int | None], Awaitable[None]]
# A one-shot operation (an outlet reboot, a power cycle): not a state to hold.
Pulse = Callable[[D, str, int | None], Awaitable[None]]
# The state a discrete output's feedback reading shows (None: it cannot tell).
Observe = Callable[[object, int | None], str | None]


class SafeDirection(enum.StrEnum):
    HIGHER = "higher"  # more is safer: pump speed, valve opening, fan duty
    LOWER = "lower"  # less is safer: a power limit


@dataclass(frozen=True, slots=True)
class OutputSpec(Generic[D]):
    """One kind of actuator of one device family.

    `name` is the output's name on a device; an indexed output (one per outlet,
    one per rack) has `{n}` in it, e.g. "outlet_{n}".
    """

    name: str
    kind: DeviceKind
    description: str
    write: Write[D]
    confirm: str  # how a write is confirmed, for people (docs, megapodctl outputs)
    unit: str = ""
    # Continuous outputs:
    low: float | None = None
    high: float | None = None
    safe_direction: SafeDirection | None = None
    # Discrete outputs: states from least to most safe; equal ranks in `ranks`.
    states: tuple[str, ...] = ()
    ranks: tuple[int, ...] = ()
    # What a loop drives on failsafe (None: a loop must name its own).
    failsafe: OutputValue | None = None
    # Largest normal move per second (loops); moves towards safety are not limited.
    slew_per_s: float | None = None
    # With no owner left: give the device its own control back (None: it keeps
    # the last value; discrete outputs always stay as they were left).
    hand_back: HandBack[D] | None = None
    # One-shot operations besides the states, e.g. ("reboot",).
    pulses: tuple[str, ...] = ()
    pulse: Pulse[D] | None = None
    # The point that shows the actuator's actual state ("{n}" as in name), if any.
    feedback_point: str | None = None
    # Discrete outputs: the state the feedback point shows, so that a held
    # state the device lost (a restart, a button pressed) is written again;
    # `unobservable` states have no reading of their own (a soft shutdown
    # reads "on" until the OS is done).
    observe: Observe | None = None
    unobservable: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)  # "1" -> "pump1" and the like
    # Indexed outputs: writes of several instances of one device in one go (the
    # PDU's outlets in one SET); the arbiter batches queued writes of one
    # priority through it (megapodd/supervisor.py, Batch).
    write_many: WriteMany[D] | None = None

    def __post_init__(self) -> None:
        if self.continuous == bool(self.states):
            raise ValueError(f"{self.name}: give either low/high or states")
        if self.continuous and self.safe_direction is None:
            raise ValueError(f"{self.name}: a continuous output needs a safe direction")
        if self.states and len(self.ranks) != len(self.states):
            raise ValueError(f"{self.name}: one rank per state")
        if bool(self.pulses) != (self.pulse is not None):
            raise ValueError(f"{self.name}: pulses need a pulse operation")

    @property
    def continuous(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def indexed(self) -> bool:
        return "{n}" in self.name

    def instance_name(self, index: int | None) -> str:
        return self.name.replace("{n}", str(index)) if index is not None else self.name

    def feedback(self, index: int | None) -> str | None:
        if self.feedback_point is None:
            return None
        return self.feedback_point.format(n=index) if index is not None else self.feedback_point

    def describe_values(self) -> str:
        if self.continuous:
            return f"{self.low:g}–{self.high:g}{' ' + self.unit if self.unit else ''}"
        return " | ".join(self.states)

    def check(self, value: object, label: str | None = None) -> OutputValue:
        """The value in this output's terms, or ValueRejected naming what it accepts."""
        label = label or self.name
        low, high = self.low, self.high
        if low is not None and high is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueRejected(
                    f"{label} takes a number {self.describe_values()}; got {value!r}"
                )
            number = float(value)
            if not math.isfinite(number) or not low <= number <= high:
                raise ValueRejected(f"{label} {value!r} is outside {self.describe_values()}")
            return number
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if isinstance(value, bool) or text is None:
            raise ValueRejected(f"{label} takes one of {self.describe_values()}; got {value!r}")
        text = self.aliases.get(text, text)
        if text not in self.states:
            raise ValueRejected(f"{label} takes one of {self.describe_values()}; got {value!r}")
        return text

    def check_pulse(self, operation: str, label: str | None = None) -> str:
        if operation not in self.pulses:
            choices = ", ".join((*self.states, *self.pulses))
            raise ValueRejected(f"{label or self.name}: {operation!r} is not one of {choices}")
        return operation

    def rank(self, value: OutputValue) -> float:
        """How safe a value is: higher is safer (for comparisons only)."""
        if self.continuous:
            number = float(value)
            return number if self.safe_direction is SafeDirection.HIGHER else -number
        return float(self.ranks[self.states.index(str(value))])

    def safer(self, a: OutputValue, b: OutputValue) -> OutputValue:
        """The safer of two values; `a` when neither is safer."""
        return b if self.rank(b) > self.rank(a) else a

    def contradicts(self, a: OutputValue, b: OutputValue) -> bool:
        """Two different discrete states of which neither is safer (lead pump 1 vs 2)."""
        return not self.continuous and a != b and self.rank(a) == self.rank(b)

    def towards_safety(self, current: OutputValue | None, new: OutputValue) -> bool:
        """Whether moving from `current` to `new` makes things safer (never slew-limited)."""
        return current is None or self.rank(new) >= self.rank(current)
