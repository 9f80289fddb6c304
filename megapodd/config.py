"""The daemon's configuration: one TOML file, validated once into typed objects.

Nothing else in the daemon reads raw dicts. Unknown keys are errors, and every
problem in a file is reported at once with its key path.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, Self, get_args
from urllib.parse import urlsplit

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from drivers.base import DeviceKind
from drivers.errors import ConfigurationError, ValueRejected
from drivers.modbus.url import STANDARD_BAUDS, parse_modbus_url
from megapodd.control.loop_specs import LoopError, compile_loops
from megapodd.outputs.catalog import OutputInstance, describe_outputs, device_outputs
from megapodd.safe_files import (
    MAX_CERT_BYTES,
    MAX_SECRET_BYTES,
    FileRefused,
    check_socket_path,
    read_secret_text,
    read_small_file,
)
from megapodd.safety.rules import RuleError, compile_rules
from megapodd.selectors import DeviceInfo, DeviceTable

DeviceId = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
]  # safe in MQTT topics and file names


class ConfigError(Exception):
    """A config file is unreadable or invalid; `problems` lists every one."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(self.problems))


class _Section(BaseModel):
    # TOML has nan and inf; no setting means anything with them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_number(cls, value: object, info: ValidationInfo) -> object:
        """`rack = 1e20` or `outlets = 2.5` for an integer key: say which range it takes."""
        field = cls.model_fields[info.field_name or ""]
        integer = field.annotation is int or int in get_args(field.annotation)
        if integer and isinstance(value, float) and not (value.is_integer() and abs(value) < 2**53):
            low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
            high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
            span = f" in {low}–{high}" if low is not None and high is not None else ""
            raise ValueError(f"{value!r} is not a whole number{span}")
        return value


# Bounds shared by several sections (docs/configuration.md lists each one).
MIN_TIMEOUT_S = 0.05  # below this a request cannot even cross a busy loop
MAX_TIMEOUT_S = 30.0
MAX_RACK = 16  # the CDU's leak-zone and rack-isolation registers have 16 bits
MAX_LIMIT = 1e9  # interlock limits and margins: finite and far past any point's range
MAX_CONFIG_BYTES = 1024 * 1024  # a 144-server pod's file is about 30 KiB
# sun_path holds 108 bytes with its NUL; a longer path cannot be bound.
MAX_SOCKET_PATH_BYTES = 107


def _port_in_range(port: int | None, what: str) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {what} is outside 1–65535")


def _check_baud(baud: int) -> int:
    if baud not in STANDARD_BAUDS:
        raise ValueError(f"{baud} is not a standard rate ({', '.join(map(str, STANDARD_BAUDS))})")
    return baud


def _check_secret_file(path: Path | None, max_bytes: int = MAX_SECRET_BYTES) -> Path | None:
    """Read once at validation the way the daemon reads it later (megapodd/safe_files.py),
    so --check-config catches a missing, odd, huge or empty file."""
    if path is not None:
        read_secret_text(path, max_bytes)
    return path


class PodConfig(_Section):
    id: DeviceId


