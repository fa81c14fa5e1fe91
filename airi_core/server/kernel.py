"""The kernel: frame -> event -> hooks -> delivery decision.

For every frame the transport hands over (:meth:`Hub.on_frame`):

1. record liveness (``peer.last_seen``; a frame from an unhealthy peer makes it healthy again);
2. a raw ``ping``/``pong`` text frame -> ``airi_heartbeat`` (never an error);
3. decode once (:func:`airi_core.protocol.events.decode_frame`); a bad frame is answered with the
   protocol's error and changes nothing else;
4. a frame whose ``metadata.source`` differs from the peer's -> ``airi_source_claimed`` (a
   plugin may adopt it as the peer's identity: the 2026-08 generation's rule);
5. dispatch by type: ``transport:connection:heartbeat`` -> ``airi_heartbeat``;
   ``module:authenticate`` -> ``airi_authenticate``; ``module:announce`` -> protocol checks ->
   ``airi_announce``; anything else -> ``airi_event`` (a plugin may claim it: the 2026-08
   ``peer:authenticate`` / ``extension:*`` handshake is such a plugin, calling back
   :meth:`Hub.authenticate` and :meth:`Hub.announce`), else routing: ``airi_route`` decides, the
   kernel delivers the sender's frame unchanged.

Kernel rules (the only behaviour not in a plugin): the envelope checks (strict JSON only); an
unauthenticated peer can neither announce nor route; nothing is processed for a peer once it was
dropped (frames it sent before are ignored); a peer's identity is the one it announced (or one a
plugin adopted, see ``airi_source_claimed``), never what its frames' ``metadata.source`` claims by
itself; no peer may look
like the server (server-only event types, the server's source, the server's identity in an
announce are refused); every event plugins see and receivers get carries the sender's announced
identity as ``metadata.source`` (:meth:`Event.attributed`); a frame without ``data`` is
``invalid event format`` from a 2026-08 connection (``peer.generation == "head"``) and
forwarded with ``"data": {}`` from an April one; a routed event never goes back to its
sender nor to an unauthenticated peer, and goes only to peers that pass every filter of the
route context; no plugin failure ends a connection.

:class:`Hub` is also the API plugins use: see its docstring. Everything about sockets is in
:mod:`airi_core.server.transport`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import BaseModel
from websockets.asyncio.server import Server

from .. import __version__
from ..protocol import errors
from ..protocol.events import (
    HEARTBEAT_FRAMES,
    DecodeError,
    Event,
    canonical,
    decode_frame,
    dumps_bytes,
    is_server_event_type,
    new_id,
    same_json,
)
from ..protocol.identity import (
    SERVER_PLUGIN_ID,
    announce_error,
    instance_id_of,
    non_negative_int,
    normalize_identity,
    plugin_id_of,
)
from .config import Settings
from .counts import Counts
from .decisions import Accept, Broadcast, Drop, Reject, Targets
from .hooks import Hooks, PluginError, awaitable
from .http import HttpEndpoints, Readiness
from .logs import lifecycle_level
from .peer import Peer
from .plugins import PluginSet, discover_plugins
from .registry import PeerRegistry
from .routing import Announcement, PeerFilter, RouteContext
from .transport import Transport

__all__ = ["Hub", "RemoteDelivery"]

#: ``deliver(peers, text)``: hand a frame for peers of other instances to a cluster plugin.
RemoteDelivery = Callable[[list[Peer], str], None]

_HEARTBEAT_BYTES = frozenset(f.encode() for f in HEARTBEAT_FRAMES)


def _maybe(result: Any) -> Awaitable[Any] | None:
    """``result`` when a hook call needs awaiting, else None."""
    return result if result is not None and awaitable(result) else None


class Hub:
    """One AIRI hub: it owns its settings, registry, plugins and transport.

    The API for plugins (everything else is internal):

    - state: :attr:`settings` (the kernel's sections: ``server``, ``limits``, ``logging``,
      ``plugins``), :attr:`instance_id`, :attr:`version`, :attr:`registry`
      (:class:`~airi_core.server.registry.PeerRegistry`), :attr:`stats` (counters; a plugin may
      add its own), :attr:`log`, :meth:`plugin_config`;
    - sending: :meth:`send`, :meth:`send_error`, :meth:`broadcast`, :meth:`metadata`;
    - handshakes a plugin drives (another protocol generation): :meth:`authenticate`,
      :meth:`announce`;
    - peers: :meth:`set_health`, :meth:`disconnect`, :meth:`backlog`;
    - routing: :meth:`add_route_filter` / :meth:`remove_route_filter` (a filter that holds for
      every routed event, whatever the route plugins decide);
    - several instances as one hub (a cluster plugin): :meth:`set_remote_delivery`,
      :meth:`add_remote_peer`, :meth:`authenticate_remote`, :meth:`remove_remote_peer`,
      :meth:`replay`, :meth:`deliver`;
    - plugins at run time: :attr:`plugins` (``hub.plugins.register(obj, name)`` /
      ``unregister(name)`` take effect at once).
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
        self.plugins = plugins or discover_plugins(self.settings, extra=extra_plugins, use_entry_points=use_entry_points)
        self._hooks = Hooks(self.plugins.pm, self.settings.plugins.hook_timeout_ms / 1000, self.settings.plugins.order)
        self.plugins.pm.on_change(self._hooks.rebuild)  # register()/unregister() take effect at once
        self._wrap = self.settings.server.wire_format == "superjson"
        self.log = logging.getLogger("airi")
        self.wslog = logging.getLogger("airi.websocket")
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "connections", "frames_in", "events_routed", "messages_out", "errors_sent", "plugin_errors",
                "slow_consumers", "rate_limited", "oversized_frames", "refused_connections",
            ),
            0,
        )
        # operations: labelled counters, readiness, HTTP endpoints and metrics (airi_core.server.http)
        self.stats.update(dict.fromkeys(("frames_heartbeat", "frames_control", "frames_invalid", "deliveries"), 0))
        self.counts = Counts()
        self.readiness = Readiness()
        self.metrics: Any = None
        self.advertiser: Any = None  # mDNS (airi_core.server.discovery), when [discovery] mdns
        self.http: HttpEndpoints | None = None
        if self.settings.http.enabled:
            self.http = HttpEndpoints(self)
            if self.settings.http.metrics:
                from .metrics import HubMetrics  # prometheus_client is imported only when used

                self.metrics = HubMetrics(self)
                self.metrics.instrument(self._hooks)
        self._source = {"kind": "plugin", "plugin": {"id": SERVER_PLUGIN_ID, "version": self.version}, "id": self.instance_id}
        self._transport = Transport(self)
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._route_filters: list[PeerFilter] = []
        self._remote: RemoteDelivery | None = None
        self._replaying: Peer | None = None

    # -- the plugin API ----------------------------------------------------------------------------
    def plugin_config(self, plugin: str | object) -> BaseModel | None:
        """The validated settings of a plugin (its ``[plugins.<name>]`` table, or the section it
        owns), given by name or by the plugin object itself (``hub.plugin_config(self)``); None
        when it declares no model."""
        return self.plugins.config_of(plugin)

    def metadata(self, parent_id: str | None = None) -> dict[str, Any]:
        """Server metadata for an event the hub originates: its source and a fresh event id,
        with ``parentId`` when the event answers another one."""
        event: dict[str, Any] = {"id": new_id()}
        if parent_id is not None:
            event["parentId"] = parent_id
        return {"source": self._source, "event": event}

    def encode(self, type: str, data: Any, parent_id: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """The wire text of a server-built event (superjson-wrapped unless ``wire_format = "json"``)."""
        return self._encode(type, data, parent_id, metadata).decode()

    def _encode(self, type: str, data: Any, parent_id: str | None = None, metadata: dict[str, Any] | None = None) -> bytes:
        # UTF-8 bytes, as the transport writes them (orjson where it writes the same JSON)
        event = {"type": type, "data": data, "metadata": metadata if metadata is not None else self.metadata(parent_id)}
        return dumps_bytes({"json": event}) if self._wrap else dumps_bytes(event)

    def send(self, peer: Peer, type: str, data: Any, parent_id: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        """Send one server-originated event to ``peer`` (nothing happens if it is gone).
        ``metadata`` replaces the server's (``ui:configure`` forwards the sender's). A peer of
        another instance (``peer.origin``) gets it through the remote delivery, except while
        :meth:`replay` runs for it (its own instance answered it already)."""
        if peer.origin is not None:
            if self._remote is not None and peer is not self._replaying:
                self._remote([peer], self.encode(type, data, parent_id, metadata))
            return
        self._transport.write((peer,), self._encode(type, data, parent_id, metadata))

    def send_error(self, peer: Peer, message: str, parent_id: str | None = None) -> None:
        """Send ``error {message}`` to ``peer``; use the exact strings of
        :mod:`airi_core.protocol.errors`."""
        self.stats["errors_sent"] += 1
        self.counts.error_sent(message)
        self.wslog.debug("error to %s: %s", peer.display, message)
        self.send(peer, "error", {"message": message}, parent_id)

    def broadcast(
        self,
        type: str,
        data: Any,
        parent_id: str | None = None,
        *,
        exclude: Peer | None = None,
        to: Iterable[Peer] | None = None,
    ) -> int:
        """Send one server-originated event to every authenticated peer (but ``exclude``), or
        only to the authenticated peers among ``to``, encoded once; returns the size of the
        encoded event."""
        text = self._encode(type, data, parent_id)
        if to is None:
            self._transport.broadcast(text, exclude, gather=True)  # queued once, whatever the number of peers
        else:
            self._transport.write([p for p in to if p is not exclude and p.authenticated and not p.closed], text)
        return len(text)

    def lifecycle_level(self, kind: str, level: int = logging.INFO) -> int:
        """The level to log a line about a connection or module event at (``kind``: e.g.
        ``"connected"``, ``"announced"``, ``"closed"``): ``level`` within
        ``logging.connection_lines_per_second``, else debug, counted in a summary line."""
        return lifecycle_level(kind, level)

    def backlog(self, peer: Peer) -> int:
        """Bytes sent to ``peer`` that it has not taken yet (queued in the hub or in the socket's
        write buffer); 0 for a peer without a socket. Compare with ``settings.limits``
        ``outbound_soft_bytes`` (behind) and ``outbound_hard_bytes`` (dropped as a slow
        consumer) before sending something large that can wait (the registry plugin's syncs)."""
        return self._transport.backlog(peer)

    def set_health(self, peer: Peer, healthy: bool, reason: str) -> None:
        """Set ``peer.healthy`` and, when it changed, tell the plugins (``airi_peer_health_changed``)."""
        if peer.healthy == healthy:
            return
        peer.healthy = healthy
        self.wslog.debug("peer %s is now %s (%s)", peer.display, "healthy" if healthy else "unhealthy", reason)
        try:
            self._hooks.peer_health_changed(self, peer, healthy, reason)
        except PluginError as exc:
            self._plugin_failed(exc, None, None)

    def add_route_filter(self, predicate: PeerFilter) -> None:
        """From now on every routed event goes only to peers for which ``predicate(peer)`` is
        true, whatever the route plugins decide (``BROADCAST``, ``Targets``, consumer delivery)
        and in any ``[plugins] order``; only the devtools bypass (``ctx.bypass``) skips it.
        Add it in ``airi_startup``; it costs nothing per event beyond the predicate itself."""
        self._route_filters.append(predicate)

    def remove_route_filter(self, predicate: PeerFilter) -> None:
        """Undo :meth:`add_route_filter` (no error when it is not there)."""
        if predicate in self._route_filters:
            self._route_filters.remove(predicate)

    def disconnect(self, peer: Peer, reason: str, code: int = 1000) -> None:
        """Drop ``peer``: nothing more is sent to it, it is de-announced with ``reason`` now and
        its socket is closed with ``code`` and ``reason`` (aborted after
        ``limits.close_timeout_ms`` when the peer does not answer the close)."""
        if not self._detach(peer):
            return
        self.wslog.info("dropping %s: %s", peer.describe, reason, extra={"peer": peer.id})
        self._spawn(self._disconnected_hooks(peer, reason))
        self._spawn(self._transport.close(peer, code, reason))

    # -- peers of other instances (a cluster plugin) -------------------------------------------------
    def set_remote_delivery(self, deliver: RemoteDelivery | None) -> None:
        """Route to peers of other instances through ``deliver(peers, text)``: called with the
        recipients whose ``origin`` is set (mirrors made with :meth:`add_remote_peer`) and the
        frame text, once per routed event or hub event; None turns it off."""
        self._remote = deliver

    def add_remote_peer(self, origin: str, peer_id: str, remote: str = "") -> Peer:
        """Register a mirror of connection ``peer_id`` of instance ``origin``: a peer without a
        socket (id ``peer_id@origin``) that routing, the registry and the plugins treat like a
        local one. Its state arrives through the registry API, :meth:`announce`,
        :meth:`set_health` and :meth:`replay`; what is sent to it goes to ``deliver``."""
        peer = Peer(remote)
        peer.id = f"{peer_id}@{origin}"
        peer.origin = origin
        peer.last_seen = time.monotonic()
        self.registry.add(peer)
        return peer

    def authenticate_remote(self, peer: Peer) -> None:
        """Mark a mirror authenticated (its own instance authenticated it: no reply, no sync)."""
        self.registry.mark_authenticated(peer)

    async def remove_remote_peer(self, peer: Peer, reason: str) -> None:
        """A mirrored connection is gone (``reason``: as its instance said, or ``instance
        lost``): detach it and run the disconnect hooks (its modules are de-announced)."""
        if self._detach(peer):
            await self._disconnected_hooks(peer, reason)

    def replay(self, peer: Peer, event: Event) -> Any:
        """Run ``airi_event`` for a control event a mirrored peer sent on its own instance
        (e.g. a consumer registration), so that this instance's plugins keep the same state;
        nothing is sent back to it. Returns the hook's result."""
        self._replaying = peer
        try:
            return self._hooks.event(self, peer, event)
        finally:
            self._replaying = None

    def deliver(self, peers: Iterable[Peer], text: str) -> int:
        """Write a frame another instance routed to local ``peers`` (as it was sent: byte for
        byte); returns how many were open."""
        return self._transport.write(peers, text)

    # -- connections (called by the transport) -----------------------------------------------------
    async def connected(self, peer: Peer) -> None:
        """A connection was accepted: register the peer, run ``airi_peer_connected`` and the
        connect-time ``airi_authenticate``."""
        peer.last_seen = time.monotonic()
        self.registry.add(peer)
        self.stats["connections"] += 1
        self.wslog.log(self.lifecycle_level("connected"), "connected %s from %s (%d peers)", peer.id, peer.remote,
                       len(self.registry), extra={"peer": peer.id})
        try:
            res = _maybe(self._hooks.peer_connected(self, peer))
            if res is not None:
                await res
            decision = self._hooks.authenticate(self, peer, None, None)
            if _maybe(decision) is not None:
                decision = await decision
            if isinstance(decision, Accept) and not peer.closed:
                await self._accept(peer, None)
        except PluginError as exc:
            self._plugin_failed(exc, peer, None)

    async def disconnected(self, peer: Peer, reason: str) -> None:
        """The peer's socket closed: detach it (unless already done) and run the disconnect hooks."""
        if self._detach(peer):
            await self._disconnected_hooks(peer, reason)

    def _detach(self, peer: Peer) -> bool:
        """Remove ``peer`` from the registry at once; False when it was already gone."""
        if not self.registry.remove(peer):
            return False
        peer.closed = True
        self._transport.left(peer)
        return True

    async def _disconnected_hooks(self, peer: Peer, reason: str) -> None:
        self.counts.disconnects.add(reason)
        try:
            res = _maybe(self._hooks.peer_disconnected(self, peer, reason))
            if res is not None:
                await res
        except PluginError as exc:
            self._plugin_failed(exc, None, None)

    async def _accept(
        self, peer: Peer, parent_id: str | None, reply: tuple[str, dict[str, Any]] | None = None
    ) -> None:
        if not peer.authenticated:
            self.registry.mark_authenticated(peer)
            self._transport.joined(peer)  # from now on it gets what is broadcast
        rtype, rdata = reply if reply is not None else ("module:authenticated", {"authenticated": True})
        self.send(peer, rtype, rdata, parent_id)
        res = _maybe(self._hooks.peer_authenticated(self, peer, parent_id))
        if res is not None:
            await res

    # -- the core loop -------------------------------------------------------------------------------
    def on_frame(self, peer: Peer, frame: str | bytes) -> Awaitable[None] | None:
        """Handle one frame from ``peer``. Returns an awaitable when an async hook is involved; the
        transport awaits it before the next frame, so replies to one peer go out in the order
        its frames came in."""
        if peer.closed:
            # dropped (slow consumer, heartbeat expired, ...): what it sent before the drop and
            # the socket still delivers is ignored, so it can no longer announce or route
            return None
        self.stats["frames_in"] += 1
        peer.last_seen = time.monotonic()
        if not peer.healthy:
            self.set_health(peer, True, "activity")
        if len(frame) == 4 and (frame in HEARTBEAT_FRAMES or frame in _HEARTBEAT_BYTES):
            kind = frame if isinstance(frame, str) else frame.decode()
            self.stats["frames_heartbeat"] += 1
            return self._guard(peer, None, self._hooks.heartbeat, self, peer, kind, None, None)
        try:
            event = decode_frame(frame)
        except DecodeError as exc:
            self.stats["frames_invalid"] += 1
            self.send_error(peer, exc.message, exc.parent_id)
            return None
        return self._guard(peer, event, self._dispatch, peer, event)

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
        if res is not None and awaitable(res):
            return self._guard_async(peer, event, res)
        return None

    async def _guard_async(self, peer: Peer, event: Event | None, aw: Awaitable[Any]) -> None:
        try:
            await aw
        except PluginError as exc:
            self._plugin_failed(exc, peer, event)
        except Exception as exc:
            self._internal_error(exc, peer, event)

    def _dispatch(self, peer: Peer, event: Event) -> Awaitable[Any] | None:
        etype = event.type
        md = event.metadata
        src = md.get("source") if md is not None else None
        src_key = None
        if src is not None and peer.authenticated:
            src_key = canonical(src)
            if src_key != peer.identity_key and not same_json(src, peer.source):
                # a source other than the peer's: a plugin may adopt it (never for the server's)
                if plugin_id_of(src) != SERVER_PLUGIN_ID:
                    self._hooks.source_claimed(self, peer, src, event)
        if "data" not in event.body and peer.generation == "head":
            self.send_error(peer, errors.INVALID_EVENT_FORMAT, event.id)  # the 2026-08 envelope rule
            return None
        if etype == "transport:connection:heartbeat":
            self.stats["frames_heartbeat"] += 1
            data = event.data
            kind = data.get("kind")
            message = data.get("message")
            return _maybe(self._hooks.heartbeat(
                self, peer, kind if isinstance(kind, str) else "", message if isinstance(message, str) else None, event
            ))
        if etype == "module:authenticate":
            self.stats["frames_control"] += 1
            return self._authenticate(peer, event)
        if etype == "module:announce":
            self.stats["frames_control"] += 1
            return self._announce(peer, event)
        # from here on the event may reach other peers: it must not look like the server's, and
        # it carries its sender's announced identity (nothing a frame claims)
        if is_server_event_type(etype):
            self.send_error(peer, errors.server_only_event(etype), event.id)
            return None
        if src is not None and plugin_id_of(src) == SERVER_PLUGIN_ID:
            self.send_error(peer, errors.SERVER_SOURCE_CLAIMED, event.id)
            return None
        event = event.attributed(peer.source, peer.identity_key, src_key)
        claim = self._hooks.event(self, peer, event)
        if claim is None:
            self._route(peer, event)
            return None
        if awaitable(claim):
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
        await self.authenticate(peer, event)

    async def authenticate(
        self, peer: Peer, event: Event, reply: tuple[str, dict[str, Any]] | None = None
    ) -> bool:
        """Authenticate ``peer`` with ``event.data.token`` (a non-string token counts as
        ``""``) through ``airi_authenticate``, as for ``module:authenticate``: on success the
        peer is marked authenticated, gets ``reply`` (``(type, data)``; default
        ``module:authenticated {authenticated: true}``) with the event's id as ``parentId``, and
        ``airi_peer_authenticated`` runs (the registry sync); on failure it gets the refusal
        (``invalid token``) and stays as it was. Returns whether it succeeded."""
        token = event.data.get("token")
        res = self._hooks.authenticate(self, peer, token if isinstance(token, str) else "", event)
        if _maybe(res) is not None:
            res = await res
        if peer.closed:
            return False
        if isinstance(res, Accept):
            self.wslog.debug("authenticated %s", peer.describe, extra={"peer": peer.id})
            await self._accept(peer, event.id, reply)
            return True
        # debug only: one line per guess would let a guesser flood the log (the auth plugin
        # logs failures once per address and window)
        self.wslog.debug("authentication failed for %s from %s", peer.id, peer.remote, extra={"peer": peer.id})
        self.send_error(peer, res.message if isinstance(res, Reject) else errors.INVALID_TOKEN, event.id)
        return False

    async def announce(self, peer: Peer, announcement: Announcement, event: Event) -> bool:
        """Run ``airi_announce`` for an announcement that passed its protocol checks (the
        ``registry`` plugin registers it and tells everyone); a refusal is sent to ``peer`` as
        an error. Returns False when refused."""
        res = self._hooks.announce(self, peer, announcement, event)
        if _maybe(res) is not None:
            res = await res
        if isinstance(res, Reject):
            if not peer.closed:
                self.send_error(peer, res.message, event.id)
            return False
        return True

    async def _announce(self, peer: Peer, event: Event) -> None:
        data = event.data
        identity = data.get("identity")
        normalized = normalize_identity(identity)  # the published SDK 0.8.4's default identity
        if normalized is not identity:
            data = {**data, "identity": normalized}
        problem = announce_error(data)
        if problem is None and not peer.authenticated:
            problem = errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING
        if problem is None:
            identity = data["identity"]
            if plugin_id_of(identity) == SERVER_PLUGIN_ID or instance_id_of(identity) == self.instance_id:
                problem = errors.MODULE_ANNOUNCE_SERVER_IDENTITY
        if problem is not None:
            self.send_error(peer, problem, event.id)
            return
        possible = data.get("possibleEvents")
        ann = Announcement(
            data["name"],
            non_negative_int(data["index"]) if "index" in data else None,
            data["identity"],
            possible if isinstance(possible, list) else [],
            data,
        )
        await self.announce(peer, ann, event)

    def _route(self, sender: Peer, event: Event) -> None:
        if sender.closed:  # dropped while a plugin's async airi_event was deciding
            return
        if not sender.authenticated:
            self.send_error(sender, errors.NOT_AUTHENTICATED, event.id)
            return
        ctx = RouteContext(self, sender, event, self._route_filters)
        decision, source = self._hooks.route(self, ctx)
        if isinstance(decision, Drop):
            self.wslog.debug("dropped '%s' from %s: %s", event.type, sender.display, decision.reason)
            if decision.error:
                self.send_error(sender, decision.error, event.id)
            return
        everyone = False  # every authenticated peer but the sender: queued once for all of them
        if ctx.bypass:
            recipients = [p for p in self.registry.authenticated() if p is not sender]
            everyone = True
        elif decision is None or isinstance(decision, Broadcast):
            recipients = ctx.candidates()
            # candidates never repeat a peer: as many as the authenticated peers but one is all
            everyone = bool(recipients) and len(recipients) == self.registry.authenticated_count() - 1
        elif isinstance(decision, Targets):
            recipients = [p for p in decision.peers if p is not sender and p.authenticated and not p.closed and ctx.accepts(p)]
        else:
            raise PluginError(source, "airi_route", TypeError(f"unexpected route decision {decision!r}"))
        self.stats["events_routed"] += 1
        if not recipients:
            return
        self.stats["deliveries"] += len(recipients)
        text = event.forward_text(self._wrap)
        if self._remote is not None:  # clustered: peers of other instances go through it
            remote = [p for p in recipients if p.origin is not None]
            if remote:
                self._remote(remote, text)
                recipients = [p for p in recipients if p.origin is None]
        if everyone:
            self._transport.broadcast(text, sender, sender)  # mirrors never join the transport's broadcast
        else:
            self._transport.write(recipients, text, sender)

    # -- failures ------------------------------------------------------------------------------------
    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _plugin_failed(self, exc: PluginError, peer: Peer | None, event: Event | None) -> None:
        self.stats["plugin_errors"] += 1
        self.counts.plugin_failures.add(exc.plugin, exc.hook)
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

    def _internal_error(self, exc: Exception, peer: Peer, event: Event | None) -> None:
        self.stats["plugin_errors"] += 1
        self.counts.plugin_failures.add("(kernel)", "internal")
        what = event.type if event is not None else "frame"
        self.log.error("internal error handling '%s' from %s: %s: %s", what, peer.display, type(exc).__name__, exc, exc_info=exc)
        if not peer.closed:
            self.send_error(peer, f"internal error while handling '{what}'", event.id if event else None)

    # -- start and stop ------------------------------------------------------------------------------
    async def start(self, host: str | None = None, port: int | None = None) -> Server:
        """Run the startup hooks and bind. Returns the websockets server (:attr:`port` tells the
        bound port when ``port=0``)."""
        cfg = self.settings.server
        res = _maybe(self._hooks.startup(self))
        if res is not None:
            await res
        try:
            server = await self._transport.listen(host if host is not None else cfg.host, cfg.port if port is None else port)
        except BaseException:
            # undo what the startup hooks started (timers...) before reporting the failure
            res = _maybe(self._hooks.shutdown(self))
            if res is not None:
                await res
            raise
        self.readiness.phase = "ready"
        if self.settings.discovery.mdns:
            from .discovery import Advertiser  # zeroconf is imported only when used

            self.advertiser = Advertiser(self)
            await self.advertiser.start()
        return server

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        return int(self._transport.address()[1])

    @property
    def url(self) -> str:
        """``ws://host:port/path`` (``wss://`` with TLS) of the running hub."""
        host = self._transport.address()[0]
        scheme = "wss" if self.settings.server.tls is not None else "ws"
        return f"{scheme}://{host}:{self.port}{self.settings.server.path}"

    async def shutdown(self) -> None:
        """Close every peer with ``1001 server shutdown`` after every peer heard every other's
        de-announce, run the shutdown hooks and stop listening. Waits at most
        ``[server] drain_timeout_ms`` for the closes."""
        if self._closing:
            return
        self._closing = True
        self.readiness.phase = "draining"
        if self.advertiser is not None:
            await self.advertiser.stop()  # withdrawn before the peers go: nobody new is sent here
        self._transport.stop_accepting()
        peers = list(self.registry)
        # the disconnect hooks run while every peer is still registered (each broadcast excludes
        # the departing peer), then everyone is detached at once
        for peer in peers:
            await self._disconnected_hooks(peer, "server shutdown")
        for peer in peers:
            self._detach(peer)
        await self._transport.close_all(peers, self.settings.server.drain_timeout_ms / 1000)
        try:
            res = _maybe(self._hooks.shutdown(self))
            if res is not None:
                await res
        except PluginError as exc:
            self._plugin_failed(exc, None, None)
        for task in list(self._tasks):
            task.cancel()
