"""`GET /metrics` on the event loop: a small HTTP/1.1 server, one request per
connection.

The daemon's state is copied on the loop (a few milliseconds for the full
pod) and the families are built from the copy and turned into text in a
worker thread, so a scrape hardly holds up the control tick. Requests are bounded (head size, time,
connections at once); anything else gets a short error and the connection
is closed. A port that cannot be bound is logged and tried again, never a
reason to stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Callable, Iterable

import structlog
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from megapodd.backoff import Backoff

log = structlog.get_logger("megapodd.metrics")

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 8
# The classic text format, which every Prometheus and Telegraf reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Frozen(Collector):
    """Families collected on the loop, formatted elsewhere."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(collect: Callable[[], Iterable[Metric]]) -> bytes:
    """The text format of what `collect` gives, in this thread."""
    return generate_latest(_Frozen(list(collect())))


# Called on the loop: copies what a scrape needs and returns what builds the
# families from that copy (run in a worker thread).
Freeze = Callable[[], Callable[[], Iterable[Metric]]]


class MetricsServer:
    def __init__(self, host: str, port: int, freeze: Freeze) -> None:
        self._host, self._port = host, port
        self._freeze = freeze
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.scrapes = 0
        self.bound = asyncio.Event()

    async def run(self) -> None:
        """Serve until cancelled; retry binding with backoff while the port is refused."""
        backoff = Backoff(initial_s=1.0, max_s=60.0)
        failures = 0
        while True:
            try:
                server = await asyncio.start_server(
                    self._serve, self._host, self._port, limit=MAX_HEAD_BYTES
                )
            except OSError as exc:
                delay_s = backoff.next_delay_s()
                failures += 1
                level = log.warning if failures == 1 else log.debug
                level(
                    "metrics_listen_failed",
                    listen=f"{self._host}:{self._port}",
                    error=str(exc),
                    retry_in_s=round(delay_s, 1),
                )
                await asyncio.sleep(delay_s)
                continue
            log.info("metrics_listening", listen=f"{self._host}:{self._port}", path="/metrics")
            self.bound.set()
            async with server:
                await server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._slots.locked():
                await self._respond(writer, 503, b"too many scrapes at once\n")
                return
            async with self._slots:
                await self._handle(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or was too slow: nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._respond(writer, 431, b"request head too large\n")
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._respond(writer, 400, b"not an HTTP/1.x request\n")
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            await self._respond(writer, 405, b"only GET\n", extra=[("Allow", "GET, HEAD")])
            return
        path = target.partition("?")[0]
        if path == "/":
            await self._respond(writer, 200, b"megapodd: metrics at /metrics\n")
            return
        if path != "/metrics":
            await self._respond(writer, 404, b"not found; metrics at /metrics\n")
            return
        body = await asyncio.to_thread(render, self._freeze())
        self.scrapes += 1
        headers = [("Content-Type", CONTENT_TYPE)]
        accept = [
            v for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "accept-encoding"
        ]
        if any("gzip" in value.lower() for value in accept):
            body = await asyncio.to_thread(gzip.compress, body, 1)
            headers.append(("Content-Encoding", "gzip"))
        await self._respond(writer, 200, body, extra=headers, head_only=method == "HEAD")

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: list[tuple[str, str]] | None = None,
        head_only: bool = False,
    ) -> None:
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                   431: "Request Header Fields Too Large", 503: "Service Unavailable"}  # fmt: skip
        headers = extra or [("Content-Type", "text/plain; charset=utf-8")]
        lines = [f"HTTP/1.1 {status} {reasons[status]}", f"Content-Length: {len(body)}",
                 "Connection: close", *(f"{k}: {v}" for k, v in headers)]  # fmt: skip
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()
