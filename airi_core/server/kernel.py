"""The hub: transport, the core event loop, and the small API plugins use to talk to peers.

frame in -> liveness -> decode once -> dispatch by type:
``module:authenticate`` -> ``airi_authenticate``; ``module:announce`` -> ``airi_announce``;
heartbeats -> ``airi_heartbeat``; anything else -> ``airi_event`` (a plugin may claim it) else
``airi_route`` -> the core delivers the sender's frame to the chosen peers.
The core knows no policy: every behaviour of the protocol is a plugin.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from pydantic import BaseModel
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .. import __version__
from ..protocol import errors
from ..protocol.events import HEARTBEAT_FRAMES, DecodeError, Event, decode_frame, dumps, new_id
from ..protocol.identity import SERVER_PLUGIN_ID, is_valid_identity, non_negative_int
from .config import Settings
from .decisions import Accept, Broadcast, Drop, Reject, Targets
from .peer import Peer
from .plugins import HookDispatcher, PluginError, PluginSet, discover_plugins
from .registry import PeerRegistry
from .routing import Announcement, RouteContext

__all__ = ["Hub", "SERVER_PLUGIN_ID"]

_HEARTBEAT_BYTES = frozenset(f.encode() for f in HEARTBEAT_FRAMES)
_MISSING: Any = object()


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


class Hub:
    """One AIRI hub instance: it owns its registry, its plugins and its server socket.

    Plugins receive it as ``hub`` and use: :attr:`registry`, :attr:`settings`,
    :meth:`plugin_config`, :meth:`send`, :meth:`send_error`, :meth:`broadcast`, :meth:`deliver`,
    :meth:`metadata`, :meth:`set_health`, :meth:`disconnect` and :attr:`log`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        plugins: PluginSet | None = None,
        *,
        extra_plugins: Iterable[tuple[str, Any]] = (),
        use_entry_points: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        self.instance_id = self.settings.server.instance_id or new_id()
        self.version = __version__
        self.registry = PeerRegistry()
        self.plugins = plugins or discover_plugins(
            self.settings, extra=extra_plugins, use_entry_points=use_entry_points
        )
        self.pm = self.plugins.pm
        self.hooks = HookDispatcher(
            self.pm, self.settings.plugins.hook_timeout_ms / 1000, self.settings.plugins.order
        )
        self.wrap = self.settings.server.wire_format == "superjson"
        self.log = logging.getLogger("airi")
        self.wslog = logging.getLogger("airi.websocket")
        self.stats: dict[str, int] = {
            "connections": 0,
            "frames_in": 0,
            "events_routed": 0,
            "messages_out": 0,
            "errors_sent": 0,
            "plugin_errors": 0,
            "slow_consumers": 0,
            "rate_limited": 0,
            "oversized_frames": 0,
            "refused_connections": 0,
            "auth_timeouts": 0,
        }
        limits = self.settings.limits
        self._soft = limits.outbound_soft_bytes
        self._hard = limits.outbound_hard_bytes
        self._behind: dict[Peer, None] = {}
        self._dirty: list[Peer] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None  # set in start()
        self._grace = limits.slow_consumer_grace_ms / 1000
        self._rate = limits.max_messages_per_second
        self._source = {
            "kind": "plugin",
            "plugin": {"id": SERVER_PLUGIN_ID, "version": self.version},
            "id": self.instance_id,
        }
        self._server: Server | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- plugin-facing API ----------------------------------------------------------------------
    def plugin_config(self, plugin: str | object) -> BaseModel | None:
        """The validated ``[plugins.<name>]`` settings of a plugin, given by name or by the
        plugin object itself (``hub.plugin_config(self)``); None if it declares no model."""
        name = plugin if isinstance(plugin, str) else self.pm.get_name(plugin)
        return self.plugins.configs.get(name) if name is not None else None

    def metadata(self, parent_id: str | None = None) -> dict[str, Any]:
        """Server metadata for an event the hub originates: its source and a fresh event id,
        with ``parentId`` when the event answers another one."""
        event: dict[str, Any] = {"id": new_id()}
        if parent_id is not None:
            event["parentId"] = parent_id
        return {"source": self._source, "event": event}

    def encode(self, type: str, data: Any, parent_id: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """The wire text of a server-built event (superjson-wrapped unless ``wire_format = "json"``)."""
        event = {"type": type, "data": data, "metadata": metadata if metadata is not None else self.metadata(parent_id)}
        return dumps({"json": event}) if self.wrap else dumps(event)

    def send(self, peer: Peer, type: str, data: Any, parent_id: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        """Send one server-originated event to ``peer`` (no-op if its socket is gone)."""
        self._write((peer,), self.encode(type, data, parent_id, metadata))

    def send_error(self, peer: Peer, message: str, parent_id: str | None = None) -> None:
        """Send ``error {message}`` to ``peer``; use the exact strings of :mod:`airi_core.protocol.errors`."""
        self.stats["errors_sent"] += 1
        self.wslog.debug("error to %s: %s", peer.display, message)
        self.send(peer, "error", {"message": message}, parent_id)

    def broadcast(
        self,
        type: str,
        data: Any,
        parent_id: str | None = None,
        *,
        exclude: Peer | None = None,
    ) -> int:
        """Send one server-originated event to every authenticated peer (but ``exclude``),
        encoded once; returns the size of the encoded event."""
        text = self.encode(type, data, parent_id)
        self._write([p for p in self.registry.authenticated() if p is not exclude], text)
        return len(text)

    def deliver(self, peers: Iterable[Peer], text: str, sender: Peer | None = None) -> int:
        """Write ``text`` to each peer without awaiting any socket; returns how many were open.

        With ``sender``, the sender is held back while a receiver is behind (backpressure)."""
        return self._write(peers, text, sender)

    def _write(self, peers: Iterable[Peer], text: str, sender: Peer | None = None) -> int:
        """Queue ``text`` for each peer, without awaiting any socket.

        The WebSocket frame is built once (a server's frames are unmasked and we negotiate no
        extension, so it is the same bytes for every receiver) and appended to each peer's
        outbox; :meth:`_flush` writes every outbox with one ``transport.write`` at the end of
        the loop iteration, so a burst of events costs each receiver one system call.

        A peer whose unsent backlog passes ``limits.outbound_soft_bytes`` is *behind*: the
        ``sender`` whose event reached it then waits (in :meth:`_throttle`) while it drains, so
        a burst never costs a reading peer a message. Server-originated events (no sender) never
        hold anyone back. A peer that makes no progress draining for
        ``limits.slow_consumer_grace_ms``, or whose backlog passes ``limits.outbound_hard_bytes``,
        is a slow consumer and is dropped (:meth:`_slow_consumer`)."""
        frame = text_frame(text.encode())
        sent = 0
        open_ = State.OPEN
        dirty = self._dirty
        for peer in peers:
            conn = peer.conn
            if conn is None or peer.closed or conn.protocol.state is not open_:
                continue
            outbox = peer.outbox
            if not outbox:
                dirty.append(peer)
            outbox.append(frame)
            sent += 1
            if conn.paused and sender is not None:  # behind as of the last flush
                sender.pressing = True
        if sent:
            self.stats["messages_out"] += sent
            if not self._flush_scheduled:
                self._flush_scheduled = True
                (self._loop or asyncio.get_running_loop()).call_soon(self._flush)
        return sent

    def _flush(self) -> None:
        """Write every peer's queued frames, one ``transport.write`` per peer."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        open_ = State.OPEN
        soft = self._soft
        for peer in dirty:
            outbox = peer.outbox
            data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            outbox.clear()
            conn = peer.conn
            # a peer detached since its frames were queued still gets them, before its close
            if conn is None or conn.protocol.state is not open_:
                continue
            transport = conn.transport
            if transport.is_closing():
                continue
            try:
                transport.write(data)
            except Exception as exc:  # the transport died under us
                self.wslog.debug("write to %s failed: %s", peer.describe, exc)
                self.disconnect(peer, "send failed", 1011)
                continue
            peer.sent_bytes += len(data)
            backlog = transport.get_write_buffer_size()
            if backlog > soft:
                self._mark_behind(peer, backlog)

    def _mark_behind(self, peer: Peer, backlog: int) -> None:
        if backlog > self._hard:
            self._behind.pop(peer, None)
            self._slow_consumer(peer, backlog, time.monotonic() - peer.progress_at if peer.progress_at else 0.0)
            return
        if peer not in self._behind:
            self._behind[peer] = None
            peer.progress_at = time.monotonic()
            peer.drained_mark = peer.sent_bytes - backlog

    async def _throttle(self) -> None:
        """Hold the calling sender while peers that are behind drain their backlog.

        This is backpressure: a sender cannot outrun its readers, so a burst never costs a
        reading peer a message. A peer that drains nothing for ``limits.slow_consumer_grace_ms``
        is a slow consumer and is dropped, after which the senders go on: one peer that stopped
        reading delays the others by at most the grace period, once."""
        grace = self._grace
        while self._behind:
            now = time.monotonic()
            waiting: list[Peer] = []
            deadline = grace
            for peer in list(self._behind):
                conn = peer.conn
                if peer.closed or conn is None or not conn.paused:
                    self._behind.pop(peer, None)
                    continue
                backlog = conn.transport.get_write_buffer_size()
                drained = peer.sent_bytes - backlog
                if drained > peer.drained_mark:
                    peer.drained_mark = drained
                    peer.progress_at = now
                stalled = now - peer.progress_at
                if stalled >= grace:
                    self._behind.pop(peer, None)
                    self._slow_consumer(peer, backlog, stalled)
                    continue
                waiting.append(peer)
                deadline = min(deadline, grace - stalled)
            if not waiting:
                return
            drains = [asyncio.ensure_future(p.conn.drain()) for p in waiting if p.conn is not None]
            # wake up when they all drained, or to re-check progress, or at the earliest grace end
            _, pending = await asyncio.wait(drains, timeout=min(max(deadline, 0.001), 0.1))
            for fut in pending:
                fut.cancel()

    def _slow_consumer(self, peer: Peer, backlog: int, behind_for: float) -> None:
        """Drop a peer that does not read fast enough: close 1008 ``slow consumer``, de-announce
        it with reason ``slow consumer``, log it and count it. Nothing more is queued for it."""
        self.stats["slow_consumers"] += 1
        self.wslog.warning(
            "slow consumer %s: %d bytes pending, nothing drained for %.1f s, disconnecting",
            peer.describe, backlog, behind_for,
            extra={"peer": peer.id, "backlog_bytes": backlog},
        )
        self.disconnect(peer, "slow consumer", 1008)

    def set_health(self, peer: Peer, healthy: bool, reason: str) -> None:
        """Flip ``peer.healthy`` and tell the plugins (``airi_peer_health_changed``)."""
        if peer.healthy == healthy:
            return
        peer.healthy = healthy
        self.wslog.debug("peer %s is now %s (%s)", peer.display, "healthy" if healthy else "unhealthy", reason)
        try:
            self.hooks.each("airi_peer_health_changed", self, peer, healthy, reason)
        except PluginError as exc:
            self._plugin_failed(exc, None, None)

    def disconnect(self, peer: Peer, reason: str, code: int = 1000) -> None:
        """Drop ``peer``: nothing more is sent to it, it is de-announced with ``reason`` now and
        its socket is closed with ``code`` and ``reason`` (aborted after
        ``limits.close_timeout_ms`` when the peer does not answer the close)."""
        if not self._detach(peer):
            return
        self.wslog.info("dropping %s: %s", peer.describe, reason, extra={"peer": peer.id})
        self._spawn(self._drop(peer, reason, detached=True))
        if peer.conn is not None:
            self._spawn(self._close(peer.conn, code, reason[:120]))

    async def _close(self, conn: ServerConnection, code: int, reason: str) -> None:
        """Close after what was already queued for the peer: a close frame written before
        queued frames would make the client drop them."""
        if self._dirty:
            self._flush()
        await conn.close(code, reason)

    # -- internals --------------------------------------------------------------------------------
    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _plugin_failed(self, exc: PluginError, peer: Peer | None, event: Event | None) -> None:
        self.stats["plugin_errors"] += 1
        self.log.error(
            "plugin '%s' failed in %s%s: %s: %s",
            exc.plugin,
            exc.hook,
            f" handling '{event.type}' from {peer.display}" if event is not None and peer is not None else "",
            type(exc.error).__name__,
            exc.error,
            exc_info=exc.error if self.log.isEnabledFor(logging.DEBUG) else None,
        )
        if peer is not None and not peer.closed:
            self.send_error(peer, f"plugin '{exc.plugin}' failed in {exc.hook}", event.id if event else None)

    def _detach(self, peer: Peer) -> bool:
        """Remove ``peer`` from the registry at once; False when it was already gone."""
        if not self.registry.remove(peer):
            return False
        peer.closed = True
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        return True

    async def _drop(self, peer: Peer, reason: str, detached: bool = False) -> None:
        """Detach ``peer`` (unless done already) and run the disconnect hooks with ``reason``."""
        if not detached and not self._detach(peer):
            return
        try:
            res = self.hooks.each("airi_peer_disconnected", self, peer, reason)
            if res is not None:
                await res
        except PluginError as exc:
            self._plugin_failed(exc, None, None)

    async def _accept(self, peer: Peer, parent_id: str | None) -> None:
        self.registry.mark_authenticated(peer)
        self.send(peer, "module:authenticated", {"authenticated": True}, parent_id)
        res = self.hooks.each("airi_peer_authenticated", self, peer, parent_id)
        if res is not None:
            await res

    # -- the core loop ----------------------------------------------------------------------------
    def on_frame(self, peer: Peer, frame: str | bytes) -> Awaitable[None] | None:
        """Handle one frame from ``peer``. Returns an awaitable when an async hook is involved;
        replies to one peer therefore go out in the order its frames came in."""
        self.stats["frames_in"] += 1
        now = peer.last_seen = time.monotonic()
        peer.missed_checks = 0
        if self._rate and not self._take_token(peer, now):
            return None
        if not peer.healthy:
            self.set_health(peer, True, "activity")
        if len(frame) == 4 and (frame in HEARTBEAT_FRAMES or frame in _HEARTBEAT_BYTES):
            kind = frame if isinstance(frame, str) else frame.decode()
            return self._guard(peer, None, self.hooks.each, "airi_heartbeat", self, peer, kind, None, None)
        try:
            event = decode_frame(frame)
        except DecodeError as exc:
            self.send_error(peer, exc.message, exc.parent_id)
            return None
        if peer.authenticated and not peer.announced:
            src = event.source
            if src is not None:
                # before announcing, the peer's identity is whatever it last claimed; once
                # announced the registry's identity is authoritative (PROTOCOL improvement)
                peer.set_identity(src)
        return self._guard(peer, event, self._dispatch, peer, event)

    def _take_token(self, peer: Peer, now: float) -> bool:
        """Token bucket of ``limits.max_messages_per_second`` (burst: one second's worth)."""
        rate = self._rate
        tokens = min(rate, peer.tokens + (now - peer.tokens_at) * rate) if peer.tokens_at else rate
        peer.tokens_at = now
        if tokens >= 1:
            peer.tokens = tokens - 1
            return True
        peer.tokens = tokens
        self.stats["rate_limited"] += 1
        if now - peer.rate_error_at >= 1.0:  # at most one error a second: no amplification
            peer.rate_error_at = now
            self.wslog.warning("rate limit: dropping frames from %s", peer.display, extra={"peer": peer.id})
            self.send_error(peer, f"rate limit exceeded: at most {rate:g} messages per second, frame dropped")
        return False

    def _guard(self, peer: Peer, event: Event | None, call: Any, *args: Any) -> Awaitable[None] | None:
        """Run ``call(*args)`` so that no plugin failure can end the connection."""
        try:
            res = call(*args)
        except PluginError as exc:
            self._plugin_failed(exc, peer, event)
            return None
        except Exception as exc:  # e.g. a route filter a plugin added; never kill the connection
            self._internal_error(exc, peer, event)
            return None
        if res is not None and inspect.isawaitable(res):
            return self._guard_async(peer, event, res)
        return None

    async def _guard_async(self, peer: Peer, event: Event | None, aw: Awaitable[Any]) -> None:
        try:
            await aw
        except PluginError as exc:
            self._plugin_failed(exc, peer, event)
        except Exception as exc:
            self._internal_error(exc, peer, event)

    def _internal_error(self, exc: Exception, peer: Peer, event: Event | None) -> None:
        self.stats["plugin_errors"] += 1
        self.log.error(
            "internal error handling '%s' from %s: %s: %s",
            event.type if event is not None else "frame", peer.display, type(exc).__name__, exc, exc_info=exc,
        )
        if not peer.closed:
            self.send_error(peer, f"internal error while handling '{event.type if event is not None else 'frame'}'", event.id if event else None)

    def _dispatch(self, peer: Peer, event: Event) -> Awaitable[Any] | None:
        etype = event.type
        if etype == "transport:connection:heartbeat":
            data = event.data
            kind = data.get("kind")
            message = data.get("message")
            return self.hooks.each(
                "airi_heartbeat", self, peer, kind if isinstance(kind, str) else "", message if isinstance(message, str) else None, event
            )
        if etype == "module:authenticate":
            return self._authenticate(peer, event)
        if etype == "module:announce":
            return self._announce(peer, event)
        claim = self.hooks.first("airi_event", self, peer, event)
        if claim is None:
            self._route(peer, event)
            return None
        if inspect.isawaitable(claim):
            return self._claimed_async(peer, event, claim)
        if isinstance(claim, Reject):
            self.send_error(peer, claim.message, event.id)
        return None

    async def _claimed_async(self, peer: Peer, event: Event, pending: Awaitable[Any]) -> None:
        claim = await pending
        if claim is None:
            self._route(peer, event)
        elif isinstance(claim, Reject):
            self.send_error(peer, claim.message, event.id)

    async def _authenticate(self, peer: Peer, event: Event) -> None:
        token = event.data.get("token")
        if not isinstance(token, str):
            token = ""
        res = self.hooks.first("airi_authenticate", self, peer, token, event)
        if res is not None and inspect.isawaitable(res):
            res = await res
        if isinstance(res, Accept):
            self.wslog.debug("authenticated %s", peer.describe, extra={"peer": peer.id})
            await self._accept(peer, event.id)
            return
        message = res.message if isinstance(res, Reject) else errors.INVALID_TOKEN
        self.wslog.info("authentication failed for %s from %s", peer.id, peer.remote, extra={"peer": peer.id})
        self.send_error(peer, message, event.id)

    async def _announce(self, peer: Peer, event: Event) -> None:
        data = event.data
        parent = event.id
        name = data.get("name")
        if not isinstance(name, str) or not name:
            self.send_error(peer, errors.MODULE_ANNOUNCE_NAME_INVALID, parent)
            return
        index = data.get("index", _MISSING)
        if index is _MISSING:
            index = None
        else:
            index = non_negative_int(index)
            if index is None:
                self.send_error(peer, errors.MODULE_ANNOUNCE_INDEX_INVALID, parent)
                return
        identity = data.get("identity")
        if not is_valid_identity(identity):
            self.send_error(peer, errors.MODULE_ANNOUNCE_IDENTITY_INVALID, parent)
            return
        if not peer.authenticated:
            self.send_error(peer, errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING, parent)
            return
        possible = data.get("possibleEvents")
        ann = Announcement(name, index, identity, possible if isinstance(possible, list) else [], data)
        res = self.hooks.first("airi_announce", self, peer, ann, event)
        if res is not None and inspect.isawaitable(res):
            res = await res
        if isinstance(res, Reject):
            self.send_error(peer, res.message, parent)

    def _route(self, sender: Peer, event: Event) -> None:
        if not sender.authenticated:
            self.send_error(sender, errors.NOT_AUTHENTICATED, event.id)
            return
        ctx = RouteContext(self, sender, event)
        decision = self.hooks.first_sync("airi_route", self, ctx)
        if decision is None or isinstance(decision, Broadcast):
            recipients: list[Peer] = ctx.candidates()
        elif isinstance(decision, Targets):
            registry = self.registry
            recipients = [
                p for p in decision.peers
                if p is not sender and p.authenticated and p in registry and ctx.accepts(p)
            ]
        elif isinstance(decision, Drop):
            self.wslog.debug("dropped '%s' from %s: %s", event.type, sender.display, decision.reason)
            if decision.error:
                self.send_error(sender, decision.error, event.id)
            return
        else:
            raise PluginError("?", "airi_route", TypeError(f"unexpected route decision {decision!r}"))
        self.stats["events_routed"] += 1
        if recipients:
            self._write(recipients, event.forward_text(self.wrap), sender)

    # -- transport ----------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path != self.settings.server.path:
            return connection.respond(404, f"no WebSocket endpoint at {path}; use {self.settings.server.path}\n")
        if self._closing:
            return connection.respond(503, "server shutting down\n")
        if len(self.registry) >= self.settings.limits.max_connections:
            self.stats["refused_connections"] += 1
            self.wslog.warning("refusing a connection: limits.max_connections (%d) reached", self.settings.limits.max_connections)
            return connection.respond(503, "too many connections\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        remote = conn.remote_address
        peer = Peer(conn, f"{remote[0]}:{remote[1]}" if remote else "")
        self.registry.add(peer)
        self.stats["connections"] += 1
        self.wslog.info("connected %s from %s (%d peers)", peer.id, peer.remote, len(self.registry), extra={"peer": peer.id})
        try:
            if await self._open(peer):
                async for frame in conn:
                    res = self.on_frame(peer, frame)
                    if res is not None:
                        await res
                    if peer.pressing:
                        peer.pressing = False
                        await self._throttle()
        except ConnectionClosed:
            pass
        finally:
            peer.closed = True
            await self._drop(peer, "connection closed")
            code = conn.close_code
            sent = conn.protocol.close_sent
            if sent is not None and sent.code == 1009:
                # we closed it for a too-big frame (the peer may never answer: code reads 1006)
                self.stats["oversized_frames"] += 1
                self.wslog.warning(
                    "closed %s: frame larger than limits.max_frame_bytes (%d)",
                    peer.describe, self.settings.limits.max_frame_bytes, extra={"peer": peer.id},
                )
            self.wslog.info(
                "closed %s code=%s (%d peers)", peer.describe, code, len(self.registry), extra={"peer": peer.id}
            )

    async def _open(self, peer: Peer) -> bool:
        try:
            res = self.hooks.each("airi_peer_connected", self, peer)
            if res is not None:
                await res
            decision = self.hooks.first("airi_authenticate", self, peer, None, None)
            if decision is not None and inspect.isawaitable(decision):
                decision = await decision
            if isinstance(decision, Accept):
                await self._accept(peer, None)
        except PluginError as exc:
            self._plugin_failed(exc, peer, None)
        timeout = self.settings.auth.timeout_ms
        if not peer.authenticated and timeout and not peer.closed:
            peer.timer = asyncio.get_running_loop().call_later(timeout / 1000, self._auth_deadline, peer)
        return True

    def _auth_deadline(self, peer: Peer) -> None:
        peer.timer = None
        if not peer.authenticated and peer in self.registry:
            self.stats["auth_timeouts"] += 1
            self.disconnect(peer, "authentication timeout", 1008)

    async def start(self, host: str | None = None, port: int | None = None) -> Server:
        """Run the startup hooks and bind. Returns the websockets server (``.sockets`` tells the
        bound port when ``port=0``)."""
        self._loop = asyncio.get_running_loop()
        cfg = self.settings.server
        ssl_context = None
        if cfg.tls is not None:
            import ssl

            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
        res = self.hooks.each("airi_startup", self)
        if res is not None:
            await res
        try:
            self._server = await self._bind(host, port, ssl_context)
        except BaseException:
            # undo what the startup hooks started (timers...) before reporting the failure
            res = self.hooks.each("airi_shutdown", self)
            if res is not None:
                await res
            raise
        return self._server

    async def _bind(self, host: str | None, port: int | None, ssl_context: Any) -> Server:
        cfg = self.settings.server
        return await serve(
            self._handle,
            host if host is not None else cfg.host,
            cfg.port if port is None else port,
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

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        assert self._server is not None, "hub is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self.settings.server.host
        if self._server is not None:
            host = self._server.sockets[0].getsockname()[0]
        scheme = "wss" if self.settings.server.tls is not None else "ws"
        return f"{scheme}://{host}:{self.port}{self.settings.server.path}"

    async def shutdown(self) -> None:
        """Close every peer with ``1001 server shutdown``, de-announce them, run the shutdown
        hooks and stop listening. Waits at most ``[server] drain_timeout_ms`` for the closes."""
        if self._closing:
            return
        self._closing = True
        server = self._server
        if server is not None:
            server.close(close_connections=False)
        peers = list(self.registry)
        # Every peer hears every other's de-announce before its close frame: the disconnect hooks
        # run while all peers are still registered (each broadcast excludes the departing peer),
        # then everyone is detached at once.
        for peer in peers:
            try:
                res = self.hooks.each("airi_peer_disconnected", self, peer, "server shutdown")
                if res is not None:
                    await res
            except PluginError as exc:
                self._plugin_failed(exc, None, None)
        for peer in peers:
            self._detach(peer)
        # the de-announces above are queued: write them before the close frames
        self._flush()
        closes = [asyncio.ensure_future(p.conn.close(1001, "server shutdown")) for p in peers if p.conn is not None]
        if closes:
            await asyncio.wait(closes, timeout=max(self.settings.server.drain_timeout_ms / 1000, 0.01))
        try:
            res = self.hooks.each("airi_shutdown", self)
            if res is not None:
                await res
        except PluginError as exc:
            self._plugin_failed(exc, None, None)
        if server is not None:
            server.close(close_connections=True)
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=max(self.settings.server.drain_timeout_ms / 1000, 0.1))
            except asyncio.TimeoutError:
                self.log.warning("some connections did not close within the drain timeout")
        for task in list(self._tasks):
            task.cancel()
