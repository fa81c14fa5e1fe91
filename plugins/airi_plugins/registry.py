"""``registry``: the module registry's protocol behaviour.

Announce (``module:announced`` to the others, a registry sync to everyone), de-announce with a
reason, the registry sync after authentication, and health broadcasts. An identical re-announce
(same name, index and identity) changes nothing and sends nothing: the JS SDK announces twice on
every connection without a token.

The registry sync that follows an announce or de-announce is coalesced: it goes out once the
registry has been quiet for ``[plugins.registry] sync_debounce_ms`` (at most
``sync_max_delay_ms`` after the first change), and the broadcast syncs together never use more
than ``sync_bytes_per_second`` of any peer's bandwidth: after a sync of S bytes the next one
waits at least S / budget. So N modules connecting at once cost each peer the N
``module:announced`` deltas plus syncs bounded by the budget times the burst's length: linear in
N, where the reference sends N syncs of N entries to every peer. The direct sync a peer gets
when it authenticates is never delayed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airi_core import ACCEPT, Accept, Announcement, Event, Hub, Peer, hookimpl


class RegistrySettings(BaseModel):
    """``[plugins.registry]``."""

    model_config = ConfigDict(extra="forbid")
    #: Quiet time after the last announce/de-announce before the registry sync goes out
    #: (0 = send a sync after every change, as the reference does).
    sync_debounce_ms: int = Field(10, ge=0)
    #: Upper bound on how long a sync may be held back by the debounce during a burst.
    sync_max_delay_ms: int = Field(1000, ge=0)
    #: Bandwidth the broadcast syncs may use per peer (the deltas, module:announced and
    #: module:de-announced, are never held back).
    sync_bytes_per_second: int = Field(64 * 1024, ge=1024)


def sync(hub: Hub, peer: Peer | None = None, parent_id: str | None = None) -> int:
    """Send ``registry:modules:sync`` to ``peer``, or to every authenticated peer; returns the
    broadcast's size (0 for a direct sync)."""
    data = {"modules": hub.registry.modules()}
    if peer is None:
        return hub.broadcast("registry:modules:sync", data)
    hub.send(peer, "registry:modules:sync", data, parent_id)
    return 0


def _de_announced(hub: Hub, peer: Peer, entry: dict[str, Any], reason: str) -> None:
    hub.broadcast("module:de-announced", {**entry, "reason": reason}, exclude=peer)


class ModuleRegistryPlugin:
    airi_essential = True

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._first_change = 0.0
        self._next_allowed = 0.0  # bandwidth budget: no broadcast sync before this time
        self._settings = RegistrySettings()

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return RegistrySettings

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        cfg = hub.plugin_config(self)
        if isinstance(cfg, RegistrySettings):
            self._settings = cfg

    @hookimpl
    def airi_shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def changed(self, hub: Hub) -> None:
        """The module list changed: schedule (or send) the broadcast registry sync."""
        debounce = self._settings.sync_debounce_ms / 1000
        if debounce <= 0:
            sync(hub)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._timer is None:
            self._first_change = now
        else:
            self._timer.cancel()
        at = min(now + debounce, self._first_change + self._settings.sync_max_delay_ms / 1000)
        self._timer = loop.call_at(max(at, self._next_allowed), self._flush, hub)

    def _flush(self, hub: Hub) -> None:
        self._timer = None
        size = sync(hub)
        self._next_allowed = asyncio.get_running_loop().time() + size / self._settings.sync_bytes_per_second

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
            _de_announced(hub, peer, previous, "re-announcing")
        hub.registry.register_module(peer, ann.name, ann.index, ann.identity)
        hub.log.info("announced %s (%s)", peer.describe, peer.plugin_id, extra={"peer": peer.id})
        hub.broadcast("module:announced", peer.module_entry(), event.id, exclude=peer)
        self.changed(hub)
        return ACCEPT

    @hookimpl
    def airi_peer_disconnected(self, hub: Hub, peer: Peer, reason: str) -> None:
        if not peer.announced:
            return
        _de_announced(hub, peer, peer.module_entry(), reason)
        self.changed(hub)

    @hookimpl
    def airi_peer_health_changed(self, hub: Hub, peer: Peer, healthy: bool, reason: str) -> None:
        if not peer.announced or not peer.authenticated:
            return
        if healthy:
            hub.broadcast("registry:modules:health:healthy", peer.module_entry())
        else:
            hub.broadcast("registry:modules:health:unhealthy", {**peer.module_entry(), "reason": reason})
