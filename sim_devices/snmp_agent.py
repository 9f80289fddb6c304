"""A small SNMP agent (v2c and v3/USM) on the lean engine in drivers/snmp.

Answers GET, GETNEXT, GETBULK and SET from a `Mib` of instance OIDs with
getter callables (and optional check/apply pairs for writable ones), the way a
real agent does: noSuchObject/noSuchInstance, endOfMibView, notWritable,
wrongType/wrongValue, tooBig, GETBULK truncated to the message size. A wrong
community gets silence; bad v3 credentials get the usmStats Report a real
agent sends. `handle()` maps request bytes to reply bytes without sockets.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from drivers.snmp.ber import Oid, SnmpCodecError
from drivers.snmp.message import (
    MAX_MESSAGE_SIZE,
    CommunityMessage,
    MsgFlags,
    ScopedPdu,
    SnmpVersion,
    V3Message,
    decode_message,
    encode_community,
)
from drivers.snmp.protocol_pdu import ErrorStatus, Pdu, PduType, Tag, Value, VarBind, encode_varbind
from drivers.snmp.usm import UsmStat
from drivers.snmp.v3 import LocalizedUser, SaltCounter, UsmFailure, UsmUser, protect, unprotect

log = structlog.get_logger(__name__)

Getter = Callable[[], tuple[Tag, Value]]
Checker = Callable[[Tag, Value], ErrorStatus]
Applier = Callable[[Value], None]

_TIME_WINDOW_S = 150  # RFC 3414 3.2 step 7
_MAX_BULK_VARBINDS = 2048  # bounds the work one request can cause
_ENVELOPE_SLACK = 24  # length octets that may grow as varbinds are added


@dataclass(frozen=True, slots=True)
class MibEntry:
    get: Getter
    check: Checker | None = None  # None: read-only
    apply: Applier | None = None


class Mib:
    """Instance OIDs in lexicographic order, each with its getter."""

    def __init__(self) -> None:
        self._entries: dict[Oid, MibEntry] = {}
        self._order: list[Oid] = []
        self._objects: set[Oid] = set()

    def add(
        self,
        oid: Oid,
        get: Getter,
        *,
        check: Checker | None = None,
        apply: Applier | None = None,
    ) -> None:
        if oid not in self._entries:
            bisect.insort(self._order, oid)
        self._entries[oid] = MibEntry(get, check, apply)
        # The object type is the instance minus its last index arc (X.0 for scalars).
        self._objects.add(oid[:-1])

    def add_constant(self, oid: Oid, tag: Tag, value: Value) -> None:
        pair = (tag, value)
        self.add(oid, lambda: pair)

    def remove(self, oid: Oid) -> None:
        """Drop an instance (a PDU that lacks a sensor); the object type stays known."""
        if self._entries.pop(oid, None) is not None:
            self._order.remove(oid)

    def __len__(self) -> int:
        return len(self._order)

    def entry(self, oid: Oid) -> MibEntry | None:
        return self._entries.get(oid)

    def get(self, oid: Oid) -> VarBind:
        entry = self._entries.get(oid)
        if entry is not None:
            tag, value = entry.get()
            return VarBind(oid, tag, value)
        for k in range(len(oid) - 1, 0, -1):
            if oid[:k] in self._objects:
                return VarBind(oid, Tag.NO_SUCH_INSTANCE)
        return VarBind(oid, Tag.NO_SUCH_OBJECT)

    def next(self, oid: Oid) -> VarBind:
        index = bisect.bisect_right(self._order, oid)
        if index >= len(self._order):
            return VarBind(oid, Tag.END_OF_MIB_VIEW)
        found = self._order[index]
        tag, value = self._entries[found].get()
        return VarBind(found, tag, value)


@dataclass(slots=True)
class AgentStats:
    requests: int = 0
    dropped: int = 0  # malformed, wrong community, unsupported
    reports: int = 0
    usm: dict[UsmStat, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    read_community: str = "public"
    write_community: str = "private"
    users: tuple[UsmUser, ...] = ()
    engine_id: bytes = b"\x80\x00\x01\x3e\x04megapod-sim"  # APC enterprise 318, text format
    engine_boots: int = 1
    max_message_size: int = MAX_MESSAGE_SIZE


class SnmpAgent(asyncio.DatagramProtocol):
    """One agent on one UDP port. Set `silent` to stop answering (fault injection)."""

    def __init__(self, mib: Mib, config: AgentConfig) -> None:
        self.mib = mib
        self.config = config
        self.silent = False
        self.stats = AgentStats()
        self._read = config.read_community.encode()
        self._write = config.write_community.encode()
        self._users: dict[bytes, LocalizedUser] = {
            u.name.encode(): u.localize(config.engine_id) for u in config.users
        }
        self._salt = SaltCounter()
        self._started = asyncio.get_running_loop().time()
        self._transport: asyncio.DatagramTransport | None = None

    # ------------------------------------------------------------ socket

    async def start(self, host: str, port: int) -> int:
        """Bind host:port (0 picks a free port); return the bound port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        return int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.silent:
            return
        reply = self.handle(data)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("snmp_agent_udp_error", error=str(exc))

    # ------------------------------------------------------------ processing

    @property
    def engine_time(self) -> int:
        now = asyncio.get_running_loop().time()
        # A replaced loop clock (a fake one in tests) may jump back: restart from there.
        self._started = min(self._started, now)
        return int(now - self._started)

    def handle(self, data: bytes) -> bytes | None:
        """Reply bytes for one request datagram, or None for silence."""
        self.stats.requests += 1
        try:
            msg = decode_message(data)
        except SnmpCodecError as exc:
            self.stats.dropped += 1
            log.debug("snmp_agent_malformed", error=str(exc))
            return None
        if isinstance(msg, V3Message):
            return self._handle_v3(msg, data)
        if msg.version is not SnmpVersion.V2C or msg.community not in (self._read, self._write):
            self.stats.dropped += 1  # wrong community: silence, as real agents do
            return None
        processed = self._process(
            msg.pdu, msg.community == self._write, self.config.max_message_size
        )
        if processed is None:
            return None
        response, encoded = processed
        return encode_community(CommunityMessage(msg.community, response), encoded)

    def _process(self, pdu: Pdu, write: bool, max_size: int) -> tuple[Pdu, bytes] | None:
        """The Response PDU and its varbind list encoded (so it is encoded once)."""
        kind = pdu.type
        if kind is PduType.GET:
            vbs = tuple([self.mib.get(vb.oid) for vb in pdu.varbinds])
        elif kind is PduType.GET_NEXT:
            vbs = tuple([self.mib.next(vb.oid) for vb in pdu.varbinds])
        elif kind is PduType.GET_BULK:
            response = self._bulk(pdu, max_size)
        elif kind is PduType.SET:
            response = self._set(pdu, write, max_size)
        else:
            self.stats.dropped += 1
            return None
        if kind in (PduType.GET, PduType.GET_NEXT):
            encoded = b"".join([encode_varbind(vb) for vb in vbs])
            if len(encoded) + _ENVELOPE_SLACK + 64 > max_size:
                return Pdu(PduType.RESPONSE, pdu.request_id, ErrorStatus.TOO_BIG, 0, ()), b""
            return Pdu(PduType.RESPONSE, pdu.request_id, 0, 0, vbs), encoded
        return response, b"".join([encode_varbind(vb) for vb in response.varbinds])

    def _bulk(self, pdu: Pdu, max_size: int) -> Pdu:
        request = pdu.varbinds
        non_rep = min(max(pdu.error_status, 0), len(request))
        max_rep = max(pdu.error_index, 0)
        budget = max_size - 64 - _ENVELOPE_SLACK
        out: list[VarBind] = []
        used = 0
        for vb in request[:non_rep]:
            found = self.mib.next(vb.oid)
            used += len(encode_varbind(found))
            out.append(found)
        if used > budget:
            return Pdu(PduType.RESPONSE, pdu.request_id, ErrorStatus.TOO_BIG, 0, ())
        cursors = [vb.oid for vb in request[non_rep:]]
        for _ in range(max_rep):
            if not cursors or len(out) + len(cursors) > _MAX_BULK_VARBINDS:
                break
            row = [self.mib.next(oid) for oid in cursors]
            size = sum(len(encode_varbind(vb)) for vb in row)
            if used + size > budget:
                break  # RFC 3416 4.2.3: send the rows that fit
            used += size
            out.extend(row)
            if all(vb.tag is Tag.END_OF_MIB_VIEW for vb in row):
                break
            cursors = [vb.oid for vb in row]
        return Pdu(PduType.RESPONSE, pdu.request_id, 0, 0, tuple(out))

    def _set(self, pdu: Pdu, write: bool, max_size: int) -> Pdu:
        def refuse(status: ErrorStatus, index: int) -> Pdu:
            return Pdu(PduType.RESPONSE, pdu.request_id, status, index, pdu.varbinds)

        if not write:
            return refuse(ErrorStatus.NO_ACCESS, 1)
        # The response repeats every varbind: one that would not fit is tooBig,
        # and nothing is set (RFC 3416 4.2.5).
        size = sum(len(encode_varbind(vb)) for vb in pdu.varbinds)
        if size + _ENVELOPE_SLACK + 64 > max_size:
            return Pdu(PduType.RESPONSE, pdu.request_id, ErrorStatus.TOO_BIG, 0, ())
        plan: list[tuple[Applier, Value]] = []
        for index, vb in enumerate(pdu.varbinds, start=1):
            entry = self.mib.entry(vb.oid)
            if entry is None or entry.check is None or entry.apply is None:
                return refuse(ErrorStatus.NOT_WRITABLE, index)
            status = entry.check(vb.tag, vb.value)
            if status is not ErrorStatus.NO_ERROR:
                return refuse(status, index)
            plan.append((entry.apply, vb.value))
        # All checked: commit together (RFC 3416 4.2.5 "as if simultaneously").
        for apply, value in plan:
            apply(value)
        return Pdu(PduType.RESPONSE, pdu.request_id, 0, 0, pdu.varbinds)

    # ------------------------------------------------------------ v3

    def _report(
        self, msg: V3Message, stat: UsmStat, keys: LocalizedUser | None, request_id: int = 0
    ) -> bytes | None:
        self.stats.usm[stat] = self.stats.usm.get(stat, 0) + 1
        if not msg.flags & MsgFlags.REPORTABLE:
            return None
        self.stats.reports += 1
        count = VarBind(stat.oid, Tag.COUNTER32, self.stats.usm[stat])
        report = Pdu(PduType.REPORT, request_id, 0, 0, (count,))
        # Only notInTimeWindow is sent authenticated (RFC 3414 3.2 step 7b).
        flags = MsgFlags.AUTH if keys is not None else MsgFlags(0)
        return protect(
            ScopedPdu(self.config.engine_id, b"", report),
            msg_id=msg.msg_id,
            flags=flags,
            engine_id=self.config.engine_id,
            engine_boots=self.config.engine_boots,
            engine_time=self.engine_time,
            user_name=msg.usm.user_name,
            keys=keys,
            max_size=self.config.max_message_size,
        )

    def _handle_v3(self, msg: V3Message, raw: bytes) -> bytes | None:
        if msg.usm.engine_id != self.config.engine_id:
            return self._report(msg, UsmStat.UNKNOWN_ENGINE_IDS, None)
        keys = self._users.get(msg.usm.user_name)
        if keys is None:
            return self._report(msg, UsmStat.UNKNOWN_USER_NAMES, None)
        level = msg.flags & (MsgFlags.AUTH | MsgFlags.PRIV)
        if level != keys.user.flags:
            return self._report(msg, UsmStat.UNSUPPORTED_SEC_LEVELS, None)
        try:
            scoped = unprotect(msg, raw, keys)
        except UsmFailure as failure:
            return self._report(msg, failure.stat, None)
        if msg.flags & MsgFlags.AUTH and (
            msg.usm.engine_boots != self.config.engine_boots
            or abs(msg.usm.engine_time - self.engine_time) > _TIME_WINDOW_S
        ):
            return self._report(msg, UsmStat.NOT_IN_TIME_WINDOWS, keys, scoped.pdu.request_id)
        write = True  # the configured v3 user is an rwuser
        max_size = min(self.config.max_message_size, msg.max_size)
        processed = self._process(scoped.pdu, write, max_size)
        if processed is None:
            return None
        response, encoded = processed
        return protect(
            ScopedPdu(self.config.engine_id, scoped.context_name, response),
            msg_id=msg.msg_id,
            flags=keys.user.flags,
            engine_id=self.config.engine_id,
            engine_boots=self.config.engine_boots,
            engine_time=self.engine_time,
            user_name=msg.usm.user_name,
            keys=keys,
            salt=self._salt,
            max_size=self.config.max_message_size,
            encoded_varbinds=encoded,
        )
