"""Interlock rules compiled against the pod: what each one watches and, in
order, exactly which outputs it drives to which values.

A rule in the config watches a point, or many (a device selector and a point
glob, combined by an aggregate), and names actions by what they are for
(`isolate_rack`, `server_shutdown`). Compiling turns that into rule
instances (one per rule, or one per device or point with `scope`) whose steps
are concrete outputs and values, checked against the output catalog. So a
rule's whole behaviour can be reviewed (`megapodd --check-config --explain`,
`megapodctl interlocks`) before it ever trips, and the engine at run time only
claims what was decided here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drivers.base import DeviceKind, PointValue
from drivers.errors import ValueRejected
from drivers.modbus import cdu_map
from drivers.snmp import rack_pdu
from megapodd.outputs.catalog import OutputInstance, device_outputs
from megapodd.outputs.spec import OutputValue
from megapodd.selectors import (
    SelectorError,
    check_pattern,
    is_glob,
    parse_selector,
    phase_of_outlet,
    point_matches,
)

if TYPE_CHECKING:
    from megapodd.config import Config, InterlockAction, InterlockConfig

# Terminal Mode carries no checksum: two reads must agree (invariant 8).
BMC_MIN_CONFIRM_READS = 2
# Without a configured stale_after_s, at least this long without a good reading.
DEFAULT_STALE_AFTER_S = 5.0
# "lead_pump other": the pump that is not running now, decided when the step runs.
OTHER_PUMP = "other"
_PHASE_POINT = re.compile(r"^phase(\d)_")


class RuleError(ValueError):
    """Rules that cannot work on this pod; `problems` names each with its key path."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Step:
    """One output driven to one value, `after_s` after the trip."""

    after_s: float
    output: str
    value: OutputValue
    action: str  # what the config asked for, for people: "isolate_rack 1"
    # Run only if this point of this device reads this value then ("chassis_power" "on").
    only_if: tuple[str, str, PointValue] | None = None

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "after_s": self.after_s,
            "action": self.action,
            "output": self.output,
            "value": self.value,
        }
        if self.only_if is not None:
            device, point, value = self.only_if
            data["only_if"] = f"{device}.{point} = {value}"
        return data


@dataclass(frozen=True, slots=True)
class RuleInstance:
    """One rule as it runs: what it watches and what it does, all resolved."""

    name: str  # "leak-r1", "gpu-hot@r1s03", "phase-high@pdu-r1a.phase2_current_a"
    rule: InterlockConfig
    devices: tuple[str, ...]
    pattern: str | None  # point name or glob; None for "offline"
    matched: str | None  # the device of a per-device or per-point instance
    confirm_reads: int
    stale_after_s: float
    steps: tuple[Step, ...]
    mode: str  # how the watched points combine: "any", "all" or "count"
    alarm: bool = False  # an `alarm` action (no output; the trip is the alarm)
    kinds: frozenset[DeviceKind] = field(default_factory=frozenset)

    def watches(self, device: str, point: str) -> bool:
        return (
            self.pattern is not None
            and device in self.devices
            and point_matches(self.pattern, point)
        )

    def describe(self) -> str:
        """What it watches and when it trips, in words:
        `max gpu*_temp_c on r1s03 above 87 (clear 3 back, 2 agreeing reads)`."""
        r = self.rule
        where = self.matched or _describe_devices(r)
        if r.trip_when == "offline":
            return f"{where} offline" + (f" for {r.for_s:g} s" if r.for_s else "")
        single = len(self.devices) == 1 and not is_glob(self.pattern or "")
        if single:
            subject = f"{self.devices[0]}.{self.pattern}"
        elif r.aggregate == "count":
            subject = f"at least {r.count} of {self.pattern} on {where}"
        else:
            subject = f"{r.aggregate} {self.pattern} on {where}"
        extras = []
        if r.clear_margin and r.trip_when in ("above", "below", "rises_faster_than"):
            extras.append(f"clear {r.clear_margin:g} back")
        if r.for_s:
            extras.append(f"for {r.for_s:g} s")
        if r.while_:
            extras.append(f"while {r.while_} is true")
        if self.confirm_reads > 1:
            extras.append(f"{self.confirm_reads} agreeing reads")
        condition = f"{subject} {_test_text(r)}"
        return condition + (f" ({', '.join(extras)})" if extras else "")

    def stages(self) -> list[dict[str, object]]:
        """The steps grouped for people: one entry per action and stage, with
        what it drives (`pdu-r1a outlet_1 … outlet_48`, `chassis_power on 144
        servers r1s01 … r8s18`)."""
        groups: dict[tuple[float, str, str], list[Step]] = {}
        for step in self.steps:
            groups.setdefault((step.after_s, step.action, str(step.value)), []).append(step)
        stages: list[dict[str, object]] = []
        for (after_s, action, _), steps in groups.items():
            entry: dict[str, object] = {
                "after_s": after_s,
                "action": action,
                "value": steps[0].value,
                "outputs": _targets([s.output for s in steps]),
            }
            if steps[0].only_if is not None:
                _, point, value = steps[0].only_if
                entry["only_if"] = f"{point} = {value}"
            stages.append(entry)
        return stages


