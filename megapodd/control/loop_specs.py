"""`[[loop]]` and `[[zone]]` compiled against the pod: every input resolved to
devices and points, every output to an OutputSpec, every default filled in
from that spec (range, slew, failsafe). A loop the pod cannot run is a config
error that names the loop and the key."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from megapodd.outputs.catalog import OutputInstance, device_outputs
from megapodd.outputs.spec import OutputSpec
from megapodd.safety.rules import static_points
from megapodd.selectors import (
    DeviceTable,
    SelectorError,
    check_pattern,
    is_glob,
    parse_selector,
    point_matches,
)

if TYPE_CHECKING:
    from megapodd.config import Config, LoopConfig, LoopInput, ZoneConfig

# A loop's input is stale after this many polls of its slowest group without a good reading.
STALE_POLLS = 3


class LoopError(ValueError):
    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Source:
    """Points read as one value: `aggregate` of `pattern` on `devices`."""

    devices: tuple[str, ...]
    pattern: str
    aggregate: str | None  # None: exactly one point

    def describe(self) -> str:
        where = ", ".join(self.devices) if len(self.devices) <= 3 else (
            f"{len(self.devices)} devices"
        )
        if self.aggregate is None:
            return f"{self.devices[0]}.{self.pattern}"
        return f"{self.aggregate} {self.pattern} on {where}"


@dataclass(frozen=True, slots=True)
class _Wanted:
    """An input as the config states it, before it is resolved."""

    device: str | None
    devices: str | list[str] | None
    point: str
    aggregate: str | None

    @classmethod
    def of(cls, source: str | LoopInput) -> _Wanted:
        if isinstance(source, str):  # "device.point"
            device, _, point = source.partition(".")
            return cls(device, None, point, None)
        return cls(source.device, source.devices, source.point, source.aggregate)


@dataclass(frozen=True, slots=True)
class FeedForward:
    source: Source
    gain: float
    bias: float
    on_bad: str


@dataclass(frozen=True, slots=True)
class LoopSpec:
    id: str  # "supply-temp", or "fan-zone@r1s02" for one of a per-server loop
    config: LoopConfig
    output: str
    spec: OutputSpec[Any]
    zone: str | None
    source: Source
    feed_forward: FeedForward | None
    boost: Source | None
    boost_below: float | None
    stale_after_s: float
    out_min: float
    out_max: float
    slew_up_per_s: float | None
    slew_down_per_s: float | None
    failsafe: float


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    id: str
    output: str
    spec: OutputSpec[Any]
    floor: float
    ceiling: float
    members: tuple[str, ...]
    slew_up_per_s: float | None
    slew_down_per_s: float | None
    failsafe: float


def _poll_periods(config: Config) -> dict[str, float]:
    """The slowest poll period of each device (what staleness is counted in)."""
    periods: dict[str, float] = {}
    for cdu in config.cdu:
        periods[cdu.id] = cdu.poll_s * 5.0  # the settings block is read 5× slower
    for pdu in config.pdu:
        periods[pdu.id] = pdu.fast_poll_s
    for bmc in config.bmc:
        periods[bmc.id] = max(bmc.poll_s, bmc.slow_poll_s)
    return periods


class _Compiler:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.table: DeviceTable = config.device_table()
        self.outputs: dict[str, OutputInstance] = {}
        outlets = {p.id: p.outlets for p in config.pdu}
        for device in self.table.devices.values():
            for output in device_outputs(
                device.id, device.kind, outlets=outlets.get(device.id, 0), racks=config.racks()
            ):
                self.outputs[output.name] = output
        self.outlets = outlets
        self.periods = _poll_periods(config)
        self.problems: list[str] = []

    def compile(self) -> tuple[list[LoopSpec], list[ZoneSpec]]:
        loops: list[LoopSpec] = []
        for index, loop in enumerate(self.config.loop):
            loops += self._loop(f"loop.{index}", loop)
        zones = self._zones(loops)
        if self.problems:
            raise LoopError(self.problems)
        return loops, zones

    def _loop(self, where: str, loop: LoopConfig) -> list[LoopSpec]:
        if loop.scope == "each":
            assert loop.devices is not None  # noqa: S101 - the config model requires it
            try:
                devices = self.table.select(parse_selector(loop.devices))
            except SelectorError as exc:
                self.problems.append(f"{where}.devices: {exc}")
                return []
            if not devices:
                self.problems.append(f"{where}.devices: {loop.devices!r} selects no device")
                return []
            specs = [self._one(where, loop, f"{loop.id}@{d}", d) for d in devices]
        else:
            specs = [self._one(where, loop, loop.id, None)]
        return [s for s in specs if s is not None]

    def _one(
        self, where: str, loop: LoopConfig, loop_id: str, device: str | None
    ) -> LoopSpec | None:
        problems = len(self.problems)
        output_name = f"{device}.{loop.output}" if device is not None else loop.output
        output = self.outputs.get(output_name)
        if output is None:
            self.problems.append(f"{where}.output: no output {output_name!r}")
            return None
        spec = output.spec
        if not spec.continuous or spec.low is None or spec.high is None:
            self.problems.append(f"{where}.output: {output_name} is not a continuous output")
            return None
        source = self._source(f"{where}.input", loop.input, device)
        feed_forward = None
        if loop.feed_forward is not None:
            ff_source = self._source(f"{where}.feed_forward.input", loop.feed_forward.input, device)
            if ff_source is not None:
                feed_forward = FeedForward(
                    ff_source, loop.feed_forward.gain, loop.feed_forward.bias,
                    loop.feed_forward.on_bad,
                )  # fmt: skip
        boost = None
        if loop.boost is not None:
            on = [device] if device is not None else list(source.devices if source else [])
            boost = self._source(
                f"{where}.boost.point", _Wanted(None, on, loop.boost.point, "min"), None
            )
        out_min = spec.low if loop.out_min is None else loop.out_min
        out_max = spec.high if loop.out_max is None else loop.out_max
        for key, value in (("out_min", out_min), ("out_max", out_max)):
            if not spec.low <= value <= spec.high:
                self.problems.append(
                    f"{where}.{key}: {value:g} is outside {output_name}'s {spec.describe_values()}"
                )
        if out_min >= out_max:
            self.problems.append(f"{where}.out_min: {out_min:g} is not below out_max {out_max:g}")
        failsafe = loop.failsafe if loop.failsafe is not None else spec.failsafe
        if not isinstance(failsafe, int | float):
            self.problems.append(
                f"{where}.failsafe: {output_name} has no failsafe of its own; give one"
            )
            return None
        if not spec.low <= failsafe <= spec.high:
            self.problems.append(
                f"{where}.failsafe: {failsafe:g} is outside {output_name}'s "
                f"{spec.describe_values()}"
            )
        if loop.controller == "curve":
            self._check_curve(where, loop)
        if source is None or len(self.problems) > problems:
            return None
        stale_after_s = loop.stale_after_s
        if stale_after_s is None:
            slowest = max(self.periods.get(d, 1.0) for d in source.devices)
            stale_after_s = STALE_POLLS * slowest
        slew = spec.slew_per_s
        return LoopSpec(
            id=loop_id,
            config=loop,
            output=output_name,
            spec=spec,
            zone=loop.zone,
            source=source,
            feed_forward=feed_forward,
            boost=boost,
            boost_below=loop.boost.below if loop.boost is not None else None,
            stale_after_s=stale_after_s,
            out_min=float(out_min),
            out_max=float(out_max),
            slew_up_per_s=loop.slew_up_per_s if loop.slew_up_per_s is not None else slew,
            slew_down_per_s=loop.slew_down_per_s if loop.slew_down_per_s is not None else slew,
            failsafe=float(failsafe),
        )

    def _check_curve(self, where: str, loop: LoopConfig) -> None:
        xs = [x for x, _ in loop.curve]
        ys = [y for _, y in loop.curve]
        if any(b <= a for a, b in itertools.pairwise(xs)):
            self.problems.append(f"{where}.curve: inputs must rise strictly")
        if any(b < a for a, b in itertools.pairwise(ys)):
            self.problems.append(f"{where}.curve: outputs must not fall as the input rises")

    def _source(
        self, where: str, given: str | LoopInput | _Wanted, device: str | None
    ) -> Source | None:
        source = given if isinstance(given, _Wanted) else _Wanted.of(given)
        try:
            check_pattern(source.point)
        except SelectorError as exc:
            self.problems.append(f"{where}: {exc}")
            return None
        try:
            if device is not None and source.device is None and source.devices is None:
                devices = [device]
            elif source.device is not None:
                devices = self.table.select(parse_selector([source.device]))
            elif source.devices is not None:
                devices = self.table.select(parse_selector(source.devices))
            else:
                self.problems.append(
                    f"{where}: name a device or devices (only a loop with scope 'each' "
                    "reads its own device by default)"
                )
                return None
        except SelectorError as exc:
            self.problems.append(f"{where}: {exc}")
            return None
        if device is not None and source.devices is None and source.device is None:
            devices = [device]
        if not devices:
            self.problems.append(f"{where}: the selector matches no device of this pod")
            return None
        many = len(devices) > 1 or is_glob(source.point)
        if many and source.aggregate is None:
            self.problems.append(
                f"{where}: {source.point!r} on {len(devices)} device(s) needs an aggregate "
                "(max, min, mean or sum)"
            )
            return None
        for dev in devices:
            info = self.table.devices[dev]
            known = static_points(info.kind, self.outlets.get(dev, 0))
            if known is not None and not any(point_matches(source.point, p) for p in known):
                self.problems.append(
                    f"{where}: {dev} ({info.kind.value}) has no point matching {source.point!r}"
                )
                return None
        return Source(tuple(devices), source.point, source.aggregate if many else None)

    def _zones(self, loops: Sequence[LoopSpec]) -> list[ZoneSpec]:
        declared = {z.id: z for z in self.config.zone}
        zones: list[ZoneSpec] = []
        for index, zone in enumerate(self.config.zone):
            compiled = self._zone(f"zone.{index}", zone, loops)
            if compiled is not None:
                zones.append(compiled)
        by_output: dict[str, list[LoopSpec]] = {}
        for loop in loops:
            if loop.zone is not None and loop.zone not in declared:
                self.problems.append(f"loop {loop.id}: zone {loop.zone!r} is not declared")
            by_output.setdefault(loop.output, []).append(loop)
        for output, sharing in by_output.items():
            free = [loop.id for loop in sharing if loop.zone is None]
            if len(sharing) > 1 and free:
                self.problems.append(
                    f"loops {', '.join(loop.id for loop in sharing)} all drive {output}: "
                    "put them in one [[zone]] (the largest demand wins)"
                )
        return zones

    def _zone(self, where: str, zone: ZoneConfig, loops: Sequence[LoopSpec]) -> ZoneSpec | None:
        output = self.outputs.get(zone.output)
        if output is None or not output.spec.continuous:
            self.problems.append(f"{where}.output: no continuous output {zone.output!r}")
            return None
        members = [loop for loop in loops if loop.zone == zone.id]
        if not members:
            self.problems.append(f"{where}: no loop is in zone {zone.id!r}")
            return None
        wrong = [loop.id for loop in members if loop.output != zone.output]
        if wrong:
            self.problems.append(
                f"{where}: loops {', '.join(wrong)} are in zone {zone.id!r} "
                "but drive another output"
            )
            return None
        spec = output.spec
        low, high = spec.low, spec.high
        if low is None or high is None:  # checked above; for the type checker
            return None
        floor = low if zone.floor is None else zone.floor
        ceiling = high if zone.ceiling is None else zone.ceiling
        if not low <= floor <= ceiling <= high:
            self.problems.append(
                f"{where}: floor {floor:g} and ceiling {ceiling:g} must lie within "
                f"{spec.describe_values()}, floor first"
            )
            return None
        first = members[0]
        return ZoneSpec(
            id=zone.id,
            output=zone.output,
            spec=spec,
            floor=float(floor),
            ceiling=float(ceiling),
            members=tuple(loop.id for loop in members),
            slew_up_per_s=first.slew_up_per_s,
            slew_down_per_s=first.slew_down_per_s,
            failsafe=max(loop.failsafe for loop in members),
        )


def compile_loops(config: Config) -> tuple[list[LoopSpec], list[ZoneSpec]]:
    """Every loop (one per device for scope "each") and zone; LoopError listing every problem."""
    return _Compiler(config).compile()

