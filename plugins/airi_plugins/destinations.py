"""``destinations``: ``route.destinations`` when the key is present (an empty list means nobody),
else ``data.destinations`` when it is a non-empty list, else no restriction. An empty
``data.destinations`` follows the sender's generation: nobody for a 2026-08 connection
(``peer.generation == "head"``, as the HEAD reference), no restriction for an April one (as the
April reference). A destination list that is not a list never gets here: the kernel refuses it
as ``invalid event format``. See
:mod:`airi_core.protocol.matching` for every form a destination may take.

Bounded work per event (``[plugins.destinations]``, :class:`DestinationsSettings`): before a list
is compiled it is checked against ``max_destinations``, ``max_terms`` and ``max_string_length``,
and its cost per peer times the peers it would be tested against must stay within
``max_match_work``. An event over a limit is delivered to nobody and its sender gets an ``error``
saying which limit (``parentId`` set); see the README, "Routing work bounds".

Compiled lists are cached (senders repeat the same destinations), bounded by bytes: lists whose
key is longer than ``cache_max_key_chars`` are compiled for each event and never cached; the
others are kept in LRU order within ``cache_bytes`` (each entry counted as its key's length plus
:data:`ENTRY_OVERHEAD` bytes per term, plus one more per entry); and the entries a peer added
are dropped when it leaves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airi_core import Drop, Hub, Peer, RouteContext, hookimpl

from airi_core.protocol.matching import (
    Limits,
    Predicate,
    compile_destinations,
    destinations_hint,
    destinations_too_costly,
    measure,
)


class DestinationsSettings(BaseModel):
    """``[plugins.destinations]``."""

    model_config = ConfigDict(extra="forbid")
    #: Entries of one event's destination list.
    max_destinations: int = Field(64, ge=1)
    #: Terms of one list in all: each destination, nested and/or expression, leaf list entry.
    max_terms: int = Field(256, ge=1)
    #: Characters of any string in a destination list (glob, name, id, selector).
    max_string_length: int = Field(256, ge=1)
    #: Cost of one list per peer (about one unit per comparison) times the peers it is tested
    #: against: at most this much per event.
    max_match_work: int = Field(250_000, ge=1)
    #: Memory the cache of compiled lists may use (key characters + a per-term estimate).
    cache_bytes: int = Field(1024 * 1024, ge=0)
    #: Lists whose cache key (their ``repr``) is longer are compiled per event, never cached.
    cache_max_key_chars: int = Field(4096, ge=0)


#: Estimated bytes of compiled predicate per term (closures, tuples, frozensets), counted
#: against ``cache_bytes`` on top of the key's length.
ENTRY_OVERHEAD = 400

Compiled = tuple[Predicate | None, frozenset[str] | None]


def compile_route(dests: list[Any]) -> Compiled:
    """``(predicate, module names)`` for a destination list: the names (when the destinations
    imply them) let routing look peers up by name; the predicate is None when the names alone
    answer exactly (plain ``module:``/``source:`` strings)."""
    hint = destinations_hint(dests)
    if hint is not None and all(isinstance(d, str) and d.startswith("module:") for d in dests):
        return None, hint  # the registry's name index answers module:NAME exactly
    return compile_destinations(dests), hint


class _Entry:
    __slots__ = ("compiled", "cost", "key_cost", "size", "owner")

    def __init__(self, compiled: Compiled, cost: int, key_cost: int, size: int, owner: str) -> None:
        self.compiled = compiled
        self.cost = cost
        self.key_cost = key_cost
        self.size = size
        self.owner = owner


class Destinations:
    def __init__(self) -> None:
        self.settings = DestinationsSettings()
        self.limits = Limits()
        # senders repeat the same destinations: compile each distinct list once (LRU order)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._owned: dict[str, set[str]] = {}  # peer id -> keys of the entries it added
        #: What the cache holds now, in the units of ``cache_bytes``.
        self.cache_used_bytes = 0

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return DestinationsSettings

    @hookimpl
    def airi_reload(self, hub: Hub, changed: frozenset[str]) -> None:
        """New settings from the next event on (see airi_startup)."""
        if "plugins.destinations" in changed:
            self.airi_startup(hub)

    @hookimpl
    def airi_startup(self, hub: Hub) -> None:
        settings = hub.plugin_config(self)
        if isinstance(settings, DestinationsSettings):
            self.settings = settings
        s = self.settings
        self.limits = Limits(s.max_destinations, s.max_terms, s.max_string_length)

    @hookimpl
    def airi_peer_disconnected(self, peer: Peer) -> None:
        for key in self._owned.pop(peer.id, ()):
            entry = self._cache.get(key)
            if entry is not None and entry.owner == peer.id:
                self._drop(key, entry)

    # -- the cache ---------------------------------------------------------------------------------
    def cache_len(self) -> int:
        return len(self._cache)

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._cache[key]
        self.cache_used_bytes -= entry.size
        owned = self._owned.get(entry.owner)
        if owned is not None:
            owned.discard(key)
            if not owned:
                del self._owned[entry.owner]

    def compiled(self, dests: list[Any], sender: Peer) -> _Entry | str:
        """The compiled form of ``dests`` (from the cache when it can), or the error message
        for a list over a limit."""
        settings = self.settings
        # the key is built only from what passed the limits below (or was cached: equal repr)
        if len(dests) <= self.limits.max_destinations:
            key = repr(dests)
            if len(key) <= settings.cache_max_key_chars:
                entry = self._cache.get(key)
                if entry is not None:
                    self._cache.move_to_end(key)
                    return entry
            else:
                key = ""
        else:
            key = ""
        found = measure(dests, self.limits)
        if found.error is not None:
            return found.error
        entry = _Entry(compile_route(dests), found.cost, found.key_cost, len(key) + ENTRY_OVERHEAD * (found.terms + 1), sender.id)
        if key and entry.size <= settings.cache_bytes:
            cache = self._cache
            while cache and self.cache_used_bytes + entry.size > settings.cache_bytes:
                old_key, old = next(iter(cache.items()))
                self._drop(old_key, old)
            cache[key] = entry
            self.cache_used_bytes += entry.size
            self._owned.setdefault(sender.id, set()).add(key)
        return entry

    # -- routing -----------------------------------------------------------------------------------
    @hookimpl(tryfirst=True)  # before plugins that decide (a redirect) so its filter holds for them
    def airi_route(self, hub: Hub, ctx: RouteContext) -> Drop | None:
        event = ctx.event
        route = event.route
        if route is not None and "destinations" in route:
            dests = route["destinations"]
            if not dests:
                ctx.narrow(())  # nobody (a filter, so that the devtools bypass still works)
                return None
        else:
            dests = event.data.get("destinations")
            if not isinstance(dests, list):
                return None
            if not dests:
                if ctx.sender.generation == "head":
                    ctx.narrow(())  # the 2026-08 rule: an explicit empty list is nobody
                return None
        if len(dests) == 1:
            only = dests[0]
            if type(only) is str and only.startswith("module:") and 7 < len(only) <= self.limits.max_string_length:
                # the most common route, one module by name: its holders are looked up, nothing
                # compiled or cached (what the compiled form would do: module_hint, exact)
                ctx.narrow(hub.registry.peers_named(only[7:]))
                return None
        entry = self.compiled(dests, ctx.sender)
        if isinstance(entry, str):
            return Drop(entry, entry)
        predicate, hint = entry.compiled
        if hint is not None:
            # e.g. module:NAME: look the few possible peers up instead of testing all of them
            registry = hub.registry
            ctx.narrow(p for name in hint for p in registry.peers_named(name))
        if predicate is not None:
            peers = len(ctx.pool) if ctx.pool is not None else len(hub.registry)
            limit = self.settings.max_match_work
            work = entry.cost * peers
            if entry.key_cost:  # bare globs also test every extension module's name and id
                work += entry.key_cost * 2 * hub.registry.extension_module_count()
            if work > limit:
                message = destinations_too_costly(peers, limit)
                return Drop(message, message)
            ctx.add_filter(predicate)
        return None