def _targets(names: Sequence[str]) -> str:
    """Output names grouped by device (`pdu-r1a outlet_1 … outlet_48`) or, where
    many devices share one output, by output (`chassis_power on 144 devices`)."""
    by_device: dict[str, list[str]] = {}
    by_output: dict[str, list[str]] = {}
    for name in names:
        device, _, output = name.partition(".")
        by_device.setdefault(device, []).append(output)
        by_output.setdefault(output, []).append(device)
    if len(by_output) < len(by_device):
        parts = []
        for output, devices in by_output.items():
            shown = ", ".join(devices) if len(devices) <= 4 else (
                f"{len(devices)} devices {devices[0]} … {devices[-1]}"
            )
            parts.append(f"{output} on {shown}")
        return "; ".join(parts)
    return "; ".join(f"{device} {_compact(outputs)}" for device, outputs in by_device.items())


def _compact(outputs: Sequence[str]) -> str:
    """`outlet_1 … outlet_48` for a run of numbered outputs, else the names."""
    numbered = [re.fullmatch(r"(.*_)(\d+)", o) for o in outputs]
    if len(outputs) > 2 and all(numbered):
        prefixes = {m.group(1) for m in numbered if m}
        numbers = [int(m.group(2)) for m in numbered if m]
        if len(prefixes) == 1 and numbers == list(range(numbers[0], numbers[-1] + 1)):
            prefix = prefixes.pop()
            return f"{prefix}{numbers[0]} … {prefix}{numbers[-1]}"
    return ", ".join(outputs)


def _test_text(rule: InterlockConfig) -> str:
    if rule.trip_when == "true":
        return "is true"
    if rule.trip_when == "bit":
        return f"has bit {rule.bit} set"
    if rule.trip_when == "stale":
        return "has no good reading"
    verb = {"above": "above", "below": "below", "rises_faster_than": "rises faster than"}
    per_s = "/s" if rule.trip_when == "rises_faster_than" else ""
    return f"{verb[rule.trip_when]} {rule.limit:g}{per_s}"


def _describe_devices(rule: InterlockConfig) -> str:
    if rule.device is not None:
        return rule.device
    assert rule.devices is not None  # noqa: S101 - the config model requires one of them
    return parse_selector(rule.devices).describe()


def static_points(kind: DeviceKind, outlets: int) -> list[str] | None:
    """The points a device of this kind reports, where they are fixed (not BMCs:
    their sensors come from each one's SDR repository)."""
    if kind is DeviceKind.CDU:
        return cdu_map.point_names()
    if kind is DeviceKind.PDU:
        return rack_pdu.point_names(outlets)
    return None