class MqttConfig(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "megapod/v1"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # Every device's state each period: below 1 s this floods the broker.
    snapshot_s: float = Field(default=30.0, ge=1.0, le=3600)
    # Accept fleet commands on <prefix>/<pod>/cmd/<verb> (off unless enabled).
    commands: StrictBool = False
    # Events are journalled in the state dir; this many are read back into
    # memory at a time while they wait for the broker.
    queue_max_events: int = Field(default=10_000, ge=100, le=100_000)
    # Device state messages beyond the periodic snapshot, per device, on average;
    # changes past it are merged into the next message (docs/mqtt.md). 0 = no limit.
    device_budget_bytes_per_s: int = Field(default=4096, ge=0, le=10_000_000)
    # Fleet commands taken per second on average, and in one burst; the rest are refused.
    command_rate_per_s: float = Field(default=2.0, ge=0.01, le=1000.0)
    command_burst: int = Field(default=30, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"scheme must be mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port in {url!r}: not a number in 1–65535") from None
        _port_in_range(port, repr(url))
        return url

    @field_validator("password_file", "key_file")
    @classmethod
    def _readable_secret(cls, path: Path | None) -> Path | None:
        return _check_secret_file(path)

    @field_validator("ca_file", "cert_file")
    @classmethod
    def _readable_cert(cls, path: Path | None) -> Path | None:
        return _check_secret_file(path, MAX_CERT_BYTES)

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if (
            not prefix
            or prefix.startswith("/")
            or prefix.endswith("/")
            or any(c in prefix for c in "+#")
        ):
            raise ValueError(f"topic_prefix must be a plain topic path, got {prefix!r}")
        return prefix

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""  # the validator made sure there is one

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class ApiConfig(_Section):
    socket: Path = Path("/run/megapodd/megapodd.sock")
    reader_group: str = "megapod"
    admin_group: str = "megapod-admin"

    @field_validator("socket")
    @classmethod
    def _check_socket(cls, path: Path) -> Path:
        size = len(os.fsencode(path))
        if size > MAX_SOCKET_PATH_BYTES:
            raise ValueError(f"path is {size} bytes; a Unix socket path has at most 107")
        check_socket_path(path)
        return path


class MetricsConfig(_Section):
    # host:port of the Prometheus /metrics endpoint; "" = off. Localhost only by default.
    listen: str = "127.0.0.1:9108"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, listen: str) -> str:
        if listen:
            parse_listen(listen)
        return listen

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen) if self.listen else None


def parse_listen(listen: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); ValueError naming the problem."""
    parts = urlsplit(f"//{listen}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {listen!r}: not a number in 1–65535") from None
    if not parts.hostname or port is None or parts.netloc != listen or "@" in listen:
        raise ValueError(f"{listen!r} is not host:port (e.g. \"127.0.0.1:9108\")")
    _port_in_range(port, repr(listen))
    if port == 0:
        raise ValueError(f"port 0 in {listen!r} is outside 1–65535")
    return parts.hostname, port


class StateConfig(_Section):
    dir: Path = Path("/var/lib/megapodd")


class ControlConfig(_Section):
    tick_s: float = Field(default=0.1, ge=0.01, le=5.0)


MAX_BUDGET_W = 10_000_000.0  # 10 MW: far past any pod's feed


class PowerConfig(_Section):
    """The pod's power budget and breaker protection (docs/power.md)."""

    # The pod's electrical budget; none: only the phases' breakers are protected.
    budget_w: float | None = Field(default=None, gt=0.0, le=MAX_BUDGET_W)
    # The most a run-time budget change may set (megapodctl power budget, MQTT);
    # default: budget_w (a run-time change can only lower it).
    max_budget_w: float | None = Field(default=None, gt=0.0, le=MAX_BUDGET_W)
    # Each PDU phase is held below this share of its breaker's rating
    # (80 %: the continuous-load rule).
    phase_limit_pct: float = Field(default=80.0, gt=0.0, le=100.0)
    # Headroom must last this long before caps are raised again.
    release_s: float = Field(default=60.0, ge=1.0, le=3600.0)

    @model_validator(mode="after")
    def _bounds_fit(self) -> Self:
        if self.max_budget_w is not None:
            if self.budget_w is None:
                raise ValueError("max_budget_w needs budget_w")
            if self.max_budget_w < self.budget_w:
                raise ValueError(
                    f"max_budget_w {self.max_budget_w:g} W is below budget_w {self.budget_w:g} W"
                )
        return self

    @property
    def budget_ceiling_w(self) -> float | None:
        """The largest budget a run-time change may set."""
        return self.max_budget_w if self.max_budget_w is not None else self.budget_w


