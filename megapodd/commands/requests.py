"""Typed requests: every command's arguments, validated once at the edge.

A request that does not fit is refused with a message naming the argument and
what it takes (`'outlet' must be an integer from 1 to 96; got 0`), whichever
transport it came by.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from pydantic.fields import FieldInfo

from megapodd.config import DeviceId

# At most 8 hours: an override that outlives a shift is a forgotten one.
MAX_OVERRIDE_S = 8 * 3600.0

RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Number = Annotated[float, Field(allow_inf_nan=False)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ActingRequest(Request):
    # A fleet command's id: a redelivered one (MQTT QoS 1) runs once.
    request_id: RequestId | None = None


class StatusRequest(Request):
    device: DeviceId | None = None


class EventsRequest(Request):
    count: int = Field(default=20, ge=1, le=500)  # the newest that match
    since_ts: Number | None = None  # wall clock (epoch s): none older
    min_severity: Literal["info", "warning", "alarm", "critical"] | None = None
    # Following: only events after this one. seq restarts with the daemon, so
    # after_seq counts only while boot_id is the daemon's own.
    after_seq: int | None = Field(default=None, ge=0)
    boot_id: StrictStr | None = Field(default=None, max_length=64)


class PointsRequest(Request):
    device: DeviceId | None = None
    # fnmatch pattern on the point's name ("gpu*_temp_c"), or on
    # "device.point" when it has a dot ("r1s*.inlet_temp_c").
    match: StrictStr | None = Field(default=None, min_length=1, max_length=128)


class EmptyRequest(Request):
    pass


class OutletRequest(ActingRequest):
    pdu: DeviceId
    outlet: int = Field(ge=1)  # the PDU's own count is checked by the command
    action: Literal["on", "off", "reboot"]


class ServerRequest(ActingRequest):
    server: DeviceId
    action: Literal["on", "off", "cycle", "reset", "soft"]


class OverrideRequest(ActingRequest):
    device: DeviceId
    output: StrictStr = Field(min_length=1, max_length=64)
    value: Number | StrictStr
    duration_s: Number = Field(ge=1.0, le=MAX_OVERRIDE_S)


class ReleaseRequest(ActingRequest):
    device: DeviceId
    output: StrictStr = Field(min_length=1, max_length=64)


class RackRequest(ActingRequest):
    rack: int = Field(ge=1, le=16)
    action: Literal["open", "isolate"]


class SetpointRequest(ActingRequest):
    loop: StrictStr = Field(min_length=1, max_length=80)
    setpoint: Number


class PowerBudgetRequest(ActingRequest):
    # The configured bounds (sum of min_cap_w, max_budget_w) are checked by the command.
    watts: Number = Field(gt=0.0)


class ResetRequest(ActingRequest):
    interlock: StrictStr = Field(min_length=1, max_length=64)


R = TypeVar("R", bound=Request)


class RequestError(ValueError):
    """Arguments that do not fit a command; the message says which and why."""


def _bounds(info: FieldInfo) -> tuple[object | None, object | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Le):
            high = item.le
    return low, high


def _takes(info: FieldInfo) -> str:
    """What a field takes, in words."""
    annotation = info.annotation
    low, high = _bounds(info)
    span = ""
    if isinstance(low, int | float) and isinstance(high, int | float):
        span = f" from {low:g} to {high:g}"
    elif isinstance(low, int | float):
        span = f" of at least {low:g}"
    if annotation is int:
        return f"an integer{span}"
    if annotation is float:
        return f"a number{span}"
    choices = getattr(annotation, "__args__", ())
    if choices and all(isinstance(c, str) for c in choices):
        return "one of " + ", ".join(choices)
    return "a non-empty string"


def _describe(model: type[Request], error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    if not loc:
        return str(error["msg"])
    name = loc[0]
    if error["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) or "none"
        return f"{name!r} is not an argument of this command (arguments: {known})"
    if error["type"] == "missing":
        return f"{name!r} is missing"
    if error["type"] == "string_pattern_mismatch":
        if name == "request_id":
            return (
                "'request_id' must be 1-128 printable characters, no spaces; "
                f"got {error.get('input')!r}"
            )
        return (
            f"{name!r} must be an id of lower-case letters, digits, '-' and '_'; "
            f"got {error.get('input')!r}"
        )
    if name == "value":
        return f"'value' must be a number or a state such as 'off'; got {error.get('input')!r}"
    info = model.model_fields.get(name)
    if info is None:
        return f"{name!r}: {error['msg']}"
    return f"{name!r} must be {_takes(info)}; got {error.get('input')!r}"


def parse_request(model: type[R], args: dict[str, object]) -> R:
    """The request, or RequestError naming every argument that does not fit."""
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        # One line per argument (a union reports each alternative: keep the first).
        seen: dict[str, str] = {}
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            seen.setdefault(key, _describe(model, error))
        raise RequestError("; ".join(seen.values())) from None
