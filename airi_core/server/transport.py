"""The transport: sockets, outboxes, write batching, backpressure and limits.

It accepts WebSocket connections on the configured path, hands every frame to the kernel
(:meth:`Hub.on_frame <airi_core.server.kernel.Hub.on_frame>`), and writes what the kernel sends:

- one WebSocket frame is built per outgoing event, whatever the number of receivers (a server's
  frames are unmasked and no extension is negotiated, so the bytes are the same for everyone);
- frames queue in a per-peer outbox, and every outbox is written with one ``transport.write`` at
  the end of the loop iteration, so a burst costs each receiver one system call;
- a peer whose unsent backlog passes ``limits.outbound_soft_bytes`` is *behind*: the sender whose
  event reached it waits while it drains (backpressure, so a burst never costs a reading peer a
  message); a peer that drains nothing for ``limits.slow_consumer_grace_ms``, or whose backlog
  passes ``limits.outbound_hard_bytes``, is a slow consumer and is dropped;
- limits: frame size (close 1009), connections (HTTP 503), messages per second per peer.

This is the one module that knows the ``websockets`` library, including the internals the
write path relies on (``ServerConnection.transport``, ``.paused``, ``.drain()``,
``.protocol.state``); pyproject.toml pins ``websockets`` to the releases that have them.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .peer import Peer

if TYPE_CHECKING:
    from .kernel import Hub

__all__ = ["Transport", "Connection", "text_frame"]

_OPEN = State.OPEN


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 section 5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


class Connection:
    """The transport's side of one peer: its socket, outbox, backpressure and rate-limit state."""

    __slots__ = (
        "ws",
        "outbox",
        "sent_bytes",
        "drained_mark",
        "progress_at",
        "pressing",
        "tokens",
        "tokens_at",
        "rate_error_at",
    )

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.outbox: list[bytes] = []  # frames queued for the next flush
        # backpressure: bytes written so far, bytes known drained, when it last made progress
        self.sent_bytes = 0
        self.drained_mark = 0
        self.progress_at = 0.0
        self.pressing = False  # an event this peer sent reached a peer that is behind
        # inbound rate limit (token bucket)
        self.tokens = 0.0
        self.tokens_at = 0.0
        self.rate_error_at = 0.0

    def writable(self) -> bool:
        return self.ws.protocol.state is _OPEN


