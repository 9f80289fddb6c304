"""JSON as a request may carry it, whichever transport it came by."""

from __future__ import annotations

import json
import math

MAX_REQUEST_BYTES = 64 * 1024


def _refuse_constant(name: str) -> object:
    """NaN and Infinity are not JSON; a request carrying one is refused."""
    raise ValueError(f"request is not JSON: {name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"request is not JSON: {text} is out of range for a number")
    return value


def loads_strict(data: bytes) -> object:
    """JSON as a request may carry it: no NaN, no Infinity, no overflowing number.
    Raises ValueError with a message that names the problem."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"request is {len(data)} bytes; at most {MAX_REQUEST_BYTES}")
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"request is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("request is not JSON the daemon accepts: nested too deeply") from None
