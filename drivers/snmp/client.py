"""Asyncio SNMP client (v2c and v3/USM): GET, GETNEXT, GETBULK, SET with timeouts and retries.

Each call sends one request and waits `timeout_s` for the matching answer,
resending up to `retries` times; answers are matched by request id (v2c) or
msgID (v3) and anything else is dropped. A non-zero error-status raises a
DeviceError subclass; v3 Reports that a resync can fix (unknown engine ID, not
in time window) are fixed and retried once, the rest raise ConfigurationError.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from drivers.errors import DeviceError, TransportError
from drivers.snmp.ber import Oid, SnmpCodecError
from drivers.snmp.errors import SnmpAuthError, SnmpTimeout, status_error
from drivers.snmp.message import (
    MAX_MESSAGE_SIZE,
    CommunityMessage,
    MsgFlags,
    ScopedPdu,
    SnmpVersion,
    UsmParams,
    V3Message,
    decode_message,
    encode_community,
)
from drivers.snmp.protocol_pdu import ErrorStatus, Pdu, PduType, VarBind
from drivers.snmp.transport import UdpLink
from drivers.snmp.usm import USM_STATS, UsmStat
from drivers.snmp.v3 import LocalizedUser, SaltCounter, UsmFailure, UsmUser, protect, unprotect

log = structlog.get_logger(__name__)

_ID_LIMIT = 2**31 - 1


@dataclass(slots=True)
class ClientStats:
    requests: int = 0  # requests asked for, retransmissions not counted
    requests_sent: int = 0  # datagrams sent, retransmissions included
    error_status: int = 0  # answers with an error-status (the agent said no)
    responses: int = 0
    timeouts: int = 0
    dropped: int = 0  # malformed, stale or unauthenticated datagrams


@dataclass(frozen=True, slots=True)
class _Reply:
    pdu: Pdu
    usm: UsmParams | None = None


@dataclass(slots=True)
class _Engine:
    """What we know of the agent's authoritative engine."""

    engine_id: bytes
    boots: int
    time: int
    synced_at: float
    keys: LocalizedUser


