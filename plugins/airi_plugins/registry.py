"""``registry``: the module registry's protocol behaviour.

Announce (``module:announced`` to the others, a registry sync to everyone), de-announce with a
reason, the registry sync after authentication, and health broadcasts. An identical re-announce
(same name, index and identity) changes nothing and sends nothing: the JS SDK announces twice on
every connection without a token.

Bounded control traffic (``[plugins.registry]``):

- **Sizes**: a name of at most ``max_name_chars`` characters, an identity of at most
  ``max_identity_bytes`` bytes of compact JSON with at most ``max_labels`` labels; and the whole
  registry (what one ``registry:modules:sync`` lists) at most ``max_registry_bytes`` (by default,
  and at most, half the room between ``limits.outbound_soft_bytes`` and
  ``limits.outbound_hard_bytes``). An announce over a limit is refused with an error and changes
  nothing.
- **Rate**: each connection may announce ``announce_burst`` times at once, then
  ``announce_rate_per_second`` times a second (a token bucket); an announce over it is dropped,
  and answered with an ``announce rate limit exceeded`` error at most once a second (so a flood
  of announces does not even amplify towards its sender).
- **Syncs never drop a reading peer**: the registry sync that follows announces and
  de-announces is coalesced: it goes out once the registry has been quiet for
  ``sync_debounce_ms`` (at most ``sync_max_delay_ms`` after the first change, once the burst's
  deltas outweigh the sync 10 to 1: a storm costs each peer one listing; while
  ``STORM_AUTHENTICATIONS`` connections that authenticated lately have not announced yet, it
  waits for them rather than going out in a lull, also at most ``sync_max_delay_ms``), and the broadcast
  syncs together never use more than ``sync_bytes_per_second`` of any peer's bandwidth (after a
  sync of S bytes the next one waits at least S / budget). A peer that is *behind* (more than
  ``limits.outbound_soft_bytes`` unsent) is skipped and gets the then-current sync once it has
  drained below that, so a sync (at most ``max_registry_bytes``) never pushes a peer past
  ``outbound_hard_bytes``. The direct sync a peer gets when it authenticates is never delayed.

Worst case, per byte of ``module:announce`` received: an accepted announce of an entry of E
bytes sends every other authenticated peer ``module:announced`` (E, plus the announce's event
id as ``parentId``, plus ~200 bytes of envelope) and, when it replaces an earlier announcement,
``module:de-announced`` of that entry (E' + ~230); the frame of size F carries the entry and the
id, and every entry is announced and de-announced once, so the deltas are at most
2 (N - 1) (1 + 250 / F) bytes per byte received (N peers; F >= 95 for the smallest valid
announce: < 8 (N - 1)), and at most
``announce_burst`` + ``announce_rate_per_second`` x seconds announces per connection. Syncs do
not grow with what is received: per peer at most ``sync_bytes_per_second`` plus one sync of at
most ``max_registry_bytes``. The reference sends N syncs of N entries to every peer for N
announces.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airi_core import ACCEPT, Accept, Announcement, Event, Hub, Peer, Reject, errors, hookimpl
from airi_core import Module
from airi_core.protocol.events import canonical
from airi_core.protocol.identity import extension_source, instance_id_of, label_count, source_consistent

from ._bucket import AnnounceBucket

#: How often peers whose sync was held back (they were behind) are looked at again.
RETRY_S = 0.05
#: A 2026-08 announce gets its sync out to everyone at once while the sync bandwidth budget is
#: at most this far ahead (a burst of small syncs, as the 2026-08 reference sends one per
#: announce); beyond, the others get the next coalesced sync.
SYNC_BURST_S = 0.5
#: While at least this many connections authenticated within the last ``sync_max_delay_ms``
#: have not announced yet, a storm is under way: the coalesced sync waits for it to end (at most
#: ``sync_max_delay_ms`` after the first change) instead of going out in a lull of
#: ``sync_debounce_ms`` (a busy loop makes such lulls), each one a full listing to every peer.
STORM_AUTHENTICATIONS = 16
#: ``max_registry_bytes`` is never below this, however close the outbound limits are.
MIN_REGISTRY_BYTES = 16 * 1024


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
    #: Longest module name, in characters.
    max_name_chars: int = Field(256, ge=1)
    #: Largest identity, in bytes of compact JSON (labels included).
    max_identity_bytes: int = Field(8 * 1024, ge=64)
    #: Most labels in one identity (``plugin.labels`` and ``labels`` counted together).
    max_labels: int = Field(64, ge=0)
    #: Most bytes of module entries in the registry (the size of a sync); unset = half of
    #: ``limits.outbound_hard_bytes - limits.outbound_soft_bytes``, which is also the maximum.
    max_registry_bytes: int | None = Field(None, ge=1024)
    #: Announces a connection may send at once...
    announce_burst: int = Field(10, ge=1)
    #: ...and then per second (a token bucket). ``extension:announce`` counts too.
    announce_rate_per_second: float = Field(1.0, gt=0)
    #: Most extension modules one connection may hold (2026-08 ``extension:module:announce``).
    max_modules_per_connection: int = Field(64, ge=1)
    #: Largest ``data`` of an ``extension:announce`` / ``extension:module:announce``, in bytes of
    #: compact JSON: it is echoed to every authenticated peer.
    max_announce_bytes: int = Field(64 * 1024, ge=1024)


def sync(hub: Hub, peer: Peer | None = None, parent_id: str | None = None) -> int:
    """Send ``registry:modules:sync`` to ``peer``, or to every authenticated peer; returns the
    broadcast's size (0 for a direct sync)."""
    data = {"modules": hub.registry.listing()}
    if peer is None:
        return hub.broadcast("registry:modules:sync", data)
    hub.send(peer, "registry:modules:sync", data, parent_id)
    return 0