class Transport:
    """Owns the listening socket and every connection of one hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = hub.settings
        limits = self.settings.limits
        self._soft = limits.outbound_soft_bytes
        self._hard = limits.outbound_hard_bytes
        self._grace = limits.slow_consumer_grace_ms / 1000
        self._rate = limits.max_messages_per_second
        self._behind: dict[Peer, None] = {}
        self._dirty: list[Peer] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self.closing = False
        self.log = logging.getLogger("airi.websocket")

    # -- writing -----------------------------------------------------------------------------------
    def write(self, peers: Iterable[Peer], text: str, sender: Peer | None = None) -> int:
        """Queue ``text`` for each peer without awaiting any socket; returns how many were open.

        With ``sender``, a receiver that is behind holds the sender back (see :meth:`throttle`);
        server-originated events (no sender) never hold anyone back."""
        frame = text_frame(text.encode())
        sent = 0
        dirty = self._dirty
        for peer in peers:
            conn = peer._conn
            if conn is None or peer.closed or conn.ws.protocol.state is not _OPEN:
                continue
            outbox = conn.outbox
            if not outbox:
                dirty.append(peer)
            outbox.append(frame)
            sent += 1
            if conn.ws.paused and sender is not None and sender._conn is not None:  # behind as of the last flush
                sender._conn.pressing = True
        if sent:
            self.hub.stats["messages_out"] += sent
            if not self._flush_scheduled:
                self._flush_scheduled = True
                (self._loop or asyncio.get_running_loop()).call_soon(self.flush)
        return sent

    def flush(self) -> None:
        """Write every peer's queued frames, one ``transport.write`` per peer."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        soft = self._soft
        for peer in dirty:
            conn: Connection = peer._conn  # type: ignore[assignment]  # only peers with one are queued
            outbox = conn.outbox
            data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            outbox.clear()
            # a peer detached since its frames were queued still gets them, before its close
            if conn.ws.protocol.state is not _OPEN:
                continue
            transport = conn.ws.transport
            if transport.is_closing():
                continue
            try:
                transport.write(data)
            except Exception as exc:  # the transport died under us
                self.log.debug("write to %s failed: %s", peer.describe, exc)
                self.hub.disconnect(peer, "send failed", 1011)
                continue
            conn.sent_bytes += len(data)
            backlog = transport.get_write_buffer_size()
            if backlog > soft:
                self._mark_behind(peer, conn, backlog)

    def _mark_behind(self, peer: Peer, conn: Connection, backlog: int) -> None:
        if backlog > self._hard:
            self._behind.pop(peer, None)
            self._slow_consumer(peer, backlog, time.monotonic() - conn.progress_at if conn.progress_at else 0.0)
            return
        if peer not in self._behind:
            self._behind[peer] = None
            conn.progress_at = time.monotonic()
            conn.drained_mark = conn.sent_bytes - backlog

    async def throttle(self) -> None:
        """Hold the calling sender while peers that are behind drain their backlog.

        A peer that drains nothing for ``limits.slow_consumer_grace_ms`` is a slow consumer and
        is dropped, after which the senders go on."""
        grace = self._grace
        while self._behind:
            now = time.monotonic()
            waiting: list[Connection] = []
            deadline = grace
            for peer in list(self._behind):
                conn = peer._conn
                if peer.closed or conn is None or not conn.ws.paused:
                    self._behind.pop(peer, None)
                    continue
                backlog = conn.ws.transport.get_write_buffer_size()
                drained = conn.sent_bytes - backlog
                if drained > conn.drained_mark:
                    conn.drained_mark = drained
                    conn.progress_at = now
                stalled = now - conn.progress_at
                if stalled >= grace:
                    self._behind.pop(peer, None)
                    self._slow_consumer(peer, backlog, stalled)
                    continue
                waiting.append(conn)
                deadline = min(deadline, grace - stalled)
            if not waiting:
                return
            drains = [asyncio.ensure_future(c.ws.drain()) for c in waiting]
            # wake up when they all drained, or to re-check progress, or at the earliest grace end
            _, pending = await asyncio.wait(drains, timeout=min(max(deadline, 0.001), 0.1))
            for fut in pending:
                fut.cancel()

    def _slow_consumer(self, peer: Peer, backlog: int, behind_for: float) -> None:
        self.hub.stats["slow_consumers"] += 1
        self.log.warning(
            "slow consumer %s: %d bytes pending, nothing drained for %.1f s, disconnecting",
            peer.describe, backlog, behind_for,
            extra={"peer": peer.id, "backlog_bytes": backlog},
        )
        self.hub.disconnect(peer, "slow consumer", 1008)

    async def close(self, peer: Peer, code: int, reason: str) -> None:
        """Close ``peer``'s socket after what was already queued for it (a close frame written
        before queued frames would make the client drop them)."""
        conn = peer._conn
        if conn is None:
            return
        if self._dirty:
            self.flush()
        await conn.ws.close(code, reason[:120])

    # -- reading -----------------------------------------------------------------------------------
    def _take_token(self, peer: Peer, conn: Connection, now: float) -> bool:
        """Token bucket of ``limits.max_messages_per_second`` (burst: one second's worth)."""
        rate = self._rate
        tokens = min(rate, conn.tokens + (now - conn.tokens_at) * rate) if conn.tokens_at else rate
        conn.tokens_at = now
        if tokens >= 1:
            conn.tokens = tokens - 1
            return True
        conn.tokens = tokens
        self.hub.stats["rate_limited"] += 1
        if now - conn.rate_error_at >= 1.0:  # at most one error a second: no amplification
            conn.rate_error_at = now
            self.log.warning("rate limit: dropping frames from %s", peer.display, extra={"peer": peer.id})
            self.hub.send_error(peer, f"rate limit exceeded: at most {rate:g} messages per second, frame dropped")
        return False

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        expected = self.settings.server.path
        if path != expected:
            return connection.respond(404, f"no WebSocket endpoint at {path}; use {expected}\n")
        if self.closing:
            return connection.respond(503, "server shutting down\n")
        limit = self.settings.limits.max_connections
        if len(self.hub.registry) >= limit:
            self.hub.stats["refused_connections"] += 1
            self.log.warning("refusing a connection: limits.max_connections (%d) reached", limit)
            return connection.respond(503, "too many connections\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        remote = ws.remote_address
        conn = Connection(ws)
        peer = Peer(f"{remote[0]}:{remote[1]}" if remote else "", conn)
        hub = self.hub
        rate = self._rate
        try:
            await hub.connected(peer)
            async for frame in ws:
                if rate and not self._take_token(peer, conn, time.monotonic()):
                    continue
                res = hub.on_frame(peer, frame)
                if res is not None:
                    await res
                if conn.pressing:
                    conn.pressing = False
                    await self.throttle()
        except ConnectionClosed:
            pass
        finally:
            await hub.disconnected(peer, "connection closed")
            sent = ws.protocol.close_sent
            if sent is not None and sent.code == 1009:
                # we closed it for a too-big frame (the peer may never answer: code reads 1006)
                hub.stats["oversized_frames"] += 1
                self.log.warning(
                    "closed %s: frame larger than limits.max_frame_bytes (%d)",
                    peer.describe, self.settings.limits.max_frame_bytes, extra={"peer": peer.id},
                )
            self.log.info("closed %s code=%s (%d peers)", peer.describe, ws.close_code, len(hub.registry), extra={"peer": peer.id})

    # -- the listening socket ----------------------------------------------------------------------
    async def listen(self, host: str, port: int) -> Server:
        self._loop = asyncio.get_running_loop()
        cfg = self.settings.server
        ssl_context = None
        if cfg.tls is not None:
            import ssl

            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=self.settings.limits.max_frame_bytes,
            max_queue=16,
            write_limit=self._soft,
            ping_interval=None,
            compression=None,
            close_timeout=self.settings.limits.close_timeout_ms / 1000,
            ssl=ssl_context,
            logger=logging.getLogger("websockets.server"),
        )
        return self._server

    def stop_accepting(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close(close_connections=False)

    async def close_all(self, peers: list[Peer], timeout: float) -> None:
        """Write what is queued, then close ``peers`` with ``1001 server shutdown`` and stop the
        server, waiting at most ``timeout`` seconds."""
        self.flush()
        closes = [asyncio.ensure_future(p._conn.ws.close(1001, "server shutdown")) for p in peers if p._conn is not None]
        if closes:
            await asyncio.wait(closes, timeout=max(timeout, 0.01))
        server = self._server
        if server is not None:
            server.close(close_connections=True)
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=max(timeout, 0.1))
            except asyncio.TimeoutError:
                self.log.warning("some connections did not close within the drain timeout")

    @property
    def server(self) -> Server | None:
        return self._server

    def address(self) -> Any:
        assert self._server is not None, "hub is not started"
        return self._server.sockets[0].getsockname()
