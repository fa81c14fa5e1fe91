"""``registry``: the module registry's protocol behaviour.

Announce (``module:announced`` to the others, a registry sync to everyone), de-announce with a
reason, the registry sync after authentication, and health broadcasts. An identical re-announce
(same name, index and identity) changes nothing and sends nothing: the JS SDK announces twice on
every connection without a token.
"""

from __future__ import annotations

from typing import Any

from airi_core import ACCEPT, Accept, Announcement, Event, Peer, hookimpl
from airi_core.hub import Hub


def sync(hub: Hub, peer: Peer | None = None, parent_id: str | None = None) -> None:
    """Send ``registry:modules:sync`` to ``peer``, or to every authenticated peer."""
    data = {"modules": hub.registry.modules()}
    if peer is None:
        hub.broadcast("registry:modules:sync", data)
    else:
        hub.send(peer, "registry:modules:sync", data, parent_id)


def _de_announced(hub: Hub, entry: dict[str, Any], reason: str) -> None:
    hub.broadcast("module:de-announced", {**entry, "reason": reason})


class ModuleRegistryPlugin:
    @hookimpl
    def airi_peer_authenticated(self, hub: Hub, peer: Peer, parent_id: str | None) -> None:
        sync(hub, peer, parent_id)

    @hookimpl(trylast=True)
    def airi_announce(self, hub: Hub, peer: Peer, announcement: Announcement, event: Event) -> Accept:
        ann = announcement
        if peer.announced:
            if peer.name == ann.name and peer.index == ann.index and peer.identity == ann.identity:
                return ACCEPT  # identical re-announce: nothing changes
            previous = peer.module_entry()
            hub.registry.unregister_module(peer)
            _de_announced(hub, previous, "re-announcing")
        hub.registry.register_module(peer, ann.name, ann.index, ann.identity)
        hub.log.info("announced %s (%s)", peer.display, peer.plugin_id, extra={"peer": peer.id})
        hub.broadcast("module:announced", peer.module_entry(), event.id, exclude=peer)
        sync(hub)
        return ACCEPT

    @hookimpl
    def airi_peer_disconnected(self, hub: Hub, peer: Peer, reason: str) -> None:
        if not peer.announced:
            return
        _de_announced(hub, peer.module_entry(), reason)
        sync(hub)

    @hookimpl
    def airi_peer_health_changed(self, hub: Hub, peer: Peer, healthy: bool, reason: str) -> None:
        if not peer.announced or not peer.authenticated:
            return
        if healthy:
            hub.broadcast("registry:modules:health:healthy", peer.module_entry())
        else:
            hub.broadcast("registry:modules:health:unhealthy", {**peer.module_entry(), "reason": reason})
