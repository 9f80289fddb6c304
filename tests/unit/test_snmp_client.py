"""SnmpClient over real UDP sockets against a scripted peer and the simulated agent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from drivers.errors import ConfigurationError, DeviceError, TransportError
from drivers.snmp import (
    AuthProtocol,
    NotWritableError,
    PrivProtocol,
    SnmpAuthError,
    SnmpClient,
    SnmpTimeout,
    TooBigError,
    UsmUser,
    VarBind,
    parse_oid,
)
from drivers.snmp.message import (
    CommunityMessage,
    SnmpVersion,
    decode_message,
    encode_message,
)
from drivers.snmp.protocol_pdu import ErrorStatus, Pdu, PduType, Tag
from sim_devices.snmp_agent import AgentConfig, Mib, SnmpAgent

SYS_NAME = parse_oid("1.3.6.1.2.1.1.5.0")
Responder = Callable[[CommunityMessage], list[bytes]]


class ScriptedPeer(asyncio.DatagramProtocol):
    """A UDP peer whose answers the test writes: responder(request) -> datagrams to send."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.received: list[CommunityMessage] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        msg = decode_message(data)
        assert isinstance(msg, CommunityMessage)
        self.received.append(msg)
        assert self.transport is not None
        for reply in self.responder(msg):
            self.transport.sendto(reply, addr)


def answer(msg: CommunityMessage, *, request_id: int | None = None, status: int = 0) -> bytes:
    rid = msg.pdu.request_id if request_id is None else request_id
    vbs = tuple(VarBind.octets(vb.oid, b"pod-a") for vb in msg.pdu.varbinds)
    return encode_message(
        CommunityMessage(msg.community, Pdu(PduType.RESPONSE, rid, status, 1, vbs))
    )


PeerFactory = Callable[[Responder], Awaitable[tuple[ScriptedPeer, int]]]


@pytest.fixture
async def peer_factory() -> AsyncIterator[PeerFactory]:
    transports: list[asyncio.DatagramTransport] = []
    loop = asyncio.get_running_loop()

    async def make(responder: Responder) -> tuple[ScriptedPeer, int]:
        peer = ScriptedPeer(responder)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: peer, local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return peer, int(transport.get_extra_info("sockname")[1])

    yield make
    for transport in transports:
        transport.close()


async def test_get_returns_the_answer(peer_factory: PeerFactory) -> None:
    peer, port = await peer_factory(lambda m: [answer(m)])
    async with SnmpClient("127.0.0.1", port, community="public") as client:
        vbs = await client.get([SYS_NAME])
    assert vbs == (VarBind.octets(SYS_NAME, b"pod-a"),)
    assert peer.received[0].community == b"public"
    assert peer.received[0].pdu.type is PduType.GET


async def test_stale_and_malformed_replies_are_ignored(peer_factory: PeerFactory) -> None:
    def responder(m: CommunityMessage) -> list[bytes]:
        stale = answer(m, request_id=m.pdu.request_id - 1)
        vbs = tuple(VarBind.octets(vb.oid, b"forged") for vb in m.pdu.varbinds)
        v1 = encode_message(
            CommunityMessage(
                m.community, Pdu(PduType.RESPONSE, m.pdu.request_id, 0, 0, vbs), SnmpVersion.V1
            )
        )
        return [stale, b"\x30\x03\x02\x01", v1, answer(m)]

    _, port = await peer_factory(responder)
    async with SnmpClient("127.0.0.1", port) as client:
        vbs = await client.get([SYS_NAME])
        assert vbs[0].value == b"pod-a"  # not the v1 message with the right id
        assert client.stats.dropped == 3
        assert client.stats.responses == 1


@pytest.mark.looptime
async def test_reply_from_another_address_is_ignored(peer_factory: PeerFactory) -> None:
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    client_addr: list[tuple[str, int]] = []

    def responder(m: CommunityMessage) -> list[bytes]:
        # The right answer, but sent from a different port.
        stranger.sendto(answer(m), client_addr[0])
        return []

    try:
        _, port = await peer_factory(responder)
        async with SnmpClient("127.0.0.1", port, timeout_s=1.0, retries=0) as client:
            assert client._link is not None
            client_addr.append(client._link._transport.get_extra_info("sockname"))
            with pytest.raises(SnmpTimeout):
                await client.get([SYS_NAME])
    finally:
        stranger.close()


