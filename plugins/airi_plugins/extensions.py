"""``extensions``: the 2026-08 protocol generation's handshake (PROTOCOL-HEAD.md), beside the
April one on the same hub.

The AIRI 0.11 apps and their SDK authenticate and announce with their own events; this plugin
claims them (``airi_event``) and hands them to the kernel's shared machinery, so that
authentication (``airi_authenticate``: tokens, throttling, client credentials), the module
registry (``airi_announce``: the ``registry`` plugin), routing, heartbeats, consumers and
``ui:configure`` are the same for both generations:

- ``peer:authenticate {token?, peerId?}``: authenticates like ``module:authenticate``; answers
  ``peer:authenticated {authenticated: true, peerId}`` then a registry sync. ``peerId`` (or the
  connection id when absent) becomes an alias ``peer:ID`` reaches (aliases are not unique).
- ``extension:authenticate {identity, token?}``: the same, answering ``extension:authenticated
  {identity, authenticated: true}``; ``identity`` becomes the connection's extension identity.
- ``extension:announce {identity, permissions?}``: sets the connection's extension identity and
  echoes the data as ``extension:announced`` to the sender, then to every other authenticated
  peer. Nothing enters the registry.
- ``extension:module:announce {name, identity, possibleEvents, ...}``: checked in the HEAD order
  with the HEAD error texts, then announced through ``airi_announce`` as family
  ``"extension"`` (the ``registry`` plugin lists it, syncs and echoes
  ``extension:module:announced``).

It also keeps two per-connection facts the 2026-08 rules depend on:

- the **generation**: a connection that sent an ``extension:*``/``peer:*`` event without having
  used ``module:announce`` is a 2026-08 one (``peer.generation = "head"``): for it an empty
  ``data.destinations`` means nobody and a frame without ``data`` is ``invalid event format``;
- **identity adoption** (``airi_source_claimed``): before its first announce, an authenticated
  connection's extension-module-shaped ``metadata.source`` becomes its identity (an April-shaped
  one never does); after an extension module announce, only a source whose ``id`` is one of its
  module ids is adopted, and it selects that module's identity *as announced* (so a later source
  cannot add labels such as ``devtools``). A connection that used ``module:announce`` keeps that
  identity.

Limits (``[plugins.extensions]``): ``max_peer_ids`` aliases per connection of at most
``max_peer_id_chars`` characters; adopted sources of at most ``max_source_bytes``; the
``extension:announce`` echo is bounded like the module announce (``[plugins.registry]``
``max_announce_bytes``, ``announce_burst``, ``announce_rate_per_second``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airi_core import ACCEPT, Accept, Announcement, Event, Hub, Peer, Reject, errors, hookimpl
from airi_core.protocol.events import canonical
from airi_core.protocol.identity import (
    SERVER_PLUGIN_ID,
    extension_module_announce_error,
    extension_source,
    is_extension_identity,
    is_extension_module_identity,
    source_consistent,
)

from ._bucket import AnnounceBucket


class ExtensionsSettings(BaseModel):
    """``[plugins.extensions]``."""

    model_config = ConfigDict(extra="forbid")
    #: ``peer:authenticate`` aliases one connection may hold.
    max_peer_ids: int = Field(64, ge=1)
    #: Longest ``peerId``, in characters.
    max_peer_id_chars: int = Field(256, ge=1)
    #: Largest ``metadata.source`` adopted as a connection's identity, in bytes of compact JSON.
    max_source_bytes: int = Field(8 * 1024, ge=256)


def _server_like(hub: Hub, identity: dict[str, Any]) -> bool:
    """An identity naming the hub itself (its plugin id or instance id)."""
    ext = identity.get("extension")
    return (
        identity.get("id") in (SERVER_PLUGIN_ID, hub.instance_id)
        or isinstance(ext, dict) and ext.get("id") == SERVER_PLUGIN_ID
    )


class Extensions:
    def __init__(self) -> None:
        self.settings = ExtensionsSettings()
        self._burst = 10
        self._rate = 1.0
        self._max_announce = 64 * 1024
        self._buckets: dict[Peer, AnnounceBucket] = {}

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return ExtensionsSettings

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        cfg = hub.plugin_config(self)
        if isinstance(cfg, ExtensionsSettings):
            self.settings = cfg
        registry = hub.plugin_config("registry")
        if registry is not None:
            self._burst = getattr(registry, "announce_burst", self._burst)
            self._rate = getattr(registry, "announce_rate_per_second", self._rate)
            self._max_announce = getattr(registry, "max_announce_bytes", self._max_announce)

    @hookimpl
    def airi_reload(self, hub: Hub, changed: frozenset[str]) -> None:
        """New limits (its own table, and the registry's announce limits it shares)."""
        if changed & {"plugins.extensions", "plugins.registry"}:
            self.airi_startup(hub)

    @hookimpl
    def airi_peer_disconnected(self, peer: Peer) -> None:
        self._buckets.pop(peer, None)

    # -- identity adoption -----------------------------------------------------------------------
    @hookimpl
    def airi_source_claimed(self, hub: Hub, peer: Peer, source: dict[str, Any]) -> None:
        if peer.announced or not is_extension_module_identity(source) or _server_like(hub, source):
            return  # an April module keeps its identity; an April-shaped source is never adopted
        if not peer.modules:
            if len(canonical(source)) <= self.settings.max_source_bytes:
                hub.registry.adopt(peer, source)  # a claim, not an announce: never devtools
            return
        module = peer.modules.get(source["id"])
        if module is None:
            return
        stamped = source if source_consistent(source, module.identity) else extension_source(module.identity)
        hub.registry.adopt(peer, module.identity, stamped, verified=True)

    # -- the handshake events --------------------------------------------------------------------
    @hookimpl
    def airi_event(self, hub: Hub, peer: Peer, event: Event) -> Any:
        etype = event.type
        if not (etype.startswith("extension:") or etype.startswith("peer:")):
            return None
        if peer.generation != "head" and not peer.announced:
            peer.generation = "head"
        if etype == "extension:module:announce":
            return self._module_announce(hub, peer, event)
        if etype == "peer:authenticate":
            return self._peer_authenticate(hub, peer, event)
        if etype == "extension:authenticate":
            return self._extension_authenticate(hub, peer, event)
        if etype == "extension:announce":
            return self._extension_announce(hub, peer, event)
        return None  # the other 2026-08 types are routed like any event

    async def _peer_authenticate(self, hub: Hub, peer: Peer, event: Event) -> Accept | Reject:
        data = event.data
        alias = data.get("peerId")
        if alias is None:
            alias = peer.id
        if isinstance(alias, str):
            cfg = self.settings
            if len(alias) > cfg.max_peer_id_chars:
                return Reject(errors.peer_id_too_long(cfg.max_peer_id_chars))
            fresh = {peer.id, alias} - peer.aliases
            if len(peer.aliases) + len(fresh) > cfg.max_peer_ids:
                return Reject(errors.too_many_peer_ids(cfg.max_peer_ids))
        if await hub.authenticate(peer, event, ("peer:authenticated", {"authenticated": True, "peerId": alias})):
            hub.registry.add_alias(peer, peer.id)
            if isinstance(alias, str):
                hub.registry.add_alias(peer, alias)
        return ACCEPT

    async def _extension_authenticate(self, hub: Hub, peer: Peer, event: Event) -> Accept:
        data = event.data
        reply: dict[str, Any] = {"identity": data["identity"]} if "identity" in data else {}
        reply["authenticated"] = True
        if await hub.authenticate(peer, event, ("extension:authenticated", reply)):
            identity = data.get("identity")
            if isinstance(identity, dict) and not _server_like(hub, identity):
                hub.registry.set_extension(peer, identity)
        return ACCEPT

    def _extension_announce(self, hub: Hub, peer: Peer, event: Event) -> Accept | Reject:
        if not peer.authenticated:
            return Reject(errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING)
        data = event.data
        identity = data.get("identity")
        if not isinstance(identity, dict) or not is_extension_identity(identity):
            return Reject(errors.EXTENSION_MODULE_ANNOUNCE_IDENTITY_INVALID)
        if _server_like(hub, identity):
            return Reject(errors.EXTENSION_ANNOUNCE_SERVER_IDENTITY)
        if len(canonical(data)) > self._max_announce:
            return Reject(errors.announce_too_large(self._max_announce, "extension:announce"))
        limited = self._rate_limited(peer)
        if limited is not None:
            return limited
        hub.registry.set_extension(peer, identity)
        hub.broadcast("extension:announced", data, event.id)  # the sender first, then the others
        return ACCEPT

    def _module_announce(self, hub: Hub, peer: Peer, event: Event) -> Any:
        if not peer.authenticated:
            return Reject(errors.MUST_AUTHENTICATE_BEFORE_ANNOUNCING)
        data = event.data
        problem = extension_module_announce_error(data, peer.extension)
        if problem is not None:
            return Reject(problem)
        identity: dict[str, Any] = data["identity"]
        if _server_like(hub, identity):
            return Reject(errors.EXTENSION_ANNOUNCE_SERVER_IDENTITY)
        possible = data.get("possibleEvents")
        ann = Announcement(
            data["name"], None, identity, possible if isinstance(possible, list) else [], data, family="extension"
        )
        return self._announced(hub.announce(peer, ann, event))

    @staticmethod
    async def _announced(pending: Any) -> Accept:
        await pending  # a refusal was sent by the kernel
        return ACCEPT

    def _rate_limited(self, peer: Peer) -> Reject | Accept | None:
        """The ``extension:announce`` token bucket: None when it may go on; over the limit, an
        error at most once a second (else silently dropped)."""
        now = asyncio.get_running_loop().time()
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = AnnounceBucket(float(self._burst), now)
        refused = bucket.take(now, self._burst, self._rate)
        if refused is None:
            return None
        return Reject(refused) if refused else ACCEPT
