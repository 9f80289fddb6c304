"""Fleet commands run once per request id.

MQTT QoS 1 delivers at least once: a command can arrive twice (a reconnect
before the PUBACK, a broker restart). The fleet names each command with a
request id; a redelivered one gets the first reply again instead of running
again (a second `server cycle` would reset the server twice).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

# Enough ids for an hour of a busy fleet; MQTT redelivers within seconds.
MAX_REMEMBERED = 4096
REMEMBER_S = 3600.0

Reply = dict[str, object]


def _fingerprint(verb: str, args: Mapping[str, object]) -> str:
    text = json.dumps([verb, args], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True)
class _Seen:
    fingerprint: str
    reply: Reply
    at_s: float


class RequestLog:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self.replayed = 0

    async def once(
        self,
        request_id: str,
        verb: str,
        args: Mapping[str, object],
        run: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        """Run the command the first time its id is seen; the same reply after."""
        self._forget_old()
        fingerprint = _fingerprint(verb, args)
        seen = self._seen.get(request_id)
        if seen is not None:
            if seen.fingerprint != fingerprint:
                return {
                    "ok": False,
                    "error": f"request_id {request_id!r} was already used for another command",
                }
            self.replayed += 1
            return seen.reply
        reply = await run()
        self._seen[request_id] = _Seen(fingerprint, reply, self._clock())
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        return reply

    def _forget_old(self) -> None:
        cutoff = self._clock() - REMEMBER_S
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest.at_s >= cutoff:
                return
            self._seen.popitem(last=False)