class _Compiler:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.table = config.device_table()
        self.problems: list[str] = []
        self.outputs: dict[str, OutputInstance] = {}
        racks = config.racks()
        for device in self.table.devices.values():
            outlets = next((p.outlets for p in config.pdu if p.id == device.id), 0)
            for output in device_outputs(device.id, device.kind, outlets=outlets, racks=racks):
                self.outputs[output.name] = output
        self.outlets = {p.id: p.outlets for p in config.pdu}
        self.slowest_poll_s = _slowest_polls(config)

    def compile(self) -> list[RuleInstance]:
        instances: list[RuleInstance] = []
        for index, rule in enumerate(self.config.interlock):
            instances += self._rule(index, rule)
        self._check_contradictions(instances)
        if self.problems:
            raise RuleError(self.problems)
        return instances

    # -- what a rule watches -------------------------------------------------

    def _rule(self, index: int, rule: InterlockConfig) -> list[RuleInstance]:
        where = f"interlock.{index}"
        try:
            devices = self._devices(rule)
        except SelectorError as exc:
            key = "device" if rule.device is not None else "devices"
            self.problems.append(f"{where}.{key}: {exc}")
            return []
        kinds = frozenset(self.table.devices[d].kind for d in devices)
        if rule.point is not None:
            try:
                check_pattern(rule.point)
            except SelectorError as exc:
                self.problems.append(f"{where}.point: {exc}")
                return []
            if not self._points_exist(where, rule.point, devices):
                return []
        if rule.while_ is not None:
            try:
                check_pattern(rule.while_)
            except SelectorError as exc:
                self.problems.append(f"{where}.while: {exc}")
                return []
        many = len(devices) > 1 or is_glob(rule.point or "")
        if rule.scope == "each":
            many = is_glob(rule.point or "")
        elif rule.scope == "each_point":
            many = False  # one point per instance
        if many and rule.aggregate is None and rule.trip_when != "offline":
            self.problems.append(
                f"{where}.aggregate: {rule.point!r} on {len(devices)} device(s) needs an "
                "aggregate (any, all, count, max or min)"
            )
            return []
        instances: list[RuleInstance] = []
        for matched, pattern, name in self._instances(where, rule, devices):
            watched = (matched,) if matched is not None else tuple(devices)
            steps, alarm = self._steps(where, rule, matched, pattern)
            instances.append(
                RuleInstance(
                    name=name,
                    rule=rule,
                    devices=watched,
                    pattern=pattern,
                    matched=matched,
                    confirm_reads=self._confirm_reads(rule, watched),
                    stale_after_s=self._stale_after_s(rule, watched),
                    steps=tuple(steps),
                    mode=_mode(rule),
                    alarm=alarm,
                    kinds=frozenset(self.table.devices[d].kind for d in watched) or kinds,
                )
            )
        return instances

    def _devices(self, rule: InterlockConfig) -> list[str]:
        if rule.device is not None:
            return self.table.select(parse_selector([rule.device]))
        assert rule.devices is not None  # noqa: S101 - the config model requires one of them
        devices = self.table.select(parse_selector(rule.devices))
        if not devices:
            raise SelectorError(f"{rule.devices!r} selects no device of this pod")
        return devices

    def _points_exist(self, where: str, pattern: str, devices: Sequence[str]) -> bool:
        for device in devices:
            info = self.table.devices[device]
            known = static_points(info.kind, self.outlets.get(device, 0))
            if known is not None and not any(point_matches(pattern, p) for p in known):
                self.problems.append(
                    f"{where}.point: {device} ({info.kind.value}) has no point matching "
                    f"{pattern!r}"
                )
                return False
        return True

    def _instances(
        self, where: str, rule: InterlockConfig, devices: Sequence[str]
    ) -> Iterable[tuple[str | None, str | None, str]]:
        if rule.scope == "rule":
            yield None, rule.point, rule.id
        elif rule.scope == "each":
            for device in devices:
                yield device, rule.point, f"{rule.id}@{device}"
        else:
            for device in devices:
                info = self.table.devices[device]
                known = static_points(info.kind, self.outlets.get(device, 0))
                if known is None:
                    self.problems.append(
                        f"{where}.scope: 'each_point' needs points known before the device "
                        f"is read; {device} is a {info.kind.value.upper()}"
                    )
                    return
                for point in known:
                    if rule.point is not None and point_matches(rule.point, point):
                        yield device, point, f"{rule.id}@{device}.{point}"

    def _confirm_reads(self, rule: InterlockConfig, devices: Sequence[str]) -> int:
        if any(self.table.devices[d].kind is DeviceKind.BMC for d in devices):
            return max(rule.confirm_reads, BMC_MIN_CONFIRM_READS)
        return rule.confirm_reads

    def _stale_after_s(self, rule: InterlockConfig, devices: Sequence[str]) -> float:
        if rule.stale_after_s is not None:
            return rule.stale_after_s
        # Three of the slowest polls: a point read in the slow group must not
        # look stale between two normal reads.
        slowest = max((self.slowest_poll_s.get(d, 0.0) for d in devices), default=0.0)
        return max(DEFAULT_STALE_AFTER_S, 3 * slowest)

    # -- what a rule does ----------------------------------------------------

    def _steps(
        self, where: str, rule: InterlockConfig, matched: str | None, point: str | None
    ) -> tuple[list[Step], bool]:
        steps: list[Step] = []
        alarm = False
        for number, action in enumerate(rule.actions):
            key = f"{where}.actions.{number}"
            try:
                if action.do == "alarm":
                    alarm = True
                    continue
                steps += self._expand(action, matched, point)
            except (SelectorError, ValueRejected) as exc:
                self.problems.append(f"{key}: {exc}")
                continue
        for step in steps:
            output = self.outputs.get(step.output)
            if output is None:
                self.problems.append(f"{where}: no output {step.output!r} for {step.action}")
            elif step.value != OTHER_PUMP:
                try:
                    output.spec.check(step.value, step.output)
                except ValueRejected as exc:
                    self.problems.append(f"{where}: {step.action}: {exc}")
        return sorted(steps, key=lambda s: s.after_s), alarm

    def _expand(
        self, action: InterlockAction, matched: str | None, point: str | None
    ) -> list[Step]:
        after = action.after_s
        if action.output is not None:
            assert action.value is not None  # noqa: S101 - the config model requires it
            if action.output not in self.outputs:
                raise SelectorError(f"no output {action.output!r}")
            return [Step(after, action.output, action.value, f"{action.output} = {action.value}")]
        cdus = self.table.of_kind(DeviceKind.CDU)
        do = action.do
        if do == "pumps_max":
            return [Step(after, f"{c}.pump_speed_pct", 100.0, "pumps_max") for c in cdus]
        if do == "lead_pump":
            value = OTHER_PUMP if action.pump == OTHER_PUMP else f"pump{action.pump}"
            return [Step(after, f"{c}.lead_pump", value, f"lead_pump {action.pump}") for c in cdus]
        if do == "isolate_rack":
            rack = self._rack(action, matched)
            return [
                Step(after, f"{c}.rack_{rack}_isolation", "closed", f"isolate_rack {rack}")
                for c in cdus
            ]
        if do == "outlets_off":
            label, outlets = self._outlets(action, matched, point)
            return [
                Step(after, f"{pdu}.outlet_{n}", "off", f"outlets_off {label}")
                for pdu, n in outlets
            ]
        label, servers = self._servers(action, matched, point)
        if do == "fans_max":
            return [Step(after, f"{s}.fan_duty_pct", 100.0, f"fans_max {label}") for s in servers]
        if do == "power_cap":
            assert action.watts is not None  # noqa: S101 - the config model requires it
            return [
                Step(after, f"{s}.power_limit_w", action.watts, f"power_cap {label}")
                for s in servers
            ]
        if do == "server_shutdown":
            steps = []
            for server in servers:
                name = f"{server}.chassis_power"
                steps.append(Step(after, name, "soft_off", f"server_shutdown {label}"))
                steps.append(
                    Step(
                        after + action.hard_after_s,
                        name,
                        "off",
                        f"server_shutdown {label} (hard, still on after "
                        f"{action.hard_after_s:g} s)",
                        only_if=(server, "chassis_power", "on"),
                    )
                )
            return steps
        raise SelectorError(f"unknown action {do!r}")

    def _rack(self, action: InterlockAction, matched: str | None) -> int:
        if action.rack == "matched" or (action.rack is None and matched is not None):
            rack = self.table.rack_of(matched) if matched is not None else None
            if rack is None:
                raise SelectorError("rack 'matched' needs a rule per device of a rack")
            return rack
        if not isinstance(action.rack, int):
            raise SelectorError("a rack number is needed")
        if action.rack not in self.config.racks():
            raise SelectorError(f"rack {action.rack} has no PDU or server in this pod")
        return action.rack

    def _servers(
        self, action: InterlockAction, matched: str | None, point: str | None
    ) -> tuple[str, list[str]]:
        servers = action.servers
        if isinstance(servers, list):
            for server in servers:
                info = self.table.devices.get(server)
                if info is None or info.kind is not DeviceKind.BMC:
                    raise SelectorError(f"{server!r} is not a server (BMC) of this pod")
            return ", ".join(servers), list(servers)
        if servers == "all":
            return "all servers", self.table.of_kind(DeviceKind.BMC)
        if servers == "matched":
            if matched is None or self.table.devices[matched].kind is not DeviceKind.BMC:
                raise SelectorError("servers 'matched' needs a rule per server (scope 'each')")
            return matched, [matched]
        if servers == "phase":
            pdu, phase = self._phase(matched, point)
            return f"on {pdu} phase {phase}", self.table.servers_on_phase(pdu, phase)
        rack = self._rack(action, matched)
        return f"rack {rack}", self.table.servers_in_rack(rack)

    def _phase(self, matched: str | None, point: str | None) -> tuple[str, int]:
        phase = _PHASE_POINT.match(point or "")
        if matched is None or phase is None:
            raise SelectorError("'phase' needs a rule per PDU phase (scope 'each_point')")
        return matched, int(phase.group(1))

    def _outlets(
        self, action: InterlockAction, matched: str | None, point: str | None
    ) -> tuple[str, list[tuple[str, int]]]:
        outlets = action.outlets
        if isinstance(outlets, list):
            assert action.pdu is not None  # noqa: S101 - the config model requires it
            count = self.outlets.get(action.pdu)
            if count is None:
                raise SelectorError(f"no PDU {action.pdu!r}")
            bad = [n for n in outlets if not 1 <= n <= count]
            if bad:
                raise SelectorError(f"{action.pdu} has outlets 1 … {count}, not {bad[0]}")
            return f"{action.pdu}:{','.join(map(str, outlets))}", [(action.pdu, n) for n in outlets]
        if outlets == "all":
            return "all", [(p, n) for p, count in self.outlets.items() for n in range(1, count + 1)]
        if outlets in ("phase", "phase_lowest_priority"):
            pdu, phase = self._phase(matched, point)
            if outlets == "phase":
                count = self.outlets[pdu]
                on_phase = [(pdu, n) for n in range(1, count + 1) if phase_of_outlet(n) == phase]
                return f"{pdu} phase {phase}", on_phase
            servers = self.table.servers_on_phase(pdu, phase)
            if not servers:
                return f"{pdu} phase {phase} (no servers)", []
            lowest = min(self.table.devices[s].priority for s in servers)
            shed = [s for s in servers if self.table.devices[s].priority == lowest]
            label = f"{pdu} phase {phase} priority {lowest} ({', '.join(shed)})"
            return label, self.table.feeds(shed)
        if action.servers is not None:
            label, servers = self._servers(action, matched, point)
            return f"feeding {label}", self.table.feeds(servers)
        rack = self._rack(action, matched)
        pdus = [p for p, info in self.table.devices.items()
                if info.kind is DeviceKind.PDU and info.rack == rack]
        return f"rack {rack}", [(p, n) for p in pdus for n in range(1, self.outlets[p] + 1)]

    # -- across rules --------------------------------------------------------

    def _check_contradictions(self, instances: Sequence[RuleInstance]) -> None:
        """Two latching rules that want one discrete output in states of which
        neither is safer (the lead pump 1 and 2) could never both be obeyed."""
        wanted: dict[str, list[tuple[str, OutputValue]]] = {}
        for instance in instances:
            if not instance.rule.latch:
                continue
            for step in instance.steps:
                if step.value != OTHER_PUMP:
                    wanted.setdefault(step.output, []).append((instance.name, step.value))
        for output, claims in wanted.items():
            spec = self.outputs[output].spec
            for i, (first, a) in enumerate(claims):
                for second, b in claims[i + 1 :]:
                    if first != second and spec.contradicts(a, b):
                        self.problems.append(
                            f"interlock {first} and {second}: {output} = {a} and = {b} "
                            "contradict (neither is safer)"
                        )
                        return


def _mode(rule: InterlockConfig) -> str:
    """How the watched points combine: any of them, all of them, or a count."""
    if rule.aggregate == "count":
        return "count"
    if rule.aggregate == "all":
        return "all"
    if rule.aggregate == "max" and rule.trip_when == "below":
        return "all"  # the largest is below: every one is
    if rule.aggregate == "min" and rule.trip_when == "above":
        return "all"
    return "any"


def _slowest_polls(config: Config) -> dict[str, float]:
    slowest: dict[str, float] = {}
    for cdu in config.cdu:
        slowest[cdu.id] = cdu.poll_s * 5.0  # the settings block (drivers/modbus/cdu.py)
    for pdu in config.pdu:
        slowest[pdu.id] = max(pdu.fast_poll_s, pdu.slow_poll_s)
    for bmc in config.bmc:
        slowest[bmc.id] = max(bmc.poll_s, bmc.slow_poll_s)
    return slowest


def compile_rules(config: Config) -> list[RuleInstance]:
    """Every rule instance of the config; RuleError listing every problem."""
    return _Compiler(config).compile()