class CduConfig(_Section):
    id: DeviceId
    url: str
    unit: int = Field(default=1, ge=1, le=247)  # 0 is broadcast: no answers
    poll_s: float = Field(default=0.25, ge=0.05, le=60)
    timeout_s: float = Field(default=1.0, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)
    retries: int = Field(default=1, ge=0, le=5)
    # The CDU falls back to its failsafe speed if no heartbeat arrives in this time.
    # At least 4 s: heartbeats go every quarter of it and may queue behind a poll.
    watchdog_timeout_s: int = Field(default=10, ge=4, le=600)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        try:
            parse_modbus_url(url)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return url


class PduConfig(_Section):
    id: DeviceId
    host: str
    port: int = Field(default=161, ge=1, le=65535)
    version: Literal["2c", "3"] = "2c"
    community: str = "public"
    write_community: str = "private"
    user: str | None = None
    auth_key_file: Path | None = None
    priv_key_file: Path | None = None
    auth_protocol: Literal["SHA", "SHA-256"] = "SHA"
    outlets: int = Field(default=24, ge=1, le=96)
    rack: int = Field(ge=1, le=MAX_RACK)
    # The rating of each phase's breaker: over it the phase trips (DEVICES.md §2).
    breaker_a: float = Field(default=32.0, gt=0.0, le=1000.0)
    # The highest phase voltage the supply gives (line to neutral): a reading
    # above it is implausible, and it bounds the plausible power.
    supply_v_max: float = Field(default=264.0, ge=100.0, le=1000.0)
    fast_poll_s: float = Field(default=1.0, ge=0.1, le=60)
    slow_poll_s: float = Field(default=10.0, ge=0.5, le=600)
    timeout_s: float = Field(default=1.0, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)
    retries: int = Field(default=1, ge=0, le=5)

    @model_validator(mode="after")
    def _v3_needs_user(self) -> Self:
        if self.version == "3":
            # authPriv, or authNoPriv without priv_key_file; never noAuth.
            missing = [name for name in ("user", "auth_key_file") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"version 3 needs {', '.join(missing)}")
        return self

    @field_validator("auth_key_file", "priv_key_file")
    @classmethod
    def _readable_key(cls, path: Path | None) -> Path | None:
        return _check_secret_file(path)


class BmcConfig(_Section):
    id: DeviceId
    port: str
    baud: int = 115200
    rack: int = Field(ge=1, le=MAX_RACK)
    pdu: DeviceId | None = None
    outlet: int | None = Field(default=None, ge=1, le=96)
    # Who keeps power longer when some must go (a breaker about to trip): higher.
    priority: int = Field(default=0, ge=0, le=100)
    # The power budget never caps this server below this ([power], docs/power.md).
    min_cap_w: float = Field(default=2000.0, ge=100.0, le=30_000.0)
    poll_s: float = Field(default=2.0, ge=0.2, le=60)
    # Chassis state, DCMI power, fan duty: 6 exchanges, not needed every sensor poll.
    slow_poll_s: float = Field(default=5.0, ge=0.2, le=600)
    timeout_s: float = Field(default=1.0, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)
    retries: int = Field(default=2, ge=0, le=5)

    @field_validator("baud")
    @classmethod
    def _standard_baud(cls, baud: int) -> int:
        return _check_baud(baud)

    @field_validator("port")
    @classmethod
    def _check_port(cls, port: str) -> str:
        if port.startswith("socket://"):
            parts = urlsplit(port)
            try:
                ok = bool(parts.hostname) and parts.port is not None
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"expected socket://host:port, got {port!r}")
            _port_in_range(parts.port, repr(port))
        elif not port.startswith("/"):
            raise ValueError(f"expected a device path or socket://host:port, got {port!r}")
        return port


ActionName = Literal[
    "pumps_max",
    "fans_max",
    "isolate_rack",
    "outlets_off",
    "server_shutdown",
    "power_cap",
    "lead_pump",
    "alarm",
]