@pytest.mark.looptime
async def test_retry_after_a_lost_request(peer_factory: PeerFactory) -> None:
    seen: list[int] = []

    def responder(m: CommunityMessage) -> list[bytes]:
        seen.append(m.pdu.request_id)
        return [] if len(seen) == 1 else [answer(m)]

    _, port = await peer_factory(responder)
    loop = asyncio.get_running_loop()
    async with SnmpClient("127.0.0.1", port, timeout_s=2.0, retries=2) as client:
        start = loop.time()
        await client.get([SYS_NAME])
        assert loop.time() - start == pytest.approx(2.0, abs=0.1)
        assert client.stats.requests_sent == 2
        assert client.stats.timeouts == 1
    assert len(set(seen)) == 2  # each attempt has its own request id


@pytest.mark.looptime
async def test_timeout_after_all_attempts(peer_factory: PeerFactory) -> None:
    peer, port = await peer_factory(lambda m: [])
    loop = asyncio.get_running_loop()
    async with SnmpClient("127.0.0.1", port, timeout_s=1.5, retries=2) as client:
        start = loop.time()
        with pytest.raises(SnmpTimeout, match="after 3 attempts") as info:
            await client.get([SYS_NAME])
        assert loop.time() - start == pytest.approx(4.5, abs=0.1)
    assert isinstance(info.value, TransportError)
    assert len(peer.received) == 3


@pytest.mark.looptime
async def test_late_answer_to_an_earlier_attempt_counts(peer_factory: PeerFactory) -> None:
    first: list[CommunityMessage] = []

    def responder(m: CommunityMessage) -> list[bytes]:
        if not first:
            first.append(m)
            return []
        return [answer(first[0])]  # the second attempt draws the answer to the first

    _, port = await peer_factory(responder)
    async with SnmpClient("127.0.0.1", port, timeout_s=1.0, retries=1) as client:
        assert (await client.get([SYS_NAME]))[0].value == b"pod-a"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (ErrorStatus.TOO_BIG, TooBigError),
        (ErrorStatus.NOT_WRITABLE, NotWritableError),
        (ErrorStatus.GEN_ERR, DeviceError),
        (99, DeviceError),
    ],
)
async def test_error_status_maps_to_device_errors(
    peer_factory: PeerFactory, status: int, error: type[Exception]
) -> None:
    _, port = await peer_factory(lambda m: [answer(m, status=status)])
    async with SnmpClient("127.0.0.1", port) as client:
        with pytest.raises(error) as info:
            await client.get([SYS_NAME])
    assert isinstance(info.value, DeviceError)
    assert not isinstance(info.value, TransportError)


async def test_set_uses_the_write_community(peer_factory: PeerFactory) -> None:
    peer, port = await peer_factory(lambda m: [answer(m)])
    async with SnmpClient(
        "127.0.0.1", port, community="public", write_community="private"
    ) as client:
        await client.set([VarBind.octets(SYS_NAME, b"x")])
        await client.get_bulk([SYS_NAME], non_repeaters=0, max_repetitions=7)
        await client.get_next([SYS_NAME])
    kinds = [(m.pdu.type, m.community) for m in peer.received]
    assert kinds == [
        (PduType.SET, b"private"),
        (PduType.GET_BULK, b"public"),
        (PduType.GET_NEXT, b"public"),
    ]
    assert peer.received[1].pdu.error_index == 7


async def test_close_fails_a_request_in_flight_as_a_transport_error(
    peer_factory: PeerFactory,
) -> None:
    _, port = await peer_factory(lambda m: [])
    client = SnmpClient("127.0.0.1", port, timeout_s=5.0)
    await client.open()
    request = asyncio.create_task(client.get([SYS_NAME]))
    await asyncio.sleep(0.01)
    await client.close()
    with pytest.raises(TransportError, match="closed"):
        await request


async def test_request_before_open_is_a_transport_error() -> None:
    client = SnmpClient("127.0.0.1", 9)
    with pytest.raises(TransportError, match="not open"):
        await client.get([SYS_NAME])


async def test_unresolvable_host_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot resolve"):
        await SnmpClient("no-such-host.invalid", 161).open()


# ---------------------------------------------------------------- v3 against the sim agent

USER = UsmUser(
    "megapod",
    AuthProtocol.HMAC_SHA_96,
    "megapod-auth-pass",
    PrivProtocol.AES128,
    "megapod-priv-pass",
)
ENGINE = b"\x80\x00\x01\x3e\x04client-test"


