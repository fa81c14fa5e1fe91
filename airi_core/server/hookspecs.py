"""The hooks an AIRI hub plugin may implement: the public API for extension authors.

A plugin is a module or a class (instantiated once per hub) whose functions carry the
``@airi_core.hookimpl`` marker and are registered under the ``airi.plugins`` entry-point group::

    # pyproject.toml of your distribution
    [project.entry-points."airi.plugins"]
    drop-typing = "my_package.plugin:DropTyping"

Every hook receives the :class:`~airi_core.Hub` as ``hub`` (its docstring lists what a plugin
may use); only declare the arguments you use (pluggy passes arguments by name). Hooks marked
*may be async* can be ``async def``: the kernel awaits them (with ``[plugins] hook_timeout_ms``
as the limit). ``airi_route``, ``airi_peer_health_changed``, ``airi_source_claimed`` and
``airi_config_model`` must be plain functions (they run on the hot path or outside the event
loop's flow).

Result rules: a *first-result* hook is asked plugin by plugin (in pluggy order: ``tryfirst`` /
``trylast``, then later registration first; route hooks reordered by ``[plugins] order``) until
one returns a value other than ``None`` (an async implementation is awaited first, so an
``async def`` returning None falls through). Other hooks call every implementation and ignore
return values. pluggy's wrappers work on every hook: ``@hookimpl(wrapper=True)`` (a generator
that yields once, receives the result or the exception and returns the result) and old-style
``@hookimpl(hookwrapper=True)`` wrap all plain implementations, whatever ``[plugins] order``
says. ``hub.plugins.register(obj, name)`` / ``unregister(name)`` at run time take effect at once.

A plugin may also declare, as attributes of its class or module: ``airi_essential = True`` (it
cannot be disabled) and ``airi_config_section = "name"`` (its settings live in ``[name]`` of
``airi.toml`` instead of ``[plugins.<plugin name>]``).

If an implementation raises, the kernel logs the plugin and hook by name, the peer whose frame was
being handled gets an ``error`` event (``plugin '<name>' failed in <hook>``), and the hub carries
on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..protocol.events import Event
    from .decisions import Accept, Reject, RouteDecision
    from .kernel import Hub
    from .peer import Peer
    from .routing import Announcement, RouteContext

PROJECT = "airi"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def airi_config_model() -> type[BaseModel] | None:  # type: ignore[empty-body]
    """Declare the pydantic model that validates this plugin's ``[plugins.<name>]`` table.

    Called once per plugin at load time, before the server binds; the core asks each plugin's
    own implementation, so the first result rule never mixes two plugins' models. Return a model
    class (use ``model_config = ConfigDict(extra="forbid")`` to reject unknown keys) or ``None``
    for a plugin without settings. The table is ``[plugins.<name>]``, or the plugin's own
    ``airi_config_section``. The validated instance is then available as
    ``hub.plugin_config(self)`` (or by name); an invalid table stops ``airi serve`` with exit
    status 2 and the key path.

    Example::

        class Settings(BaseModel):
            drop_types: list[str] = []

        @hookimpl
        def airi_config_model():
            return Settings
    """


@hookspec
def airi_startup(hub: Hub) -> Any:
    """Called once when the hub is about to accept connections (may be async).

    Start timers or open resources here; everything started must stop in :func:`airi_shutdown`.
    The return value is ignored; an exception stops the hub from starting.
    """


@hookspec
def airi_shutdown(hub: Hub) -> Any:
    """Called once when the hub is stopping, after every peer was closed and de-announced (may
    be async). The return value is ignored."""


@hookspec
def airi_peer_connected(hub: Hub, peer: Peer) -> Any:
    """Called when a WebSocket connection was accepted on the hub's path (may be async).

    Called before the connect-time :func:`airi_authenticate`. The peer is registered but not yet
    authenticated. The return value is ignored.
    """


@hookspec
def airi_peer_disconnected(hub: Hub, peer: Peer, reason: str) -> Any:
    """Called when ``peer`` left: its socket closed (``reason`` = ``connection closed``) or the hub dropped it
    (``heartbeat expired``, ``send failed``, ``server shutdown``, ...). May be async.

    The peer is already removed from ``hub.registry`` (except with reason ``server shutdown``:
    then every peer is still registered while the hooks run, so that each hears about all the
    others before its close frame; exclude ``peer`` itself from broadcasts), and ``peer.name``,
    ``peer.index`` and ``peer.identity`` still describe what it had announced
    (``peer.announced`` tells whether it had). The built-in ``registry`` plugin broadcasts ``module:de-announced`` from here. The
    return value is ignored.
    """


@hookspec(firstresult=True)
def airi_authenticate(hub: Hub, peer: Peer, token: str | None, event: Event | None) -> Accept | Reject | None:
    """Decide whether ``peer`` is authenticated (first result, may be async).

    Called once right after a peer connects with ``token=None`` and ``event=None`` (a plugin may
    accept from the handshake alone; the built-in ``auth`` plugin accepts here when no token is
    configured), and on each authenticate event (``module:authenticate``, and the 2026-08
    ``peer:authenticate`` / ``extension:authenticate``: ``event.type`` tells) with the
    ``data.token`` sent (``""`` when missing or not a string).

    Return :data:`~airi_core.ACCEPT` to accept (the core sends ``module:authenticated`` and runs
    :func:`airi_peer_authenticated`), a :class:`~airi_core.Reject` to refuse (the core sends the
    error, e.g. ``invalid token``), or ``None`` to let the next plugin decide. When every plugin
    returns ``None``: at connect time the peer stays unauthenticated; on ``module:authenticate``
    it is refused with ``invalid token``.

    Example (accept a second, read-only token)::

        @hookimpl(tryfirst=True)
        def airi_authenticate(token):
            if token is not None and hmac.compare_digest(token, "viewer-secret"):
                return ACCEPT
    """


@hookspec
def airi_peer_authenticated(hub: Hub, peer: Peer, parent_id: str | None) -> Any:
    """Called when ``peer`` was just accepted and ``module:authenticated`` sent (may be async).

    ``parent_id`` is the ``metadata.event.id`` of the authenticate event (None at connect
    time); the reply (``module:authenticated``, or the 2026-08 ``peer:authenticated`` /
    ``extension:authenticated``) has been sent. The built-in ``registry`` plugin sends the registry sync from here. The
    return value is ignored.
    """


@hookspec(firstresult=True)
def airi_announce(hub: Hub, peer: Peer, announcement: Announcement, event: Event) -> Accept | Reject | None:
    """Called when a module announce passed the protocol checks (first result, may be async):
    ``announcement.family`` is ``"module"`` for ``module:announce`` and ``"extension"`` for the
    2026-08 ``extension:module:announce``.

    The core (or the ``extensions`` plugin) has already validated ``name``, ``index`` and
    ``identity`` and refused unauthenticated peers. Return a :class:`~airi_core.Reject` to
    refuse the announcement with an error, :data:`~airi_core.ACCEPT` when the announcement has
    been handled, or ``None`` to pass it on. The built-in ``registry`` plugin (``trylast``)
    registers the module and broadcasts ``module:announced`` and the registry sync.
    """


@hookspec
def airi_heartbeat(hub: Hub, peer: Peer, kind: str, message: str | None, event: Event | None) -> Any:
    """Called when a heartbeat arrived (may be async; every implementation is called).

    ``kind`` is ``"ping"`` or ``"pong"``. ``event`` is the ``transport:connection:heartbeat``
    event, or ``None`` for a raw ``ping``/``pong`` text frame (which must never be answered with
    an error). Called before authentication too. The built-in ``heartbeat`` plugin answers pings
    with a pong. Liveness itself is updated by the core on every frame. The return value is
    ignored.
    """


@hookspec
def airi_peer_health_changed(hub: Hub, peer: Peer, healthy: bool, reason: str) -> Any:
    """Called when ``peer.healthy`` flipped (``reason`` e.g. ``heartbeat late``, or
    ``activity`` when a frame arrived from an unhealthy peer). Must not be async.

    The built-in ``registry`` plugin broadcasts ``registry:modules:health:(un)healthy``. The
    return value is ignored.
    """


@hookspec
def airi_source_claimed(hub: Hub, peer: Peer, source: dict[str, Any], event: Event) -> Any:
    """Called when a frame of an authenticated ``peer`` carries a ``metadata.source`` other
    than the one the hub stamps on what ``peer`` sends (``peer.source``), before the frame is
    handled. Must not be async; every implementation is called.

    By itself a claimed source changes nothing: routed events carry ``peer.source`` whatever
    the frame says. A plugin may adopt the claim as the peer's identity with
    ``hub.registry.adopt(peer, identity, source, verified)``; the built-in ``extensions``
    plugin does so for the 2026-08 generation's rule (an extension-module-shaped source before
    the first announce; after an extension module announce, a source naming one of the peer's
    module ids selects that module's announced identity). Never called for a source claiming
    the server's plugin id. The return value is ignored.
    """


@hookspec(firstresult=True)
def airi_event(hub: Hub, peer: Peer, event: Event) -> Accept | Reject | None:
    """Claim and handle an event type that is not authentication, announce or heartbeat (first
    result, may be async).

    Called for every such event, authenticated sender or not, before routing, except the types
    only the server sends (``registry:*``, ``module:authenticated``, ``module:announced``,
    ``module:de-announced``, ``module:configure``, ``error``) and events claiming the server as
    ``metadata.source``: the kernel refuses those first. ``event`` is attributed: its
    ``metadata.source`` is the sender's announced identity (absent before it announced),
    whatever the frame said (see ``Event.attributed``). Return
    :data:`~airi_core.ACCEPT` when you handled it (routing is skipped), a
    :class:`~airi_core.Reject` to answer the sender with an error (routing is skipped), or
    ``None`` to leave it to the next plugin and finally to routing. Built-ins claim
    ``ui:configure`` and ``module:consumer:register`` / ``unregister`` here.

    Example::

        @hookimpl
        def airi_event(hub, peer, event):
            if event.type == "debug:whoami":
                hub.send(peer, "debug:you", {"id": peer.id}, parent_id=event.id)
                return ACCEPT
    """


@hookspec(firstresult=True)
def airi_route(hub: Hub, ctx: RouteContext) -> RouteDecision | None:
    """Decide where an authenticated peer's event goes (first result, must NOT be async).

    Called for every event that no ``airi_event`` implementation claimed, once its sender is
    known to be authenticated.

    Route plugins are consulted in pluggy's order, which the plugins declare (the built-ins:
    ``destinations`` and ``bypass`` are ``tryfirst``, ``consumers`` is ``trylast``, third-party
    plugins in between), unless ``[plugins] order`` of ``airi.toml`` names some first. Each may
    narrow the candidates with ``ctx.add_filter(predicate)`` / ``ctx.narrow(peers)`` and return
    ``None`` to go on, or end the chain with :class:`~airi_core.Drop` (nobody; optionally an
    error to the sender), :class:`~airi_core.Targets` (these peers) or
    :data:`~airi_core.BROADCAST` (every candidate). No decision at all means broadcast. Whatever
    the decision, the kernel delivers only to authenticated peers other than the sender that
    pass every filter added (only ``ctx.bypass``, the devtools bypass, skips the filters), then
    forwards the sender's frame without re-encoding it.

    A ``wrapper=True`` implementation wraps the whole chain in any order and may replace the
    decision. A filter that must hold for every event whatever the route plugins decide (the
    built-in ``policy``) is better added once with ``hub.add_route_filter`` at startup: every
    route context starts with it, at no cost per event.

    Keep this cheap: it runs for every routed message.

    Example (drop typing indicators)::

        @hookimpl
        def airi_route(ctx):
            if ctx.event.type == "input:typing":
                return Drop("typing indicators are off")
    """


@hookspec
def airi_reload(hub: Hub, changed: frozenset[str]) -> Any:
    """Called after the configuration was reloaded (``SIGHUP`` to ``airi serve``, or
    :func:`airi_core.server.reload.reload_hub`) and the new settings are in place (may be async).

    ``changed`` holds the dotted keys of the tables whose values changed: the kernel's sections
    (``server``, ``limits``, ``logging``, ``plugins``, ``http``) and each plugin's own table
    (``auth``, ``heartbeat``, ``routing.policy``, ``plugins.<name>``...). ``hub.settings`` and
    ``hub.plugin_config(self)`` already return the new values: take them over here (rebuild what
    was derived from the old ones in :func:`airi_startup`) without dropping anyone's connection.

    A plugin without this hook keeps its settings as loaded at start: when its table changed, the
    reload reports that it needs a restart. An exception is reported (the plugin and the hook)
    and the other plugins still get the call. The return value is ignored.

    Example::

        @hookimpl
        def airi_reload(hub, changed):
            if "plugins.drop-types" in changed:
                self.drop = set(hub.plugin_config(self).drop_types)
    """