class InterlockAction(_Section):
    """One action of a rule: a named safety action, or one output and its value."""

    # A named action (what it drives is worked out from the pod's devices) ...
    do: ActionName | None = None
    # ... or one output: "<device id>.<output>", e.g. "cdu1.pump_speed_pct".
    output: str | None = None
    # A number, or a state ("off") for discrete outputs.
    value: Annotated[float, Field(ge=-MAX_LIMIT, le=MAX_LIMIT)] | str | None = None
    # A later stage: runs this long after the trip, and only if still tripped.
    after_s: float = Field(default=0.0, ge=0.0, le=86_400.0)
    # Targets of named actions: a rack ("matched": the rack of the device that tripped),
    # servers ("matched", "rack", "phase", "all" or ids), or outlets.
    rack: Annotated[int, Field(ge=1, le=16)] | Literal["matched"] | None = None
    servers: Literal["matched", "rack", "phase", "all"] | list[DeviceId] | None = None
    pdu: DeviceId | None = None
    outlets: Literal["phase", "phase_lowest_priority", "all"] | list[int] | None = None
    watts: float | None = Field(default=None, gt=0.0)  # power_cap
    pump: Literal[1, 2, "other"] | None = None  # lead_pump; "other": the one not running
    # server_shutdown: soft now, power off this long after if still on.
    hard_after_s: float = Field(default=60.0, ge=1.0, le=3600.0)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.do is None) == (self.output is None):
            raise ValueError("an action has either 'do' (a named action) or 'output' and 'value'")
        if self.output is not None and self.value is None:
            raise ValueError(f"output {self.output!r} needs a value")
        needs = {"power_cap": "watts", "lead_pump": "pump", "isolate_rack": "rack"}
        if self.do in needs and getattr(self, needs[self.do]) is None:
            raise ValueError(f"{self.do} needs {needs[self.do]!r}")
        if self.do in ("fans_max", "server_shutdown", "power_cap") and (
            self.servers is None and self.rack is None
        ):
            raise ValueError(f"{self.do} needs 'servers' or 'rack'")
        if self.do == "outlets_off" and self.rack is None and self.outlets is None and (
            self.servers is None
        ):
            raise ValueError("outlets_off needs 'rack', 'servers', or 'outlets' (with 'pdu')")
        if isinstance(self.outlets, list) and self.pdu is None:
            raise ValueError("a list of outlets needs the 'pdu' they are on")
        return self