async def _agent(
    boots: int = 1, port: int = 0, users: tuple[UsmUser, ...] = (USER,)
) -> tuple[SnmpAgent, int]:
    mib = Mib()
    mib.add_constant(SYS_NAME, Tag.OCTET_STRING, b"v3-agent")
    agent = SnmpAgent(mib, AgentConfig(users=users, engine_id=ENGINE, engine_boots=boots))
    return agent, await agent.start("127.0.0.1", port)


async def test_v3_discovers_the_engine_and_reads() -> None:
    agent, port = await _agent()
    try:
        async with SnmpClient("127.0.0.1", port, user=USER) as client:
            assert (await client.get([SYS_NAME]))[0].value == b"v3-agent"
            assert (await client.get([SYS_NAME]))[0].value == b"v3-agent"
            assert client.stats.requests_sent == 3  # discovery once, then one per GET
    finally:
        agent.close()


@pytest.mark.parametrize(
    "user",
    [
        UsmUser(
            "megapod",
            AuthProtocol.HMAC_SHA_96,
            "wrong-auth-pass",
            PrivProtocol.AES128,
            "megapod-priv-pass",
        ),
        UsmUser(
            "nobody",
            AuthProtocol.HMAC_SHA_96,
            "megapod-auth-pass",
            PrivProtocol.AES128,
            "megapod-priv-pass",
        ),
        UsmUser("megapod", AuthProtocol.HMAC_SHA_96, "megapod-auth-pass"),
    ],
    ids=["wrong-digest", "unknown-user", "wrong-level"],
)
async def test_v3_refusals_are_configuration_errors(user: UsmUser) -> None:
    agent, port = await _agent()
    try:
        async with SnmpClient("127.0.0.1", port, user=user) as client:
            with pytest.raises(SnmpAuthError):
                await client.get([SYS_NAME])
    finally:
        agent.close()


async def test_v3_wrong_priv_key_gets_no_usable_answer() -> None:
    agent, port = await _agent()
    wrong_priv = UsmUser(
        "megapod",
        AuthProtocol.HMAC_SHA_96,
        "megapod-auth-pass",
        PrivProtocol.AES128,
        "wrong-priv-pass",
    )
    try:
        async with SnmpClient(
            "127.0.0.1", port, user=wrong_priv, timeout_s=0.5, retries=0
        ) as client:
            # The agent cannot decrypt: a decryptionErrors Report, which no retry fixes.
            with pytest.raises(SnmpAuthError, match="DECRYPTION_ERRORS"):
                await client.get([SYS_NAME])
    finally:
        agent.close()


async def test_v3_resyncs_after_the_agent_reboots() -> None:
    agent, port = await _agent(boots=1)
    async with SnmpClient("127.0.0.1", port, user=USER) as client:
        await client.get([SYS_NAME])
        agent.close()
        await asyncio.sleep(0)  # the transport lets go of the port on the next loop turn
        # Same engine, same port, one boot later: our cached boots are now wrong.
        agent, _ = await _agent(boots=2, port=port)
        try:
            assert (await client.get([SYS_NAME]))[0].value == b"v3-agent"
            assert agent.stats.reports == 1  # one notInTimeWindow, then success
        finally:
            agent.close()


@pytest.mark.looptime
async def test_v3_time_keeps_up_with_the_loop_clock() -> None:
    agent, port = await _agent()
    try:
        async with SnmpClient("127.0.0.1", port, user=USER) as client:
            await client.get([SYS_NAME])
            await asyncio.sleep(3600)  # far outside the 150 s window unless time is tracked
            await client.get([SYS_NAME])
            assert agent.stats.reports == 1  # only the discovery Report
    finally:
        agent.close()


@pytest.mark.looptime
async def test_a_set_sent_once_is_never_resent() -> None:
    """A reboot command whose reply is lost must not be sent again."""
    received: list[bytes] = []
    loop = asyncio.get_running_loop()

    class Silent(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.append(data)

    transport, _ = await loop.create_datagram_endpoint(Silent, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    client = SnmpClient("127.0.0.1", port, timeout_s=1.0, retries=2)
    await client.open()
    try:
        with pytest.raises(SnmpTimeout, match="after 1 attempt "):
            await client.set([VarBind.integer((1, 3, 6, 1, 2, 1, 1, 5, 0), 3)], once=True)
        assert len(received) == 1
    finally:
        await client.close()
        transport.close()
