"""The transport: sockets, outboxes, write batching, backpressure and limits.

It accepts WebSocket connections on the configured path, hands every frame to the kernel
(:meth:`Hub.on_frame <airi_core.server.kernel.Hub.on_frame>`), and writes what the kernel sends:

- one WebSocket frame is built per outgoing event, whatever the number of receivers (a server's
  frames are unmasked and no extension is negotiated, so the bytes are the same for everyone);
- frames queue in a per-peer outbox, and every outbox is written with one ``transport.write`` at
  the end of the loop iteration, so a burst costs each receiver one system call; an event for
  every authenticated peer (but at most one) is queued once, in the iteration's *run* of such
  events, whatever the number of peers, and the run is joined once and written as the same bytes
  to every peer that has nothing else queued (a peer that gets something of its own, or is
  left out, takes its share of the run into its outbox first, so each peer's order holds); the
  hub's own notifications may wait in the run a little longer for more of them once 100 peers or
  more are authenticated (40 us per peer, 40 ms at most), so that a storm of announces reaches
  each peer in fewer, larger writes;
- a peer whose unsent backlog passes ``limits.outbound_soft_bytes`` is *behind*. Its progress is
  measured: the bytes its socket took (at least ``PROGRESS_BYTES`` count as progress) and the
  gaps between such drains. While it makes progress (it drained within its own window: 3x its
  recent longest gap, at least ``HOLD_MIN_S``, at most the grace) the sender whose event reached
  it waits while it drains (backpressure, so a burst never costs a reading peer a message); a
  peer that does not is *stalled* and holds nobody back: its frames are buffered, and once it
  has drained nothing for ``limits.slow_consumer_grace_ms`` (counted from when its backlog
  passed a quarter of the soft limit) it is a slow consumer and is dropped. A never-reading peer
  thus costs the others nothing but its buffer. A stalled peer whose backlog passes
  ``limits.outbound_hard_bytes`` holds its senders back again until the grace decides (a reader
  its own process did not schedule for a moment is not dropped for it); past twice that it is
  dropped at once, so what one peer can hold stays bounded;
- limits: frame size (close 1009), connections (HTTP 503), messages per second per peer;
- the handshake: the path (404), the browser origin policy (``server.allowed_origins``, 403),
  no ``Server`` header;
- resources: bytes of frames (and handshake requests) received but not complete yet count
  against ``limits.max_pending_bytes`` over every connection (past it the connection holding the
  most is closed 1013); sockets are kept below the open-file limit (the oldest socket still in
  its opening handshake makes room for a new one), and ``limits.max_connections`` never exceeds
  that limit minus a reserve, so ``accept()`` does not run out of file descriptors.

This is the one module that knows the ``websockets`` library, including the internals it relies
on: for writing ``ServerConnection.transport``, ``.paused``, ``.drain()``, ``.protocol.state``;
for the pending-bytes budget a ``ServerConnection`` subclass reading ``protocol.reader.buffer``
and ``protocol.current_size`` (14.0 and later). pyproject.toml pins ``websockets`` to the
releases that have them (``>=14,<18``; the test command installs the newest of them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .config import BUILTIN_ORIGINS, normalize_origin, origin_site
from .logs import Throttle, current_peer, lifecycle_level, release_peer
from .peer import Peer

if TYPE_CHECKING:
    from .kernel import Hub

_ioctl: Any = None
_OUTQ = 0
try:  # bytes a socket holds that its peer has not acknowledged yet (Linux, BSDs, macOS)
    import fcntl
    import termios

    _ioctl, _OUTQ = fcntl.ioctl, termios.TIOCOUTQ
except ImportError:  # pragma: no cover - Windows: progress is measured at the write buffer
    pass

__all__ = ["Transport", "Connection", "OriginPolicy", "text_frame", "fd_limit"]

_OPEN = State.OPEN

#: file descriptors kept free besides those open when the hub starts listening: asyncio accepts
#: up to ``ACCEPT_BURST`` sockets in one go before the transport sees any of them, plus a margin
#: for plugins' files and sockets
ACCEPT_BURST = 100
FD_MARGIN = 32
#: sockets beyond max_connections for handshakes (a 503 answer needs a socket too)
HANDSHAKE_RESERVE = 32

#: a peer taking at least this many bytes of its backlog is progress (a reader that takes a
#: byte now and then does not hold anyone back). What it took is what its TCP stack
#: acknowledged: written - still in the write buffer - still in the socket's send queue
#: (``TIOCOUTQ``), so a reader is seen reading even while the kernel's buffer is large
PROGRESS_BYTES = 4096
#: the shortest window in which a peer that is behind must have made progress to hold its
#: senders back (its window is 3x the longest recent gap between its drains, at most the grace)
HOLD_MIN_S = 0.05
#: how often a waiting sender looks at the progress of the peers that hold it back
POLL_S = 0.01
#: how often peers that are behind are looked at while no sender waits (drops stalled ones)
WATCH_S = 0.05

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def fd_limit() -> int | None:
    """The soft limit on open file descriptors of this process (None: unknown or unlimited)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def fds_in_use() -> int:
    """How many file descriptors this process has open (0 when the system does not say)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0  # pragma: no cover


class OriginPolicy:
    """Which browser pages may open a connection (``Origin`` header, RFC 6454).

    A request without ``Origin`` is not from a browser page and passes. Otherwise the origin is
    normalized (scheme and host lower-cased, a default port dropped) and must be: a loopback page
    (``http``/``https`` on ``localhost``, ``127.0.0.1`` or ``[::1]``, any port) or one of
    :data:`BUILTIN_ORIGINS` (unless ``server.builtin_origins = false``), or listed in
    ``server.allowed_origins`` (exactly, ``scheme://host:*`` for any port, ``*`` for anything).
    ``null`` (sandboxed frames, some redirects) passes only when listed."""

    def __init__(self, allowed: list[str], builtin: bool = True) -> None:
        entries = [e for e in (normalize_origin(a) for a in allowed) if e is not None]
        self.any = "*" in entries
        self.loopback = builtin
        self.exact = frozenset([e for e in entries if not e.endswith(":*")] + (list(BUILTIN_ORIGINS) if builtin else []))
        self.any_port = frozenset(e[:-2] for e in entries if e.endswith(":*"))

    def allows(self, origin: str | None) -> bool:
        if origin is None or self.any:
            return True
        norm = normalize_origin(origin)
        if norm is None or norm == "*" or norm.endswith(":*"):
            return False
        if norm in self.exact:
            return True
        site = origin_site(norm)
        if site in self.any_port:
            return True
        if self.loopback and site.startswith(("http://", "https://")):
            return site.split("://", 1)[1] in _LOOPBACK_HOSTS
        return False


def _header(request: Request, name: str) -> str | None:
    try:
        return request.headers.get(name)
    except MultipleValuesError:
        return None


class _Socket(ServerConnection):
    """websockets' server connection, reporting to the transport what its accounting needs:
    sockets opened and lost, and after each read how many received bytes are still pending (an
    incomplete frame or handshake request in the reader, a fragmented message's fragments)."""

    hub_transport: Transport  # set on the subclass each transport makes (see Transport.listen)
    pending = 0  # bytes counted against limits.max_pending_bytes
    evicted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.hub_transport._opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub_transport._lost(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.evicted:
            protocol = self.protocol
            pending = len(protocol.reader.buffer) + (protocol.current_size or 0)
            if pending != self.pending:
                self.hub_transport._pending_changed(self, pending)


def frame_head(n: int) -> bytes:
    """The header of an unmasked, unfragmented WebSocket text frame (RFC 6455 section 5.2) of
    ``n`` payload bytes."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame carrying ``payload``."""
    return frame_head(len(payload)) + payload


#: how long the hub's own notifications may gather in the run per authenticated peer, and at
#: most (see Transport.broadcast): 40 us a peer, 4 ms for 100 peers, 40 ms for 1000 and more
RUN_GATHER_PER_PEER_S = 40e-6
RUN_GATHER_MAX_S = 0.04
#: below this many authenticated peers nothing gathers: the writes are few anyway, and every
#: peer has the notification by the time the event that caused it is answered
RUN_GATHER_MIN_PEERS = 100

#: a payload at least this large is queued as header and payload (joined once, with whatever
#: else goes to the peer in the same write) rather than copied into a frame first
_SPLIT_BYTES = 4096


class Connection:
    """The transport's side of one peer: its socket, outbox, backpressure and rate-limit state."""

    __slots__ = (
        "ws",
        "fd",
        "outbox",
        "run_pos",
        "sent_bytes",
        "drained_mark",
        "progress_at",
        "gap",
        "holds",
        "pressing",
        "tokens",
        "tokens_at",
        "rate_error_at",
    )

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        sock = ws.transport.get_extra_info("socket") if ws.transport is not None else None
        self.fd = sock.fileno() if sock is not None and _ioctl is not None else -1  # for TIOCOUTQ
        self.outbox: list[bytes] = []  # frames queued for the next flush (a large one as header, payload)
        self.run_pos = 0  # the frames of the transport's run before this index are not for it (or in its outbox)
        # progress: bytes written so far, bytes known drained when it last made progress, when
        # that was (0: nothing pending), the longest recent gap between drains
        self.sent_bytes = 0
        self.drained_mark = 0
        self.progress_at = 0.0
        self.gap = 0.0
        self.holds = False  # behind and making progress: holds its senders back
        self.pressing = False  # an event this peer sent reached a peer that holds senders back
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
        self._track = self._soft // 4  # a backlog past this is measured (progress, see _progress)
        self._hard = limits.outbound_hard_bytes
        self._grace = limits.slow_consumer_grace_ms / 1000
        self._rate = limits.max_messages_per_second
        self._behind: dict[Peer, None] = {}
        self._holders: dict[Peer, None] = {}  # behind and making progress: they hold senders back
        self._watcher: asyncio.TimerHandle | None = None
        self._dirty: list[Peer] = []
        self._run: list[bytes] = []  # frames for every authenticated peer (see broadcast)
        self._flush_scheduled = False
        self._run_due = False  # the run goes out with the next flush (else it may wait: _run_timer)
        self._run_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self.closing = False
        self.log = logging.getLogger("airi.websocket")
        server = self.settings.server
        self.origins = OriginPolicy(server.allowed_origins, server.builtin_origins)
        # resources: every accepted socket (those in their opening handshake apart, oldest
        # first), the bytes pending on each, and the caps derived from the open-file limit
        self._sockets: set[_Socket] = set()
        self._handshaking: dict[_Socket, None] = {}
        self._holding: dict[_Socket, None] = {}
        self.pending_bytes = 0
        self._max_pending = limits.max_pending_bytes
        self.socket_cap: int | None = None
        self.max_connections = limits.max_connections
        self._refusals = Throttle(1)  # log lines about refused handshakes: one a second per kind
        for counter in ("refused_origins", "evicted_sockets", "pending_overflows"):
            hub.stats.setdefault(counter, 0)

    def reconfigure(self, settings: Any) -> None:
        """Take the settings of a configuration reload (:mod:`airi_core.server.reload`): the
        limits that are not fixed per socket when it opens, and the origin policy. Connections
        stay open; ``max_messages_per_second`` applies to connections opened from now on."""
        self.settings = settings
        limits = settings.limits
        self._hard = limits.outbound_hard_bytes
        self._grace = limits.slow_consumer_grace_ms / 1000
        self._rate = limits.max_messages_per_second
        self._max_pending = limits.max_pending_bytes
        cap = self.socket_cap
        self.max_connections = min(limits.max_connections, max(cap - HANDSHAKE_RESERVE, 1)) if cap is not None else limits.max_connections
        self.origins = OriginPolicy(settings.server.allowed_origins, settings.server.builtin_origins)

    # -- writing -----------------------------------------------------------------------------------
    def write(self, peers: Iterable[Peer], text: str | bytes, sender: Peer | None = None) -> int:
        """Queue ``text`` (str, or its UTF-8 bytes) for each peer without awaiting any socket;
        returns how many were open.

        With ``sender``, a receiver that holds senders back (behind and making progress) holds
        the sender back (see :meth:`throttle`); server-originated events (no sender) never hold
        anyone back."""
        payload = text.encode() if isinstance(text, str) else text
        parts = (frame_head(len(payload)), payload) if len(payload) >= _SPLIT_BYTES else (text_frame(payload),)
        sent = 0
        dirty = self._dirty
        run = self._run
        for peer in peers:
            conn = peer._conn
            if conn is None or peer.closed or conn.ws.protocol.state is not _OPEN:
                continue
            outbox = conn.outbox
            if not outbox:
                dirty.append(peer)
            if run and peer.authenticated and conn.run_pos < len(run):
                outbox.extend(run[conn.run_pos :])  # its share of the run goes first
                conn.run_pos = len(run)
            outbox.extend(parts)
            sent += 1
            if conn.holds and sender is not None and sender._conn is not None:  # as of the last check
                sender._conn.pressing = True
        if sent:
            self.hub.stats["messages_out"] += sent
            if not self._flush_scheduled:
                self._flush_scheduled = True
                (self._loop or asyncio.get_running_loop()).call_soon(self.flush)
        return sent

    def broadcast(
        self, text: str | bytes, exclude: Peer | None = None, sender: Peer | None = None, *, gather: bool = False
    ) -> int:
        """Queue ``text`` for every authenticated peer but ``exclude``, at a cost that does not
        depend on the number of peers: the frame joins the run, which :meth:`flush` joins once
        and writes to every authenticated peer at the end of this loop iteration. Returns how
        many peers it is for. ``sender`` as in :meth:`write`.

        With ``gather`` (the hub's own notifications: ``module:announced``, de-announces) and at
        least ``RUN_GATHER_MIN_PEERS`` authenticated peers, the run may wait up to
        ``RUN_GATHER_PER_PEER_S`` per authenticated peer (at most ``RUN_GATHER_MAX_S``) for more,
        so that a burst of them reaches each peer in fewer, larger writes (on loopback a 60 KB
        write costs the kernel half what four 15 KB ones do; a storm of 1000 announces is
        ~270 MB). Each peer's order holds: anything else sent to a
        peer takes its share of the run along, at once."""
        frame = text_frame(text.encode() if isinstance(text, str) else text)
        run = self._run
        count = self.hub.registry.authenticated_count()
        if exclude is not None and exclude.authenticated and not exclude.closed:
            count -= 1
            conn = exclude._conn
            if conn is not None:
                if conn.run_pos < len(run):
                    if not conn.outbox:
                        self._dirty.append(exclude)
                    conn.outbox.extend(run[conn.run_pos :])
                conn.run_pos = len(run) + 1  # the run from here on, this frame excepted
        run.append(frame)
        holders = self._holders
        if holders and sender is not None and sender._conn is not None and (len(holders) > 1 or sender not in holders):
            sender._conn.pressing = True
        if count > 0:
            self.hub.stats["messages_out"] += count
        if gather and not self._run_due and count >= RUN_GATHER_MIN_PEERS:
            if self._run_timer is None:
                delay = min(RUN_GATHER_MAX_S, count * RUN_GATHER_PER_PEER_S)
                self._run_timer = (self._loop or asyncio.get_running_loop()).call_later(delay, self._run_ready)
            return count
        self._run_due = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            (self._loop or asyncio.get_running_loop()).call_soon(self.flush)
        return count

    def _run_ready(self) -> None:
        self._run_timer = None
        self._run_due = True
        self.flush()

    def joined(self, peer: Peer) -> None:
        """``peer`` was just authenticated: the run so far (events broadcast before) is not for it."""
        conn = peer._conn
        if conn is not None:
            conn.run_pos = len(self._run)

    def left(self, peer: Peer) -> None:
        """``peer`` was detached: what the run holds for it moves to its outbox (it still gets
        what was queued for it before, ahead of its close frame)."""
        conn = peer._conn
        run = self._run
        if conn is None or not run or not peer.authenticated:
            return
        if conn.run_pos < len(run):
            if not conn.outbox:
                self._dirty.append(peer)
            conn.outbox.extend(run[conn.run_pos :])
        conn.run_pos = len(run)

    def flush(self, everything: bool = False) -> None:
        """Write every peer's queued frames, one ``transport.write`` per peer (the run only once
        it is due, or with ``everything``)."""
        self._flush_scheduled = False
        run = self._run
        if run and (self._run_due or everything):
            self._run = []
            self._run_due = False
            if self._run_timer is not None:
                self._run_timer.cancel()
                self._run_timer = None
            n = len(run)
            whole = run[0] if n == 1 else b"".join(run)
            for peer in list(self.hub.registry.authenticated()):
                conn = peer._conn
                if conn is None:
                    continue
                pos = conn.run_pos
                conn.run_pos = 0
                if pos >= n:
                    continue
                if conn.outbox:  # written below, after its own frames
                    conn.outbox.extend(run[pos:])
                else:
                    self._send(peer, conn, whole if pos == 0 else b"".join(run[pos:]))
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for peer in dirty:
                own: Connection = peer._conn  # type: ignore[assignment]  # only peers with one are queued
                outbox = own.outbox
                data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
                outbox.clear()
                self._send(peer, own, data)

    def _send(self, peer: Peer, conn: Connection, data: bytes) -> None:
        # a peer detached since its frames were queued still gets them, before its close
        if conn.ws.protocol.state is not _OPEN:
            return
        transport = conn.ws.transport
        if transport.is_closing():
            return
        try:
            transport.write(data)
        except Exception as exc:  # the transport died under us
            self.log.debug("write to %s failed: %s", peer.describe, exc)
            self.hub.disconnect(peer, "send failed", 1011)
            return
        conn.sent_bytes += len(data)
        backlog = transport.get_write_buffer_size()
        if backlog > self._track:  # measured from a quarter of the soft limit on: a reader that
            self._progress(conn, backlog, time.monotonic())  # keeps up costs no ioctl
            if backlog > self._soft:
                self._mark_behind(peer, conn, backlog)
        elif conn.progress_at:
            conn.progress_at = 0.0  # (almost) everything taken: nothing to measure

    def backlog(self, peer: Peer) -> int:
        """Bytes queued for ``peer`` and not yet taken by its socket: the outbox of this loop
        iteration (its share of the run included) plus the transport's write buffer (0 for a
        peer without a socket)."""
        conn = peer._conn
        if conn is None:
            return 0
        queued = sum(len(f) for f in conn.outbox) if conn.outbox else 0
        run = self._run
        if run and peer.authenticated and not peer.closed and conn.run_pos < len(run):
            queued += sum(len(f) for f in run[conn.run_pos :])
        transport = conn.ws.transport
        return queued + (transport.get_write_buffer_size() if transport is not None else 0)

    # -- progress, backpressure, slow consumers ---------------------------------------------------
    @staticmethod
    def _progress(conn: Connection, backlog: int, now: float) -> None:
        """Record what ``conn``'s peer took since the last look (its backlog is not empty)."""
        drained = conn.sent_bytes - backlog
        if conn.fd >= 0:
            try:
                drained -= struct.unpack("i", _ioctl(conn.fd, _OUTQ, b"\0\0\0\0"))[0]
            except OSError:
                conn.fd = -1
        if not conn.progress_at:  # a backlog just appeared: measure from now
            conn.progress_at = now
            conn.drained_mark = drained
        elif drained - conn.drained_mark >= PROGRESS_BYTES:
            gap = now - conn.progress_at
            conn.gap = gap if gap > conn.gap else conn.gap * 0.5
            conn.drained_mark = drained
            conn.progress_at = now

    def _window(self, conn: Connection) -> float:
        """How recently ``conn`` must have made progress to hold its senders back."""
        return min(self._grace, max(HOLD_MIN_S, 3 * conn.gap))

    def _holds(self, conn: Connection, backlog: int, stalled: float) -> bool:
        """Whether a peer that is behind holds its senders back: while it makes progress (it
        drained within its window), and, past ``outbound_hard_bytes``, until the grace decides."""
        return stalled <= self._window(conn) or backlog > self._hard

    def _set_holds(self, peer: Peer, conn: Connection | None, holds: bool) -> None:
        if conn is not None:
            conn.holds = holds
        if holds:
            self._holders[peer] = None
        else:
            self._holders.pop(peer, None)

    def _mark_behind(self, peer: Peer, conn: Connection, backlog: int) -> None:
        if backlog > 2 * self._hard:
            self._behind.pop(peer, None)
            self._set_holds(peer, conn, False)
            self._slow_consumer(peer, backlog, time.monotonic() - conn.progress_at if conn.progress_at else 0.0)
            return
        if peer not in self._behind or backlog > self._hard:
            self._behind[peer] = None
            self._set_holds(peer, conn, self._holds(conn, backlog, time.monotonic() - conn.progress_at))
            if self._watcher is None:
                self._watcher = (self._loop or asyncio.get_running_loop()).call_later(WATCH_S, self._watch)

    def _watch(self) -> None:
        self._watcher = None
        self._check()
        if self._behind:
            self._watcher = (self._loop or asyncio.get_running_loop()).call_later(WATCH_S, self._watch)

    def _check(self) -> list[Connection]:
        """Look at every peer that is behind: forget those that drained, drop those that drained
        nothing for the grace, and return those that hold senders back (progress in their window)."""
        now = time.monotonic()
        grace = self._grace
        holding: list[Connection] = []
        for peer in list(self._behind):
            conn = peer._conn
            if peer.closed or conn is None or not conn.ws.paused:
                self._behind.pop(peer, None)
                self._set_holds(peer, conn, False)
                continue
            backlog = conn.ws.transport.get_write_buffer_size()
            self._progress(conn, backlog, now)
            stalled = now - conn.progress_at
            if stalled >= grace or backlog > 2 * self._hard:
                self._behind.pop(peer, None)
                self._set_holds(peer, conn, False)
                self._slow_consumer(peer, backlog, stalled)
                continue
            holds = self._holds(conn, backlog, stalled)
            self._set_holds(peer, conn, holds)
            if holds:
                holding.append(conn)
        return holding

    async def throttle(self) -> None:
        """Hold the calling sender while peers that are behind and making progress drain their
        backlog. A peer that stops making progress stops holding anyone back (and is dropped as
        a slow consumer once it drained nothing for ``limits.slow_consumer_grace_ms``)."""
        while self._holders:
            holding = self._check()
            if not holding:
                return
            drains = [asyncio.ensure_future(c.ws.drain()) for c in holding]
            # wake up when they all drained, or to look at their progress again
            _, pending = await asyncio.wait(drains, timeout=POLL_S)
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
        if self._dirty or self._run:
            self.flush(everything=True)
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

    def _refused(self, kind: str, message: str, *args: Any) -> None:
        """Log a refused handshake or a shed socket (a flood of them is what an attacker makes):
        the first of each ``kind`` in a second, then with the count of the others."""
        admitted, suppressed = self._refusals.admit(kind, time.monotonic())
        if admitted:
            more = f" ({suppressed} more like it in the last second(s))" if suppressed else ""
            self.log.warning(message + more, *args)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        expected = self.settings.server.path
        if path != expected:
            http = self.hub.http  # /healthz, /readyz, /metrics (airi_core.server.http)
            if http is not None:
                answer = http.answer(path, _header(request, "Authorization"))
                if answer is not None:
                    response = connection.respond(answer.status, "")
                    del response.headers["Content-Type"], response.headers["Content-Length"]
                    response.headers["Content-Type"] = answer.content_type
                    response.headers["Content-Length"] = str(len(answer.body))
                    response.headers["Cache-Control"] = "no-store"
                    for name, value in answer.headers.items():
                        response.headers[name] = value
                    response.body = answer.body
                    return response
            # the body names the endpoint, never echoes the request
            return connection.respond(404, f"no WebSocket endpoint here; use {expected}\n")
        try:
            origin = request.headers.get("Origin")
        except MultipleValuesError:
            origin = ""  # several Origin headers: no browser sends that
        if not self.origins.allows(origin):
            self.hub.stats["refused_origins"] += 1
            remote = connection.remote_address
            self._refused(
                "origin", "refusing a connection from %s: Origin %r is not allowed (server.allowed_origins)",
                remote[0] if remote else "?", (origin or "")[:200],
            )
            return connection.respond(403, "origin not allowed\n")
        if self.closing:
            return connection.respond(503, "server shutting down\n")
        limit = self.max_connections
        if len(self.hub.registry) >= limit:
            self.hub.stats["refused_connections"] += 1
            self._refused("full", "refusing a connection: limits.max_connections (%d) reached", limit)
            return connection.respond(503, "too many connections\n")
        return None

    # -- resources ---------------------------------------------------------------------------------
    def _opened(self, sock: _Socket) -> None:
        self._sockets.add(sock)
        self._handshaking[sock] = None
        cap = self.socket_cap
        if cap is not None and len(self._sockets) > cap:
            # at the cap: the oldest socket still in its opening handshake (an idle or slow one:
            # a client on loopback completes it in a millisecond) makes room for this one
            victim = next((s for s in self._handshaking if s is not sock), sock)
            self.hub.stats["evicted_sockets"] += 1
            self._refused("sockets", "%d sockets open (the open-file limit allows %d): closing the oldest one still in its handshake", len(self._sockets), cap)
            self._forget(victim)
            victim.transport.abort()

    def _forget(self, sock: _Socket) -> None:
        self._sockets.discard(sock)
        self._handshaking.pop(sock, None)
        if sock.pending:
            self.pending_bytes -= sock.pending
            sock.pending = 0
            self._holding.pop(sock, None)

    def _lost(self, sock: _Socket) -> None:
        self._forget(sock)
        sock.evicted = True  # no more accounting

    def _pending_changed(self, sock: _Socket, pending: int) -> None:
        self.pending_bytes += pending - sock.pending
        sock.pending = pending
        if pending:
            self._holding[sock] = None
        else:
            self._holding.pop(sock, None)
        while self.pending_bytes > self._max_pending and self._holding:
            self._shed(max(self._holding, key=lambda s: s.pending))

    def _shed(self, sock: _Socket) -> None:
        """Close the connection holding the most pending bytes (global budget exceeded)."""
        held = sock.pending
        self._forget(sock)
        sock.evicted = True
        self.hub.stats["pending_overflows"] += 1
        remote = sock.remote_address
        self._refused(
            "pending",
            "closing %s with 1013: it holds %d bytes of an incomplete frame, the most of any connection, "
            "and limits.max_pending_bytes (%d) is exceeded",
            f"{remote[0]}:{remote[1]}" if remote else "a connection", held, self._max_pending,
        )
        if sock.protocol.state is _OPEN:
            # a close frame, then EOF; what it sends from now on is discarded, not buffered
            sock.protocol.fail(1013, "too much pending data")
            sock.send_data()
            (self._loop or asyncio.get_running_loop()).call_later(
                self.settings.limits.close_timeout_ms / 1000, sock.transport.abort
            )
        else:
            sock.transport.abort()

    async def _handle(self, ws: ServerConnection) -> None:
        self._handshaking.pop(ws, None)  # type: ignore[call-overload]
        remote = ws.remote_address
        conn = Connection(ws)
        peer = Peer(f"{remote[0]}:{remote[1]}" if remote else "", conn)
        current_peer.set(peer.id)  # this task's log lines are about this peer (see logs.py)
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
            release_peer(peer.id)  # the count of its suppressed log lines, before its last one
            self.log.log(lifecycle_level("closed"), "closed %s code=%s (%d peers)", peer.describe, ws.close_code,
                         len(hub.registry), extra={"peer": peer.id})

    # -- the listening socket ----------------------------------------------------------------------
    async def listen(self, host: str, port: int) -> Server:
        self._loop = asyncio.get_running_loop()
        cfg = self.settings.server
        ssl_context = None
        if cfg.tls is not None:
            import ssl

            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
        fds = fd_limit()
        if fds is not None:
            self.socket_cap = max(fds - fds_in_use() - ACCEPT_BURST - FD_MARGIN, 2)
            cap = max(self.socket_cap - HANDSHAKE_RESERVE, 1)
            if cap < self.max_connections:
                self.log.warning(
                    "limits.max_connections lowered from %d to %d: the open-file limit is %d (raise it with ulimit -n)",
                    self.max_connections, cap, fds,
                )
                self.max_connections = cap
        socket_class = type("HubSocket", (_Socket,), {"hub_transport": self})
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            server_header=None,  # no product, no versions
            create_connection=socket_class,
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
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        self.flush(everything=True)
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