class InterlockConfig(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: DeviceId
    # What it watches: one device, or a selector ("bmc:rack=2", "pdu", ["r1s01", ...]).
    device: DeviceId | None = None
    devices: str | list[DeviceId] | None = None
    point: str | None = None  # a name or a glob ("gpu*_temp_c"); none for "offline"
    # How the matched points make one condition (needed with a selector or a glob).
    aggregate: Literal["any", "all", "count", "max", "min"] | None = None
    count: int | None = Field(default=None, ge=1)  # aggregate "count": at least this many
    # "rule": one rule over everything matched; "each": one per device; "each_point":
    # one per device and point (a PDU's phases).
    scope: Literal["rule", "each", "each_point"] = "rule"
    # "true": a boolean reads true (a leak); "bit": bit `bit` of a mask is set (a
    # rack's drip tray); "above"/"below": past `limit`; "rises_faster_than": more
    # than `limit` per second; "stale": no good reading; "offline": the device is.
    trip_when: Literal["true", "bit", "above", "below", "rises_faster_than", "stale", "offline"]
    bit: int | None = Field(default=None, ge=0, le=15)
    limit: float | None = Field(default=None, ge=-MAX_LIMIT, le=MAX_LIMIT)
    # How far back past the limit a value must come to count as cleared.
    clear_margin: float = Field(default=0.0, ge=0.0, le=MAX_LIMIT)
    # The condition must hold this long before the rule trips.
    for_s: float = Field(default=0.0, ge=0.0, le=3600.0)
    # Only while one of these boolean points of the same device reads true ("pump*_running").
    while_: str | None = Field(default=None, alias="while")
    # With no good reading for stale_after_s: trip (the default, invariant 2) or hold.
    on_stale: Literal["trip", "hold"] = "trip"
    # Default: three of the device's slowest poll periods, at least 5 s.
    stale_after_s: float | None = Field(default=None, ge=MIN_TIMEOUT_S, le=3600.0)
    # Consecutive good readings that must show the condition before it trips.
    # BMC points always need at least 2 (invariant 8: Terminal Mode has no checksum).
    confirm_reads: int = Field(default=1, ge=1, le=10)
    severity: Literal["warning", "alarm", "critical"] = "critical"
    # False: an automatic protective action that releases by itself once clear.
    latch: StrictBool = True
    actions: list[InterlockAction] = Field(default=[], max_length=16)

    @model_validator(mode="after")
    def _condition_fits(self) -> Self:
        if (self.device is None) == (self.devices is None):
            raise ValueError("give either 'device' or 'devices' (a selector)")
        watches_points = self.trip_when != "offline"
        if watches_points and self.point is None:
            raise ValueError(f"trip_when = {self.trip_when!r} needs a point")
        if not watches_points and self.point is not None:
            raise ValueError("trip_when = 'offline' watches the device, not a point")
        with_limit = ("above", "below", "rises_faster_than")
        if self.trip_when in with_limit and self.limit is None:
            raise ValueError(f"trip_when = {self.trip_when!r} needs a limit")
        if self.trip_when not in with_limit and self.limit is not None:
            raise ValueError(f"trip_when = {self.trip_when!r} takes no limit")
        if (self.trip_when == "bit") != (self.bit is not None):
            raise ValueError("trip_when = 'bit' and 'bit' go together")
        if self.aggregate == "count" and self.count is None:
            raise ValueError("aggregate = 'count' needs 'count'")
        if self.aggregate in ("max", "min") and self.trip_when not in with_limit:
            raise ValueError(f"aggregate {self.aggregate!r} goes with above/below limits")
        if self.scope == "each_point" and self.devices is None and self.device is None:
            raise ValueError("scope = 'each_point' needs devices")
        return self


class LoopInput(_Section):
    """A loop's input: one point, or many combined (the hottest GPU of a rack)."""

    device: DeviceId | None = None
    devices: str | list[DeviceId] | None = None  # a selector: "bmc:rack=2", "pdu"
    point: str  # a name, or a glob with an aggregate
    aggregate: Literal["max", "min", "mean", "sum"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        # Neither: the loop's own device (a loop with scope "each").
        if self.device is not None and self.devices is not None:
            raise ValueError("give either 'device' or 'devices' (a selector), not both")
        return self


LoopSource = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*\.[a-z0-9_]+$")] | (
    LoopInput
)


class FeedForwardConfig(_Section):
    """output += gain × input + bias, before the limits."""

    input: LoopSource
    gain: float = Field(allow_inf_nan=False)
    bias: float = Field(default=0.0, allow_inf_nan=False)
    # With no good reading of its input: hold the last value (the loop goes on in
    # closed loop), or drive the loop's failsafe.
    on_bad: Literal["hold", "failsafe"] = "hold"


class BoostConfig(_Section):
    """Failsafe while any of these points reads below a limit (a stopped fan)."""

    point: str  # a glob on the loop's device: "fan*_rpm"
    below: float = Field(allow_inf_nan=False)


class LoopConfig(_Section):
    id: DeviceId
    # pid: feedback on `input` to `setpoint`; curve: a table from `input` with
    # hysteresis; demand: gain × input + bias (a feed-forward of its own).
    controller: Literal["pid", "curve", "demand"]
    input: LoopSource
    # "<device>.<output>"; with scope "each", the output's name on each device.
    output: str
    # "each": one loop per device of `devices` (a fan zone per server); the input's
    # device is then each of them.
    scope: Literal["loop", "each"] = "loop"
    devices: str | list[DeviceId] | None = None
    # Loops of one zone drive one output together: the largest demand wins.
    zone: DeviceId | None = None
    period_s: float = Field(default=1.0, ge=0.1, le=60.0)
    # Default: three polls of the input's slowest group.
    stale_after_s: float | None = Field(default=None, ge=0.1, le=3600.0)
    input_filter_s: float = Field(default=0.0, ge=0.0, le=600.0)
    # pid
    setpoint: float | None = Field(default=None, allow_inf_nan=False)
    setpoint_min: float | None = Field(default=None, allow_inf_nan=False)
    setpoint_max: float | None = Field(default=None, allow_inf_nan=False)
    kp: float = Field(default=0.0, ge=0.0, le=1e6)
    ki: float = Field(default=0.0, ge=0.0, le=1e6)
    kd: float = Field(default=0.0, ge=0.0, le=1e6)
    d_filter_s: float = Field(default=0.0, ge=0.0, le=600.0)
    direction: Literal["direct", "reverse"] = "direct"
    failsafe_return: Literal["bumpless", "restore"] = "bumpless"
    feed_forward: FeedForwardConfig | None = None
    # curve
    curve: list[tuple[float, float]] = []
    hysteresis: float = Field(default=0.0, ge=0.0, le=100.0)
    # demand
    gain: float | None = Field(default=None, allow_inf_nan=False)
    bias: float = Field(default=0.0, allow_inf_nan=False)
    # Output: defaults from the output's spec (range, slew, failsafe).
    out_min: float | None = Field(default=None, allow_inf_nan=False)
    out_max: float | None = Field(default=None, allow_inf_nan=False)
    slew_up_per_s: float | None = Field(default=None, gt=0.0, le=1000.0)
    slew_down_per_s: float | None = Field(default=None, gt=0.0, le=1000.0)
    deadband: float = Field(default=0.0, ge=0.0, le=100.0)  # write only moves this large
    failsafe: float | None = Field(default=None, allow_inf_nan=False)
    boost: BoostConfig | None = None

    @model_validator(mode="after")
    def _controller_fits(self) -> Self:
        if self.controller == "pid":
            if self.setpoint is None:
                raise ValueError("a pid loop needs a setpoint")
            if self.kp == 0 and self.ki == 0 and self.kd == 0:
                raise ValueError("a pid loop needs a gain (kp, ki or kd above 0)")
            low, high = self.setpoint_min, self.setpoint_max
            if low is not None and high is not None and low > high:
                raise ValueError(f"setpoint_min {low:g} is above setpoint_max {high:g}")
            if (low is not None and self.setpoint < low) or (
                high is not None and self.setpoint > high
            ):
                raise ValueError(f"setpoint {self.setpoint:g} is outside its own limits")
        if self.controller == "curve" and not self.curve:
            raise ValueError("a curve loop needs curve = [[input, output], ...]")
        if self.controller == "demand" and self.gain is None:
            raise ValueError("a demand loop needs a gain")
        if (self.scope == "each") != (self.devices is not None):
            raise ValueError("scope = 'each' and 'devices' go together")
        return self


class ZoneConfig(_Section):
    """Several loops on one output: the largest demand wins, within floor and ceiling."""

    id: DeviceId
    output: str
    floor: float | None = Field(default=None, allow_inf_nan=False)  # default: the spec's low
    ceiling: float | None = Field(default=None, allow_inf_nan=False)


class Config(_Section):
    pod: PodConfig
    mqtt: MqttConfig = MqttConfig()
    api: ApiConfig = ApiConfig()
    state: StateConfig = StateConfig()
    control: ControlConfig = ControlConfig()
    metrics: MetricsConfig = MetricsConfig()
    power: PowerConfig | None = None
    cdu: list[CduConfig] = []
    pdu: list[PduConfig] = []
    bmc: list[BmcConfig] = []
    interlock: list[InterlockConfig] = []
    loop: list[LoopConfig] = []
    zone: list[ZoneConfig] = []

    def racks(self) -> list[int]:
        """The rack numbers the pod's PDUs and servers are in."""
        return sorted({p.rack for p in self.pdu} | {b.rack for b in self.bmc})

    def device_table(self) -> DeviceTable:
        """The pod's devices, racks and cabling, for selectors and actions."""
        return DeviceTable(
            [DeviceInfo(c.id, DeviceKind.CDU) for c in self.cdu]
            + [DeviceInfo(p.id, DeviceKind.PDU, p.rack) for p in self.pdu]
            + [
                DeviceInfo(b.id, DeviceKind.BMC, b.rack, b.pdu, b.outlet, b.priority)
                for b in self.bmc
            ]
        )

    def min_budget_w(self) -> float:
        """The smallest pod budget: every server at its min_cap_w."""
        return sum(b.min_cap_w for b in self.bmc)

    @model_validator(mode="after")
    def _power_fits_pod(self) -> Self:
        power = self.power
        if power is None:
            return self
        problems: list[str] = []
        if not self.pdu:
            problems.append("the power budget needs at least one [[pdu]] to measure the pod")
        unfed = [b.id for b in self.bmc if b.pdu is None or b.outlet is None]
        if unfed:
            problems.append(
                f"the power budget needs each server's pdu and outlet (the phase that feeds it);"
                f" missing on {', '.join(unfed[:5])}{' …' if len(unfed) > 5 else ''}"
            )
        floor = self.min_budget_w()
        if power.budget_w is not None and power.budget_w < floor:
            problems.append(
                f"budget_w {power.budget_w:g} W is below the sum of the servers' min_cap_w "
                f"({floor:g} W): the budget could never be met"
            )
        shared = [loop.id for loop in self.loop if loop.output.endswith("power_limit_w")]
        if shared:
            problems.append(
                f"the power budget sets every server's power_limit_w at loop priority; "
                f"loop {', '.join(shared)} would fight it for the same slot"
            )
        if problems:
            raise ValueError("power: " + "; ".join(problems))
        return self


def _serial_line(kind: str, device: dict[str, object]) -> str | None:
    """The serial device a section opens, if any."""
    if kind == "bmc":
        port = device.get("port")
        return port if isinstance(port, str) and port.startswith("/") else None
    url = device.get("url")
    if isinstance(url, str) and url.startswith("modbus+rtu://"):
        return urlsplit(url).path
    return None


def _shared_lines(data: dict[str, object]) -> list[str]:
    """Two drivers on one serial line would garble each other's frames."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for kind in ("cdu", "bmc"):
        devices = data.get(kind)
        for index, device in enumerate(devices if isinstance(devices, list) else []):
            if not isinstance(device, dict) or (line := _serial_line(kind, device)) is None:
                continue
            key = "port" if kind == "bmc" else "url"
            where = f"{kind}.{index}.{key}"
            if line in seen:
                problems.append(f"{where}: serial line {line} is already used by {seen[line]}")
            else:
                seen[line] = where
    return problems


def _declared_outputs(data: dict[str, object]) -> dict[str, OutputInstance]:
    """Every output the configured devices offer (the catalog's instances)."""
    racks: set[int] = set()
    for kind in ("pdu", "bmc"):
        devices = data.get(kind)
        for device in devices if isinstance(devices, list) else []:
            rack = device.get("rack") if isinstance(device, dict) else None
            if isinstance(rack, int) and not isinstance(rack, bool):
                racks.add(rack)
    outputs: dict[str, OutputInstance] = {}
    for kind in DeviceKind:
        devices = data.get(kind.value)
        for device in devices if isinstance(devices, list) else []:
            if not isinstance(device, dict) or not isinstance(device.get("id"), str):
                continue
            outlets = device.get("outlets", 24)
            count = outlets if isinstance(outlets, int) and not isinstance(outlets, bool) else 0
            for output in device_outputs(device["id"], kind, outlets=count, racks=racks):
                outputs[output.name] = output
    return outputs


def _interlock_refs(data: dict[str, object]) -> list[str]:
    """Interlocks name devices and outputs that exist, with values the output
    accepts; rule ids are unique."""
    device_ids: set[str] = set()
    for kind in DeviceKind:
        devices = data.get(kind.value)
        for device in devices if isinstance(devices, list) else []:
            if isinstance(device, dict) and isinstance(device.get("id"), str):
                device_ids.add(device["id"])
    outputs = _declared_outputs(data)
    problems: list[str] = []
    seen: set[str] = set()
    rules = data.get("interlock")
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        if isinstance(rule.get("id"), str):
            if rule["id"] in seen:
                problems.append(f"interlock.{index}.id: duplicate interlock id {rule['id']!r}")
            seen.add(rule["id"])
        device = rule.get("device")
        if isinstance(device, str) and device not in device_ids:
            problems.append(f"interlock.{index}.device: no device {device!r}")
        actions = rule.get("actions")
        for number, action in enumerate(actions if isinstance(actions, list) else []):
            if not isinstance(action, dict) or not isinstance(action.get("output"), str):
                continue
            where = f"interlock.{index}.actions.{number}"
            output = outputs.get(action["output"])
            if output is None:
                problems.append(f"{where}.output: {_unknown_output(action['output'], outputs)}")
                continue
            if "value" in action:
                try:
                    output.spec.check(action["value"], output.name)
                except ValueRejected as exc:
                    problems.append(f"{where}.value: {exc}")
    return problems


def _unknown_output(name: str, outputs: dict[str, OutputInstance]) -> str:
    """The message for an output that does not exist: what that device offers."""
    device = name.partition(".")[0]
    offered = [o for o in outputs.values() if o.device_id == device]
    if not offered:
        return f"no output {name!r}: no device {device!r} with outputs"
    return f"no output {name!r}; {device} has {describe_outputs(offered)}"


def _cross_check(data: dict[str, object]) -> list[str]:
    """Checks across sections, run on the raw data so they are reported even
    when other fields are invalid (every problem at once)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    pdu_outlets: dict[str, object] = {}
    for kind in ("cdu", "pdu", "bmc"):
        devices = data.get(kind)
        if not isinstance(devices, list):
            continue
        for index, device in enumerate(devices):
            if not isinstance(device, dict) or not isinstance(device.get("id"), str):
                continue
            device_id = device["id"]
            where = f"{kind}.{index}.id"
            if device_id in seen:
                first = seen[device_id]
                problems.append(f"{where}: duplicate device id {device_id!r} (also {first})")
            else:
                seen[device_id] = where
            if kind == "pdu":
                pdu_outlets[device_id] = device.get("outlets", 24)
    problems.extend(_shared_lines(data))
    problems.extend(_interlock_refs(data))
    bmcs = data.get("bmc")
    for index, bmc in enumerate(bmcs if isinstance(bmcs, list) else []):
        if not isinstance(bmc, dict) or "pdu" not in bmc:
            continue
        if bmc["pdu"] not in pdu_outlets:
            problems.append(f"bmc.{index}.pdu: no [[pdu]] with id {bmc['pdu']!r}")
            continue
        outlets, outlet = pdu_outlets[bmc["pdu"]], bmc.get("outlet")
        if isinstance(outlet, int) and isinstance(outlets, int) and outlet > outlets:
            problems.append(
                f"bmc.{index}.outlet: {outlet} exceeds {bmc['pdu']!r}'s {outlets} outlets"
            )
    return problems


def _format_error(error: ErrorDetails) -> list[str]:
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return [f"{loc}: {message}" if loc else message]


def parse_config(data: dict[str, object], path: Path) -> Config:
    problems: list[str] = []
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            problems.extend(_format_error(error))
    problems.extend(_cross_check(data))
    if config is not None and not problems:
        # What the rules and loops watch and do, resolved against this pod's devices.
        try:
            compile_rules(config)
        except RuleError as exc:
            problems.extend(exc.problems)
        try:
            compile_loops(config)
        except LoopError as exc:
            problems.extend(exc.problems)
    if problems or config is None:
        raise ConfigError(path, problems)
    return config


def load_config(path: Path) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    try:
        # Bounded and non-blocking like the secrets: `--check-config /dev/zero` or a
        # FIFO must not hang or fill memory.
        text = read_small_file(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileRefused as exc:
        raise ConfigError(path, [str(exc)]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text (byte {exc.start})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    return parse_config(data, path)