class SnmpClient:
    """One agent at host:port. Use `async with SnmpClient(...)` or open()/close()."""

    def __init__(
        self,
        host: str,
        port: int = 161,
        *,
        community: str = "public",
        write_community: str | None = None,
        user: UsmUser | None = None,
        timeout_s: float = 1.0,
        retries: int = 1,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.host = host
        self.port = port
        self._community = community.encode()
        self._write_community = (write_community or community).encode()
        self._user = user
        self.timeout_s = timeout_s
        self.retries = retries
        self._max_size = max_message_size
        self._link: UdpLink | None = None
        self._pending: dict[int, tuple[asyncio.Future[_Reply], LocalizedUser | None]] = {}
        self._next_id = secrets.randbelow(_ID_LIMIT // 2) + 1
        self._engine: _Engine | None = None
        self._salt = SaltCounter()
        self.stats = ClientStats()

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._link is None:
            self._link = await UdpLink.open(self.host, self.port, self._on_datagram)

    async def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        # A request still waiting fails as a transport error, not as a cancellation
        # of its caller's task.
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(TransportError(f"SNMP client for {self.host} closed"))
        self._pending.clear()

    async def __aenter__(self) -> SnmpClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ operations

    async def get(self, oids: Sequence[Oid]) -> tuple[VarBind, ...]:
        return (await self.request(PduType.GET, [VarBind.null(o) for o in oids])).varbinds

    async def get_next(self, oids: Sequence[Oid]) -> tuple[VarBind, ...]:
        return (await self.request(PduType.GET_NEXT, [VarBind.null(o) for o in oids])).varbinds

    async def get_bulk(
        self, oids: Sequence[Oid], *, non_repeaters: int = 0, max_repetitions: int = 10
    ) -> tuple[VarBind, ...]:
        pdu = await self.request(
            PduType.GET_BULK, [VarBind.null(o) for o in oids], non_repeaters, max_repetitions
        )
        return pdu.varbinds

    async def set(self, varbinds: Sequence[VarBind], *, once: bool = False) -> tuple[VarBind, ...]:
        """`once`: send a single time, never resend (a lost reply to a reboot
        command must not reboot twice)."""
        return (await self.request(PduType.SET, varbinds, once=once)).varbinds

    async def request(
        self,
        pdu_type: PduType,
        varbinds: Sequence[VarBind],
        non_repeaters: int = 0,
        max_repetitions: int = 0,
        *,
        once: bool = False,
    ) -> Pdu:
        """Send one request PDU and return the Response; raises on error-status."""
        vbs = tuple(varbinds)
        self.stats.requests += 1
        if self._user is None:
            community = self._write_community if pdu_type is PduType.SET else self._community

            def build_v2c(rid: int) -> bytes:
                pdu = Pdu(pdu_type, rid, non_repeaters, max_repetitions, vbs)
                return encode_community(CommunityMessage(community, pdu))

            reply = await self._exchange(build_v2c, None, once)
        else:
            reply = await self._request_v3(
                self._user, pdu_type, vbs, non_repeaters, max_repetitions, once
            )
        pdu = reply.pdu
        if pdu.type is not PduType.RESPONSE:
            raise DeviceError(f"agent answered with a {pdu.type.name} PDU")
        if pdu.error_status != ErrorStatus.NO_ERROR:
            self.stats.error_status += 1
            raise status_error(pdu.error_status, pdu.error_index, f"{pdu_type.name} {self.host}")
        return pdu

    # ------------------------------------------------------------ v3

    async def _request_v3(
        self,
        user: UsmUser,
        pdu_type: PduType,
        vbs: tuple[VarBind, ...],
        non_rep: int,
        max_rep: int,
        once: bool = False,
    ) -> _Reply:
        engine = self._engine or await self._discover(user)
        for attempt in range(2):

            def build_v3(rid: int, engine: _Engine = engine, user: UsmUser = user) -> bytes:
                loop_now = asyncio.get_running_loop().time()
                pdu = Pdu(pdu_type, rid, non_rep, max_rep, vbs)
                return protect(
                    ScopedPdu(engine.engine_id, b"", pdu),
                    msg_id=rid,
                    flags=user.flags | MsgFlags.REPORTABLE,
                    engine_id=engine.engine_id,
                    engine_boots=engine.boots,
                    engine_time=max(0, engine.time + int(loop_now - engine.synced_at)),
                    user_name=user.name.encode(),
                    keys=engine.keys,
                    salt=self._salt,
                    max_size=self._max_size,
                )

            reply = await self._exchange(build_v3, engine.keys, once)
            if reply.pdu.type is not PduType.REPORT:
                return reply
            stat = _report_stat(reply.pdu)
            if stat in (UsmStat.UNKNOWN_ENGINE_IDS, UsmStat.NOT_IN_TIME_WINDOWS) and attempt == 0:
                log.info("snmp_v3_resync", host=self.host, reason=stat.name)
                if reply.usm is not None:
                    engine = self._sync(user, reply.usm)
                continue
            raise _report_error(stat, reply.pdu, self.host)
        raise SnmpAuthError(f"{self.host}: engine time resync did not help")

    async def _discover(self, user: UsmUser) -> _Engine:
        """RFC 3414 section 4: an empty unauthenticated GET draws a Report naming the engine."""

        def build(rid: int) -> bytes:
            return protect(
                ScopedPdu(b"", b"", Pdu(PduType.GET, rid)),
                msg_id=rid,
                flags=MsgFlags.REPORTABLE,
                engine_id=b"",
                engine_boots=0,
                engine_time=0,
                user_name=b"",
                keys=None,
                max_size=self._max_size,
            )

        reply = await self._exchange(build, None)
        if reply.usm is None or not reply.usm.engine_id:
            raise SnmpAuthError(f"{self.host}: engine discovery got no engine ID")
        return self._sync(user, reply.usm)

    def _sync(self, user: UsmUser, params: UsmParams) -> _Engine:
        loop_now = asyncio.get_running_loop().time()
        keys = self._engine.keys if self._engine else None
        if keys is None or keys.engine_id != params.engine_id:
            keys = user.localize(params.engine_id)
        self._engine = _Engine(
            params.engine_id, params.engine_boots, params.engine_time, loop_now, keys
        )
        return self._engine

    # ------------------------------------------------------------ exchange

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id = rid + 1 if rid < _ID_LIMIT else 1
        return rid

    async def _exchange(
        self, build: Callable[[int], bytes], keys: LocalizedUser | None, once: bool = False
    ) -> _Reply:
        if self._link is None:
            raise TransportError(f"SNMP client for {self.host}:{self.port} is not open")
        future: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        ids: list[int] = []
        attempts = 1 if once else self.retries + 1
        try:
            for _ in range(attempts):
                rid = self._take_id()
                ids.append(rid)
                # Earlier attempts stay registered: a late answer to one is as good.
                self._pending[rid] = (future, keys)
                self._link.send(build(rid))
                self.stats.requests_sent += 1
                try:
                    async with asyncio.timeout(self.timeout_s):
                        return await asyncio.shield(future)
                except TimeoutError:
                    self.stats.timeouts += 1
            raise SnmpTimeout(
                f"no answer from {self.host}:{self.port} after {attempts} "
                f"{'attempt' if attempts == 1 else 'attempts'} "
                f"of {self.timeout_s} s"
            )
        finally:
            for rid in ids:
                self._pending.pop(rid, None)
            if not future.done():
                future.cancel()

    def _on_datagram(self, data: bytes) -> None:
        try:
            msg = decode_message(data)
        except SnmpCodecError as exc:
            self.stats.dropped += 1
            log.debug("snmp_malformed_reply", host=self.host, error=str(exc))
            return
        if isinstance(msg, CommunityMessage):
            key = msg.pdu.request_id
            entry = self._pending.get(key)
            # We speak v2c: a v1 message is no answer of ours, whatever its id.
            if entry is None or self._user is not None or msg.version is not SnmpVersion.V2C:
                self.stats.dropped += 1
                return
            reply = _Reply(msg.pdu)
        else:
            entry = self._pending.get(msg.msg_id)
            if entry is None or self._user is None:
                self.stats.dropped += 1
                return
            reply_or_none = _accept_v3(msg, data, entry[1])
            if reply_or_none is None:
                self.stats.dropped += 1
                log.debug("snmp_v3_reply_rejected", host=self.host, msg_id=msg.msg_id)
                return
            reply = reply_or_none
        future = entry[0]
        if not future.done():
            self.stats.responses += 1
            future.set_result(reply)


def _accept_v3(msg: V3Message, raw: bytes, keys: LocalizedUser | None) -> _Reply | None:
    """Authenticate a v3 answer; None if it must be ignored."""
    wanted = keys.user.flags if keys is not None else MsgFlags(0)
    try:
        scoped = unprotect(msg, raw, keys if msg.flags & MsgFlags.AUTH else None)
    except UsmFailure:
        return None
    # Reports about our credentials come unauthenticated; anything else must
    # come at the security level we asked for.
    if scoped.pdu.type is not PduType.REPORT and (msg.flags & wanted) != wanted:
        return None
    return _Reply(scoped.pdu, msg.usm)


def _report_stat(pdu: Pdu) -> UsmStat | None:
    for vb in pdu.varbinds:
        oid = vb.oid
        if len(oid) == len(USM_STATS) + 2 and oid[: len(USM_STATS)] == USM_STATS:
            try:
                return UsmStat(oid[len(USM_STATS)])
            except ValueError:
                return None
    return None


def _report_error(stat: UsmStat | None, pdu: Pdu, host: str) -> Exception:
    if stat is None:
        names = ", ".join(".".join(map(str, vb.oid)) for vb in pdu.varbinds)
        return DeviceError(f"{host}: agent sent a Report ({names or 'no varbinds'})")
    return SnmpAuthError(f"{host}: agent refused our SNMPv3 request: {stat.name}")