def _de_announced(hub: Hub, peer: Peer, entry: dict[str, Any], reason: str) -> None:
    hub.broadcast("module:de-announced", {**entry, "reason": reason}, exclude=peer)


class _Announcer(AnnounceBucket):
    """What the registry keeps per connection that announced: its announce token bucket and the
    sizes of its registry entries (its April module's, its extension modules' by id)."""

    __slots__ = ("legacy", "sizes")

    def __init__(self, tokens: float, at: float) -> None:
        super().__init__(tokens, at)
        self.legacy = 0
        self.sizes: dict[str, int] = {}


class ModuleRegistryPlugin:
    airi_essential = True

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._first_change = 0.0
        self._changes = 0  # announces and de-announces since the timer was set
        self._due = 0.0  # when the coalesced sync goes out (the timer may fire before, then waits)
        self._next_allowed = 0.0  # bandwidth budget: no broadcast sync before this time
        self._settings = RegistrySettings()
        self._max_registry = 0
        self._soft = 0
        self._total = 0  # bytes of module entries registered through this plugin
        self._announcers: dict[Peer, _Announcer] = {}
        self._pending: dict[Peer, None] = {}  # behind at the last sync: sent once drained
        self._unannounced: dict[Peer, float] = {}  # authenticated, no module yet -> since (loop time)
        self._retry: asyncio.TimerHandle | None = None

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return RegistrySettings

    @hookimpl
    def airi_reload(self, hub: Hub, changed: frozenset[str]) -> None:
        """New limits from the next announce and sync on (see airi_startup)."""
        if "plugins.registry" in changed or "limits" in changed:
            self.airi_startup(hub)

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        cfg = hub.plugin_config(self)
        if isinstance(cfg, RegistrySettings):
            self._settings = cfg
        limits = hub.settings.limits
        self._soft = limits.outbound_soft_bytes
        room = max((limits.outbound_hard_bytes - limits.outbound_soft_bytes) // 2, MIN_REGISTRY_BYTES)
        wanted = self._settings.max_registry_bytes
        if wanted is not None and wanted > room:
            hub.log.warning(
                "plugins.registry.max_registry_bytes (%d) lowered to %d: a registry sync must fit between "
                "limits.outbound_soft_bytes and limits.outbound_hard_bytes", wanted, room,
            )
        self._max_registry = room if wanted is None else min(wanted, room)

    @hookimpl
    def airi_shutdown(self) -> None:
        for handle in (self._timer, self._retry):
            if handle is not None:
                handle.cancel()
        self._timer = self._retry = None
        self._pending.clear()
        self._unannounced.clear()

    # -- syncs -----------------------------------------------------------------------------------
    def changed(self, hub: Hub, now_for: Peer | None = None) -> None:
        """The module list changed: schedule (or send) the broadcast registry sync. With
        ``now_for`` (a 2026-08 announcer, which waits for a sync listing its module) that peer
        gets the sync at once, and so does everyone else when the bandwidth budget allows
        (then exactly as the HEAD reference sends it), else with the next coalesced one."""
        debounce = self._settings.sync_debounce_ms / 1000
        loop = asyncio.get_running_loop()
        now = loop.time()
        if debounce <= 0 or (now_for is not None and self._next_allowed - now <= SYNC_BURST_S):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            size = self._sync_to(hub, list(hub.registry.authenticated()))
            if debounce > 0:  # the budget allows a short burst of small syncs, not a storm of big ones
                self._next_allowed = max(now, self._next_allowed) + size / self._settings.sync_bytes_per_second
            return
        if now_for is not None:
            self._sync_to(hub, [now_for])
        if self._timer is None:
            self._first_change = now
            self._changes = 0
        self._changes += 1
        at = now + debounce
        # a burst holds the sync back for at most sync_max_delay_ms, and only once its deltas
        # (each ~250 bytes of envelope plus an entry) outweigh the sync 10 to 1: a storm of N
        # announces then costs each peer its N deltas plus one full listing, not a listing
        # every sync_max_delay_ms
        entries = max(1, len(self._announcers))
        if self._changes * (self._total / entries + 250) >= 10 * self._total:
            at = min(at, self._first_change + self._settings.sync_max_delay_ms / 1000)
        due = self._due = max(at, self._next_allowed)
        timer = self._timer
        if timer is None or timer.when() > due:  # else it fires earlier and waits the rest
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._flush, hub)

    def _flush(self, hub: Hub) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now + 0.001 < self._due:  # changes since the timer was set moved the sync on
            self._timer = loop.call_at(self._due, self._flush, hub)
            return
        hold = self._first_change + self._settings.sync_max_delay_ms / 1000
        if now + 0.001 < hold and self._storm(now):  # more announces are on their way
            self._timer = loop.call_at(min(hold, now + self._settings.sync_debounce_ms / 1000), self._flush, hub)
            return
        self._timer = None
        size = self._sync_to(hub, list(hub.registry.authenticated()))
        self._next_allowed = asyncio.get_running_loop().time() + size / self._settings.sync_bytes_per_second

    def _sync_to(self, hub: Hub, peers: list[Peer]) -> int:
        """Send the current registry sync to those of ``peers`` that are not behind (encoded
        once); the others get it once they have drained. Returns the sync's size (0 when it
        went to nobody)."""
        soft = self._soft
        ready: list[Peer] = []
        pending = self._pending
        for peer in peers:
            if peer.closed:
                pending.pop(peer, None)
            elif soft and hub.backlog(peer) > soft:
                pending[peer] = None
            else:
                pending.pop(peer, None)
                ready.append(peer)
        size = hub.broadcast("registry:modules:sync", {"modules": hub.registry.listing()}, to=ready) if ready else 0
        if pending and self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._retry_pending, hub)
        return size

    def _retry_pending(self, hub: Hub) -> None:
        self._retry = None
        peers = list(self._pending)
        self._sync_to(hub, peers)

    # -- announce / leave --------------------------------------------------------------------------
    @hookimpl
    def airi_peer_authenticated(self, hub: Hub, peer: Peer, parent_id: str | None) -> None:
        sync(hub, peer, parent_id)
        if peer.origin is None and not peer.announced and not peer.modules:
            self._unannounced[peer] = asyncio.get_running_loop().time()

    def _storm(self, now: float) -> bool:
        """Whether many connections authenticated lately and have not announced yet."""
        waiting = self._unannounced
        horizon = now - self._settings.sync_max_delay_ms / 1000
        while waiting:  # oldest first: forget those past the horizon
            peer, since = next(iter(waiting.items()))
            if since >= horizon:
                break
            del waiting[peer]
        return len(waiting) >= STORM_AUTHENTICATIONS

    def _check(
        self, peer: Peer, ann: Announcement, key: bytes, now: float, replacing: Module | None = None
    ) -> tuple[str | None, int]:
        """The refusal of ``ann`` (None when it may go on; ``""``: dropped without an answer)
        and its entry's size."""
        cfg = self._settings
        st = self._announcers.get(peer)
        if st is None:
            st = self._announcers[peer] = _Announcer(float(cfg.announce_burst), now)
        refused = st.take(now, cfg.announce_burst, cfg.announce_rate_per_second)
        if refused is not None:
            return refused, 0
        etype = ann.event_type
        if len(ann.name) > cfg.max_name_chars:
            return errors.announce_name_too_long(cfg.max_name_chars, etype), 0
        identity_bytes = len(key)
        if identity_bytes > cfg.max_identity_bytes:
            return errors.announce_identity_too_large(cfg.max_identity_bytes, etype), 0
        if label_count(ann.identity) > cfg.max_labels:
            return errors.announce_too_many_labels(cfg.max_labels, etype), 0
        # {"name":..,"index":..,"identity":..} as the sync lists it (an extension identity
        # gains kind and plugin.id: at most the extension id's length again)
        size = identity_bytes + len(canonical(ann.name)) + 40
        if ann.family == "extension":
            if len(canonical(ann.data)) > cfg.max_announce_bytes:  # echoed to every peer
                return errors.announce_too_large(cfg.max_announce_bytes, etype), 0
            if replacing is None and len(peer.modules) >= cfg.max_modules_per_connection:
                return errors.too_many_modules(cfg.max_modules_per_connection), 0
            size += len(canonical(ann.identity["extension"].get("id"))) + 30
            before = st.sizes.get(instance_id_of(ann.identity), 0)
        else:
            before = st.legacy
        if self._total - before + size > self._max_registry:
            return errors.registry_full(self._max_registry), 0
        return None, size

    @hookimpl(trylast=True)
    def airi_announce(self, hub: Hub, peer: Peer, announcement: Announcement, event: Event) -> Accept | Reject:
        ann = announcement
        if peer.closed:
            return ACCEPT  # dropped while its announce was on the way: nothing to register
        key = canonical(ann.identity)
        extension = ann.family == "extension"
        replacing = peer.modules.get(instance_id_of(ann.identity)) if extension else None
        if peer.origin is not None:  # a mirror: its own instance checked the limits already
            self._announcers.setdefault(peer, _Announcer(0.0, 0.0))
            problem, size = None, len(key) + len(canonical(ann.name)) + 40
        else:
            problem, size = self._check(peer, ann, key, asyncio.get_running_loop().time(), replacing)
        if problem == "":
            return ACCEPT  # over the rate limit, and told so less than a second ago
        if problem is not None:
            hub.log.info("announce refused for %s: %s", peer.describe, problem, extra={"peer": peer.id})
            return Reject(problem)
        if extension:
            return self._announce_extension(hub, peer, ann, event, size)
        if peer.announced:
            if peer.name == ann.name and peer.index == ann.index and peer.identity_key == key:
                return ACCEPT  # identical re-announce: nothing changes
            previous = peer.module_entry()
            if not hub.registry.register_module(peer, ann.name, ann.index, ann.identity):
                return ACCEPT
            _de_announced(hub, peer, previous, "re-announcing")
        elif not hub.registry.register_module(peer, ann.name, ann.index, ann.identity):
            return ACCEPT
        self._unannounced.pop(peer, None)
        st = self._announcers[peer]
        self._total += size - st.legacy
        st.legacy = size
        hub.log.log(hub.lifecycle_level("announced"), "announced %s (%s)", peer.describe, peer.plugin_id, extra={"peer": peer.id})
        hub.broadcast("module:announced", peer.module_entry(), event.id, exclude=peer)
        self.changed(hub)
        return ACCEPT

    def _announce_extension(self, hub: Hub, peer: Peer, ann: Announcement, event: Event, size: int) -> Accept:
        """The 2026-08 sequence (PROTOCOL-HEAD.md 2.4): a changed name de-announces the old
        module (``reannounced``, to everyone), then everyone gets a sync listing the module
        (the sender at once: the HEAD SDK becomes ready on it), then the announce's data is
        echoed as ``extension:module:announced``, first to the sender, then to the others."""
        registry = hub.registry
        registry.set_extension(peer, ann.identity["extension"])
        done = registry.register_extension_module(peer, ann.name, ann.identity)
        if done is None:
            return ACCEPT
        module, old = done
        self._unannounced.pop(peer, None)
        st = self._announcers[peer]
        self._total += size - st.sizes.get(module.id, 0)
        st.sizes[module.id] = size
        if old is not None and old.name != module.name:
            hub.broadcast("extension:module:de-announced", {**old.notice, "possibleEvents": [], "reason": "reannounced"})
        selected = peer.identity
        if not peer.announced and (selected is None or instance_id_of(selected) == module.id):
            # the announce names who the connection is (its source carries the same id)
            current = peer.source
            source = current if current is not None and source_consistent(current, module.identity) else extension_source(module.identity)
            registry.adopt(peer, module.identity, source, verified=True)
        if old is None or old.name != module.name:
            hub.log.log(hub.lifecycle_level("announced"), "announced %s (extension %s)", module.name, peer.extension_id,
                        extra={"peer": peer.id})
        self.changed(hub, now_for=peer)
        hub.broadcast("extension:module:announced", ann.data, event.id)  # the sender included
        return ACCEPT

    @hookimpl
    def airi_peer_disconnected(self, hub: Hub, peer: Peer, reason: str) -> None:
        self._pending.pop(peer, None)
        self._unannounced.pop(peer, None)
        st = self._announcers.pop(peer, None)
        if st is not None:
            self._total -= st.legacy + sum(st.sizes.values())
        if not peer.announced and not peer.modules:
            return  # a connection with no modules causes no broadcast
        if peer.announced:
            _de_announced(hub, peer, peer.module_entry(), reason)
        for module in peer.modules.values():
            hub.broadcast("extension:module:de-announced", {**module.notice, "possibleEvents": [], "reason": reason}, exclude=peer)
        self.changed(hub)

    @hookimpl
    def airi_peer_health_changed(self, hub: Hub, peer: Peer, healthy: bool, reason: str) -> None:
        if not peer.authenticated:
            return
        if peer.announced:
            if healthy:
                hub.broadcast("registry:modules:health:healthy", peer.module_entry())
            else:
                hub.broadcast("registry:modules:health:unhealthy", {**peer.module_entry(), "reason": reason})
        for module in peer.modules.values():
            if healthy:
                hub.broadcast("registry:modules:health:healthy", module.notice)
            else:
                hub.broadcast("registry:modules:health:unhealthy", {**module.notice, "reason": reason})

