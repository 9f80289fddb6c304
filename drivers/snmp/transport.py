"""Asyncio UDP link to one agent: sends datagrams, hands over only the peer's replies."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import structlog

from drivers.errors import ConfigurationError, TransportError

log = structlog.get_logger(__name__)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, peer: tuple[str, int], on_datagram: Callable[[bytes], None]) -> None:
        self._peer = peer
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        # The socket is connected, so the kernel already filters; check anyway
        # in case the platform does not.
        if (addr[0], addr[1]) != self._peer:
            log.debug("snmp_datagram_from_stranger", addr=addr)
            return
        self._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the request will time out and retry.
        log.debug("snmp_udp_error", error=str(exc))


class UdpLink:
    """A connected UDP socket to host:port."""

    def __init__(self, transport: asyncio.DatagramTransport, peer: tuple[str, int]) -> None:
        self._transport = transport
        self.peer = peer

    @classmethod
    async def open(cls, host: str, port: int, on_datagram: Callable[[bytes], None]) -> UdpLink:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:  # the resolver is down for now: retry later
                raise TransportError(f"cannot resolve SNMP host {host!r} yet: {exc}") from exc
            raise ConfigurationError(f"cannot resolve SNMP host {host!r}: {exc}") from exc
        family, _, _, _, sockaddr = infos[0]
        peer = (str(sockaddr[0]), int(sockaddr[1]))
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(peer, on_datagram), remote_addr=peer, family=family
            )
        except OSError as exc:
            raise TransportError(f"cannot open UDP socket to {host}:{port}: {exc}") from exc
        return cls(transport, peer)

    def send(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise TransportError("SNMP link is closed")
        self._transport.sendto(data)

    def close(self) -> None:
        self._transport.close()
